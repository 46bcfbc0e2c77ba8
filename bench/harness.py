"""The benches' shared driver: the temp gateway config, spawning and stopping the upstream mock, the floor proxy and
`agentgw serve`, readiness polling, the CPU of each server (or its whole process tree) during a load, and the
load-generator runs (wrk with bench/wrk_post.lua, or bench/loadgen.py). Loopback only. What /proc tells is
bench/procs.py's, the result tables bench/report.py's.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from procs import MIB as MIB  # re-exported: benches take it from here
from procs import children_cpu, cpu_seconds, machine_busy, tree, tree_cpu

HERE = Path(__file__).resolve().parent
PY = sys.executable
API_KEY = "agw-bench-key-0123456789abcdef"
UPSTREAM_KEY = "sk-bench-upstream-0123456789"
CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
TARGETS = (
    "direct",
    "floor",
    "gateway",
)  # client → upstream; → minimal proxy → upstream; → agentgw → upstream
# A small, realistic policy: the bench key's role may call every model (the authz stage runs on each request).
POLICY = """\
p, role:admins, *, *, allow
p, role:agents, llm:*, call, allow
p, role:agents, mcp:*, *, allow
p, role:agents, tag:dangerous, call, deny
p, role:interns, llm:small-*, call, allow
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile(want: int = 65536) -> int:
    """Raise the soft open-file limit (children inherit it: the gateway needs 2 sockets per stream)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return None


def wait_until(check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout} s")
        time.sleep(0.005)


def spawn(
    cmd: list[str],
    log_to: Any,
    ready: Callable[[], bool],
    what: str,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server process (stderr to `log_to`) and wait until `ready()`; the process and its seconds to ready."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_to, env=env, cwd=cwd)
    try:
        wait_until(ready, timeout, proc, what)
    except BaseException:
        stop(proc)
        raise
    return proc, time.perf_counter() - t0


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def write_gateway_config(tmp: Path, port: int, registry: dict[str, dict[str, Any]], **extra: Any) -> Path:
    """agentgw.yaml in `tmp` (returned), the `registry` files (file name → content) under registry/, and policies/:
    one API key for the load (API_KEY, role `agents`), the project's Casbin model with POLICY, the audit store in
    `tmp`/audit.db (SQLite). `extra` adds top-level config sections (an `audit` there replaces the default)."""
    reg = tmp / "registry"
    reg.mkdir(exist_ok=True)
    key = {
        "subject": "bench",
        "roles": ["agents"],
        "sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
    }
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "registry": ["registry/*.yaml"],
        "auth": {"api_keys": [key]},
        "server": {"graceful_shutdown_s": 3},
        "audit": {"sqlite": {"path": "audit.db"}},
        **extra,
        "logging": {"level": "warning"},
    }
    model_conf = HERE.parent / "policies" / "model.conf"  # the project's own Casbin model
    if model_conf.exists():
        pol = tmp / "policies"
        pol.mkdir(exist_ok=True)
        shutil.copy(model_conf, pol / "model.conf")
        (pol / "policy.csv").write_text(POLICY)
        cfg["policies"] = {"model": "policies/model.conf", "policy": "policies/policy.csv"}
    for name, content in registry.items():
        (reg / name).write_text(yaml.safe_dump(content, sort_keys=False))
    config = tmp / "agentgw.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


PG_DSN = os.environ.get("AGENTGW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def audit_section(store: str, prefix: str = "agwbench") -> dict[str, Any]:
    """The gateway's `audit:` section for a bench: off, SQLite in the temp dir, or PostgreSQL (own tables)."""
    if store == "off":
        return {"enabled": False}
    if store == "postgres":
        return {"store": "postgres", "postgres": {"dsn": PG_DSN, "table_prefix": prefix}}
    return {"sqlite": {"path": "audit.db"}}


def audit_count(db: Path) -> int:
    """Records in a bench's SQLite audit store (0 when there is none)."""
    import sqlite3

    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM records").fetchone()[0])
    finally:
        con.close()


def agentgw_cmd() -> list[str]:
    """How to run this checkout's `agentgw` (the venv's script, else the module)."""
    exe = Path(PY).parent / "agentgw"
    return [str(exe)] if exe.exists() else [PY, "-m", "agentgw"]


