#!/usr/bin/env bash
# A2A conformance for agentgw: runs the official A2A TCK (a snapshot in ../shared/a2a-tck, see its SNAPSHOT.md) on
# the JSON-RPC and HTTP+JSON transports against its SUT agent alone and through agentgw (agent `tck`), compares the
# two runs test by test, prints both scores, and exits 1 if a test that passes against the SUT alone does not pass
# through agentgw (2 on a setup error: no snapshot, a venv that does not install, a process that does not start).
#
# Usage: conformance/a2a.sh
# Environment (all optional):
#   A2A_TCK_DIR      the TCK snapshot (read only; copied)   (default ../shared/a2a-tck from the checkout or above)
#   A2A_TCK_VENV     the TCK's virtualenv, kept between runs (default .venv-tck; rebuilt when
#                    conformance/a2a-requirements.txt changes)
#   A2A_TCK_OUT      results: JUnit reports, logs, summary   (default conformance/results-a2a, wiped first)
#   A2A_TCK_TIMEOUT  seconds for one TCK run                 (default 300; a run takes a few seconds)
#   A2A_TCK_SUT      snapshot: the snapshot's SUT as it is (default); fixed: with
#                    conformance/a2a-sut-task-first.patch applied to the copy (about 70 more tests run on both
#                    sides; each TCK run then takes about a minute)
#   PYTHON           interpreter with agentgw's dependencies (default .venv/bin/python, else python3); agentgw's
#                    code is always this checkout's (PYTHONPATH)
#   TCK_PYTHON       interpreter to build the TCK venv with  (default python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/conformance"
OUT=${A2A_TCK_OUT:-$HERE/results-a2a}
VENV=${A2A_TCK_VENV:-$ROOT/.venv-tck}
REQS="$HERE/a2a-requirements.txt"
TCK_TIMEOUT=${A2A_TCK_TIMEOUT:-300}
START_TIMEOUT=60
TRANSPORTS=jsonrpc,http_json  # the bindings agentgw serves (it serves no gRPC; its card does not offer it)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

log() { printf '[a2a-tck] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }
die_log() {  # die_log FILE MESSAGE: the error, with the file's last lines (CI keeps only the console)
  log "last lines of $1:"
  tail -n 30 "$1" 2>/dev/null | sed 's/^/    /' >&2 || true
  die "$2"
}

# The snapshot: ../shared beside the checkout (CI: a fresh clone with shared/ beside it), or two levels up (a
# worktree under wt/).
if [ -z "${A2A_TCK_DIR:-}" ]; then
  for d in "$ROOT/../shared/a2a-tck" "$ROOT/../../shared/a2a-tck"; do
    if [ -f "$d/run_tck.py" ]; then A2A_TCK_DIR=$(cd "$d" && pwd); break; fi
  done
fi
[ -n "${A2A_TCK_DIR:-}" ] && [ -f "$A2A_TCK_DIR/run_tck.py" ] ||
  die "no A2A TCK snapshot (looked in ../shared/a2a-tck; set A2A_TCK_DIR)"

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/agentgw-a2a-tck.XXXXXX")
stop() {  # stop PID: TERM, then KILL after 5 s
  kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop "$pid"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the TCK's venv (cached; rebuilt when the requirements change) -------------------------------------------------
# The stamp is written last: an interrupted build has none and is rebuilt from scratch on the next run.
WANT=$(sha256sum "$REQS" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements" 2>/dev/null || true)" != "$WANT" ]; then
  log "building the TCK venv in $VENV"
  rm -rf "$VENV"
  "${TCK_PYTHON:-python3}" -m venv "$VENV" || die "python3 -m venv failed"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS" >"$WORK/pip.log" 2>&1 ||
    die_log "$WORK/pip.log" "pip install -r $REQS failed"
  echo "$WANT" >"$VENV/.requirements"
fi
TPY="$VENV/bin/python"

# --- helpers ------------------------------------------------------------------------------------------------------
free_port() {
  "$TPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {  # wait_port PORT PID NAME
  local deadline=$((SECONDS + START_TIMEOUT))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    kill -0 "$2" 2>/dev/null || die_log "$OUT/$3.log" "$3 exited during startup (see $OUT/$3.log)"
    [ $SECONDS -lt $deadline ] || die_log "$OUT/$3.log" "$3 did not listen on 127.0.0.1:$1 within ${START_TIMEOUT}s"
    sleep 0.2
  done
}

start_sut() {  # start_sut NAME -> SUT_PORT, SUT_PID: a fresh SUT (its task store is in memory) on free ports
  SUT_PORT=$(free_port)
  local grpc_port
  grpc_port=$(free_port)
  (cd "$TCK" && SUT_HOST="127.0.0.1:$SUT_PORT" GRPC_PORT="$grpc_port" exec "$TPY" sut/a2a-python/sut_agent.py) \
    >"$OUT/$1.log" 2>&1 &
  SUT_PID=$!
  PIDS+=("$SUT_PID")
  wait_port "$SUT_PORT" "$SUT_PID" "$1"
}

run_tck() {  # run_tck LABEL URL: the TCK against URL, JUnit report in $OUT/LABEL.xml, output in $OUT/LABEL.out
  local label=$1 url=$2 rc=0
  log "TCK ($TRANSPORTS) against $label ($url)"
  (cd "$TCK" && timeout "$TCK_TIMEOUT" "$TPY" run_tck.py --sut-host "$url" --transport "$TRANSPORTS" \
    -- -p no:cacheprovider --junitxml="$OUT/$label.xml" >"$OUT/$label.out" 2>&1) || rc=$?
  # 0: all passed; 1: some test failed (scored by the comparison); anything else: the run broke.
  if [ $rc -gt 1 ]; then
    [ $rc -eq 124 ] && log "the TCK run hit its ${TCK_TIMEOUT}s timeout"
    die_log "$OUT/$label.out" "the TCK did not complete against $label (exit $rc; see $OUT/$label.out)"
  fi
  [ -s "$OUT/$label.xml" ] || die_log "$OUT/$label.out" "the TCK wrote no JUnit report against $label"
  log "  $label: $("$TPY" "$HERE/a2a_tck.py" score "$OUT/$label.xml")"
}

rm -rf "$OUT"
mkdir -p "$OUT"
STARTED=$SECONDS
# The TCK writes reports/ and caches into its folder: run a copy (../shared is read-only in CI).
TCK="$WORK/tck"
cp -R "$A2A_TCK_DIR" "$TCK"
chmod -R u+w "$TCK"
case "${A2A_TCK_SUT:-snapshot}" in
  snapshot) ;;
  fixed)
    # Outside any repository (the ceiling stops git from finding one above a $TMPDIR inside a checkout), so the
    # patch's paths are read from the copy's root.
    (cd "$TCK" && export GIT_CEILING_DIRECTORIES="$WORK" && git apply --check "$HERE/a2a-sut-task-first.patch" &&
      git apply "$HERE/a2a-sut-task-first.patch") ||
      die "conformance/a2a-sut-task-first.patch does not apply to the snapshot's SUT"
    log "SUT patched: conformance/a2a-sut-task-first.patch" ;;
  *) die "A2A_TCK_SUT must be snapshot or fixed, not '${A2A_TCK_SUT}'" ;;