@dataclass
class Env:
    """The temp dir and the three server processes (upstream mock, floor proxy, gateway)."""

    tmp: Path
    ports: dict[str, int] = field(default_factory=lambda: {t: free_port() for t in TARGETS})
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[Any] = field(default_factory=list)
    budgets: str = "off"  # off | memory | redis: a task budget rule on every gateway call
    audit: dict[str, Any] | None = None  # the gateway's `audit:` section (None: the default, SQLite in tmp)
    tool_policy: str = "off"  # the gateway's llm.tool_policy
    guardrails: dict[str, Any] | None = None  # the gateway's `guardrails:` section

    @property
    def config(self) -> Path:
        return self.tmp / "agentgw.yaml"

    def pid(self, target: str) -> int:
        return self.procs["upstream" if target == "direct" else target].pid

    def url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.ports[target]}/v1/chat/completions"

    def _log(self, name: str) -> Any:
        fh = open(self.tmp / name, "ab")  # noqa: SIM115 - closed in close()
        self.logs.append(fh)
        return fh

    def write_config(self) -> None:
        """agentgw.yaml + registry/llm.yaml (+ policies/) in the temp dir: one openai-kind provider pointing at
        the upstream mock with an API key, one API key for the load, audit log to a file."""
        provider = {
            "name": "upstream",
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{self.ports['direct']}/v1",
            "api_key": UPSTREAM_KEY,
        }
        llm = {
            "llm": {
                "providers": [provider],
                "models": [{"name": "bench", "targets": [{"provider": "upstream", "model": "bench"}]}],
            }
        }
        extra: dict[str, Any] = {"upstream": {"pool_size": 8192}}
        if self.budgets != "off":  # a task budget on every call (huge, never reached): the stage's cost only
            rule = {"match": {"roles": ["agents"]}, "task": {"tokens": 10**12}}
            extra["budgets"] = {"ledger": self.budgets, "rules": [rule], "key_prefix": "agwbench"}
        if self.audit is not None:
            extra["audit"] = self.audit
        if self.tool_policy != "off":
            extra["llm"] = {"tool_policy": self.tool_policy, "tools": {"search_web": "mcp:web/search"}}
        if self.guardrails is not None:
            extra["guardrails"] = self.guardrails
        write_gateway_config(self.tmp, self.ports["gateway"], {"llm.yaml": llm}, **extra)

    def start_upstream(self, prefix: tuple[str, ...] = ()) -> None:
        """The chat completions mock (`prefix`: e.g. taskset)."""
        port = self.ports["direct"]
        cmd = [*prefix, PY, str(HERE / "upstream.py"), "--port", str(port)]
        ready = lambda: http_status(port, "/") == 404  # noqa: E731
        self.procs["upstream"], _ = spawn(cmd, self._log("upstream.log"), ready, "upstream", 20)

    def start_floor(self) -> float:
        """Spawn the floor proxy; seconds from spawn to its first answer."""
        port = self.ports["floor"]
        cmd = [PY, str(HERE / "proxy.py"), "--port", str(port)]
        cmd += ["--upstream", f"http://127.0.0.1:{self.ports['direct']}"]
        ready = lambda: http_status(port, "/") is not None  # noqa: E731
        self.procs["floor"], seconds = spawn(cmd, self._log("floor.log"), ready, "floor proxy", 20)
        return seconds

    def start_gateway(self, workers: int = 1) -> float:
        """Spawn `agentgw serve` (one worker unless told); seconds from spawn to the first 200 from GET /readyz."""
        port = self.ports["gateway"]
        cmd = [
            *agentgw_cmd(),
            "serve",
            "--config",
            str(self.config),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
        ready = lambda: http_status(port, "/readyz", 0.5) == 200  # noqa: E731
        self.procs["gateway"], seconds = spawn(cmd, self._log("gateway.log"), ready, "gateway")
        return seconds

    def stop_gateway(self) -> None:
        proc = self.procs.pop("gateway", None)
        if proc is not None:
            stop(proc)

    def close(self) -> None:
        for name in ("gateway", "floor", "upstream"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop(proc)
        for fh in self.logs:
            fh.close()


class CpuWatch:
    """CPU seconds used by each server process, the load generator, and everything else on the machine. A process
    named in `trees` counts with all its descendants (`<name>_cpu_s`; its own process alone in
    `<name>_process_cpu_s`): a gateway's audit writer and workers are its children."""

    def __init__(self, env: Env, trees: tuple[str, ...] = ()) -> None:
        self.pids = {name: [p.pid] for name, p in env.procs.items()}
        for name in trees:
            self.pids[name] = tree(env.procs[name].pid)
        self.trees = trees
        self.t0 = time.perf_counter()
        self.cpu0 = {name: tree_cpu(pids) for name, pids in self.pids.items()}
        self.main0 = {name: cpu_seconds(self.pids[name][0]) for name in trees}
        self.ch0 = children_cpu()
        self.busy0, self.total0 = machine_busy()

    def done(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        out = {f"{name}_cpu_s": tree_cpu(pids) - self.cpu0[name] for name, pids in self.pids.items()}
        out["loadgen_cpu_s"] = children_cpu() - self.ch0
        ours = sum(out.values()) / max(wall, 1e-9)
        for name in self.trees:
            out[f"{name}_process_cpu_s"] = cpu_seconds(self.pids[name][0]) - self.main0[name]
        busy, total = machine_busy()
        busy_cores = (busy - self.busy0) / max(1.0, total - self.total0) * (os.cpu_count() or 1)
        out["wall_s"] = wall
        out["background_cores"] = max(0.0, busy_cores - ours)
        return out


def gateway_source() -> dict[str, Any]:
    """Which agentgw the gateway process will import (PYTHONPATH can point it at another tree), and, inside a git
    checkout, its commit and whether agentgw/ has uncommitted changes."""
    import importlib.util

    spec = importlib.util.find_spec("agentgw")
    pkg = Path(spec.origin).parent if spec and spec.origin else None
    out: dict[str, Any] = {"path": str(pkg) if pkg else None}
    if pkg is not None:
        git = ["git", "-C", str(pkg.parent)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
        if head.returncode == 0:
            dirty = subprocess.run(
                [*git, "status", "--porcelain", "--", str(pkg)], capture_output=True, text=True, check=False
            )
            out.update(commit=head.stdout.strip(), uncommitted_changes=bool(dirty.stdout.strip()))
    return out


# -- load generators -------------------------------------------------------------------------------------------


def _json_out(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, check=False)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(b"{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"{cmd[0]} failed ({res.returncode}): {res.stderr.decode()[-2000:]}")
    out: dict[str, Any] = orjson.loads(lines[-1])
    return out


def run_wrk(url: str, body: bytes, n: int, c: int, seconds: float) -> dict[str, Any]:
    """wrk, one thread: stops at `n` responses or after `seconds` (whole seconds)."""
    env = {**os.environ, "BENCH_BODY": body.decode(), "BENCH_AUTH": f"Bearer {API_KEY}"}
    env["BENCH_MAX_PER_THREAD"] = str(n)
    secs = max(1, round(seconds))
    cmd = ["wrk", "-t1", f"-c{c}", f"-d{secs}s", "--timeout", "10s", "-s", str(HERE / "wrk_post.lua"), url]
    r = _json_out(cmd, secs + 30, env)
    errors = {k: v for k, v in r["errors"].items() if v}
    ok = r["requests"] - errors.get("status", 0)
    elapsed = r["elapsed_us"] / 1e6
    return {
        "requests": ok,
        "errors": errors,
        "elapsed_s": elapsed,
        "rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "mean_ms": r["mean_us"] / 1000,
    }


def run_loadgen(
    mode: str,
    url: str,
    body: bytes,
    args: list[str],
    timeout: float,
    headers: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> dict[str, Any]:
    """bench/loadgen.py in its own process (`prefix`: e.g. taskset); `headers` default to the bench's API key."""
    cmd = [*prefix, PY, str(HERE / "loadgen.py"), mode, "--url", url, "--body", body.decode()]
    for k, v in (headers if headers is not None else {"Authorization": f"Bearer {API_KEY}"}).items():
        cmd += ["--header", f"{k}: {v}"]
    return _json_out([*cmd, *args], timeout)


def requests_run(tool: str, url: str, n: int, c: int, seconds: float) -> dict[str, Any]:
    """Non-streaming chat completions at concurrency `c`, bounded by `n` requests and `seconds`."""
    body = orjson.dumps(CHAT)
    if tool == "wrk":
        return run_wrk(url, body, n, c, seconds)
    args = ["-n", str(n), "-c", str(c), "--duration", str(seconds)]
    return run_loadgen("requests", url, body, args, seconds + 30)