esac
log "TCK snapshot $A2A_TCK_DIR, a2a-sdk $("$TPY" -c 'import importlib.metadata as m; print(m.version("a2a-sdk"))')"

# --- the SUT alone ------------------------------------------------------------------------------------------------
start_sut sut-alone
run_tck sut-alone "http://127.0.0.1:$SUT_PORT"
stop "$SUT_PID"

# --- the SUT through agentgw --------------------------------------------------------------------------------------
start_sut sut-behind-gateway
GW_PORT=$(free_port)
KEY="agw-a2a-tck-$("$TPY" -c 'import secrets; print(secrets.token_hex(16))')"
KEY_SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
mkdir -p "$WORK/gw/registry"
cat >"$WORK/gw/agentgw.yaml" <<EOF
# Generated by conformance/a2a.sh
listen: {host: 127.0.0.1, port: $GW_PORT}
registry: ["registry/*.yaml"]
policies:
  model: "$ROOT/policies/model.conf"
  policy: "$ROOT/policies/policy.csv"
auth:
  api_keys:
    - {subject: a2a-tck, roles: [agents], sha256: "$KEY_SHA"}
  keys_file: keys.yaml
audit:
  sqlite: {path: "$OUT/gateway-audit.db"}
  jsonl: "$OUT/gateway-audit.jsonl"
logging: {level: info}
server: {graceful_shutdown_s: 2}
supervisor: {stop_timeout_s: 2}
EOF
cat >"$WORK/gw/registry/a2a.yaml" <<EOF
a2a:
  agents:
    - {name: tck, url: "http://127.0.0.1:$SUT_PORT", timeout_s: 60}
EOF
cp "$WORK/gw/agentgw.yaml" "$WORK/gw/registry/a2a.yaml" "$OUT/"
"$PYTHON" -m agentgw check-config --config "$WORK/gw/agentgw.yaml" >&2 || die "agentgw check-config failed"
"$PYTHON" -m agentgw serve --config "$WORK/gw/agentgw.yaml" >"$OUT/gateway.log" 2>&1 &
PIDS+=($!)
wait_port "$GW_PORT" "${PIDS[-1]}" gateway
"$TPY" "$HERE/a2a_tck.py" ready "http://127.0.0.1:$GW_PORT" tck "$KEY" --timeout "$START_TIMEOUT" ||
  die_log "$OUT/gateway.log" "agentgw did not serve the SUT's card (see $OUT/gateway.log)"
# The TCK's requests carry the key (a snapshot addition, tck/auth_header.py); the gateway's authentication is
# unchanged: the same card without the key was refused above.
export TCK_AUTH_HEADER="Authorization: Bearer $KEY"
run_tck gateway "http://127.0.0.1:$GW_PORT/a2a/tck"
unset TCK_AUTH_HEADER

# --- compare ------------------------------------------------------------------------------------------------------
rc=0
"$TPY" "$HERE/a2a_tck.py" compare "$OUT/sut-alone.xml" "$OUT/gateway.xml" --summary "$OUT/summary.md" || rc=$?
log "done in $((SECONDS - STARTED))s; results, logs and summary.md in $OUT"
[ $rc -le 1 ] || die "the comparison failed (exit $rc)"
exit $rc
