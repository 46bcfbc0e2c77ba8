"""`make cluster`: N gateway replicas (default 3) as separate `agentgw serve` processes behind HAProxy (Debian's
package), on the machine's Redis and PostgreSQL, with the quickstart's upstreams started once for all of them.
`make cluster-test` brings it up, runs tests/cluster against the load balancer, and takes it down.

    python scripts/cluster.py up [--replicas 3] [--port 8100]    # until Ctrl-C
    python scripts/cluster.py test [-- pytest args]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
AGENTGW = str(Path(PY).parent / "agentgw")
REDIS_URL = os.environ.get("AGENTGW_CLUSTER_REDIS", "redis://127.0.0.1:6379/14")
PG_DSN = os.environ.get("AGENTGW_CLUSTER_PG", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "cluster-" + "s" * 40  # the key that seals MCP session ids: the same on every replica


def registry(port: int, docs_port: int, planner_port: int, researcher_port: int) -> dict[str, Any]:
    """The quickstart's registry with its HTTP upstreams as URLs only (this script starts them once; a replica
    that launched its own would fight the others for the port). The stdio time server stays per replica."""
    out: dict[str, Any] = {}
    for name in ("llm", "mcp", "agents"):
        doc = yaml.safe_load((ROOT / "registry" / f"{name}.yaml").read_text())
        for key, value in doc.items():
            out.setdefault(key, {}).update(value)
    for server in out["mcp"]["servers"]:
        if server["name"] == "time":
            server["command"] = [PY, str(ROOT / "examples" / "servers" / "time_server.py")]
        if server["name"] == "docs":
            server.pop("command", None)
            server.pop("env", None)
            server["url"] = f"http://127.0.0.1:{docs_port}/mcp"
            server["headers"] = {"Authorization": "Bearer quickstart-docs-token"}
    ports = {"planner": planner_port, "researcher": researcher_port}
    for agent in out["a2a"]["agents"]:
        agent.pop("command", None)
        agent.pop("env", None)
        agent["url"] = f"http://127.0.0.1:{ports[agent['name']]}/"
    return out


def config(work: Path, prefix: str, redis_url: str = REDIS_URL, pg_dsn: str = PG_DSN) -> Path:
    """The quickstart's config, made for replicas: shared budgets (Redis), one audit chain (PostgreSQL, a schema of
    this cluster), a shared session secret; everything else as the quickstart has it."""
    cfg = yaml.safe_load((ROOT / "examples" / "quickstart" / "agentgw.yaml").read_text())
    cfg["registry"] = [str(work / "registry.yaml")]
    cfg["policies"] = {
        "model": str(ROOT / "policies" / "model.conf"),
        "policy": str(ROOT / "policies" / "policy.csv"),
    }
    cfg["auth"]["keys_file"] = str(work / "keys.yaml")
    cfg["secret"] = SECRET
    cfg["budgets"].update({"ledger": "redis", "redis_url": redis_url, "key_prefix": prefix})
    cfg["audit"] = {"store": "postgres", "postgres": {"dsn": pg_dsn, "schema_name": prefix.replace("-", "_")}}
    path = work / "agentgw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def haproxy_cfg(work: Path, port: int, replicas: list[int]) -> Path:
    servers = "\n".join(
        f"  server r{i} 127.0.0.1:{p} check inter 1s fall 2 rise 1" for i, p in enumerate(replicas, 1)
    )
    text = f"""global
  maxconn 4096
  stats socket {work}/haproxy.sock mode 600 level admin
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 10s
  # a request whose replica refuses the connection (stopping, killed) goes to another one
  retries 3
  option redispatch 1
frontend agentgw
  bind 127.0.0.1:{port}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk
  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1
  http-check expect status 200
  http-response set-header X-Agentgw-Replica %s
{servers}
"""
    path = work / "haproxy.cfg"
    path.write_text(text)
    return path


def wait_ready(url: str, seconds: float = 180.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until `url` answers 200 (a busy 2-core machine: 30 s starts were seen), or `proc` has exited."""
    deadline = time.monotonic() + seconds
    while True:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"cluster: the process behind {url} exited ({proc.returncode}); see its log")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"cluster: {url} did not become ready in {seconds:.0f} s")
        time.sleep(0.2)


class Replicas:
    """The running replicas, for drills and the soak: each one's process, and a way to kill or (re)start one
    (replica i listens on base port + i; HAProxy's health check takes it out and back in)."""

    def __init__(self, start: Callable[..., subprocess.Popen[bytes]], cfg: Path, ports: list[int]) -> None:
        self._start, self.cfg, self.ports = start, cfg, ports
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, i: int) -> subprocess.Popen[bytes]:
        p = self._start(
            f"replica{i}", [AGENTGW, "serve", "--config", str(self.cfg), "--port", str(self.ports[i - 1])]
        )
        self.procs[i] = p
        return p

    def stop(self, i: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        p = self.procs[i]
        if p.poll() is None:
            p.send_signal(sig)
        p.wait(timeout=timeout)

    admin: Path | None = None  # HAProxy's admin socket, once it runs

    def lb(self, command: str) -> str:
        """One command on HAProxy's runtime API (e.g. `set server replicas/r1 state drain`); its answer."""
        assert self.admin is not None, "HAProxy is not up yet"
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.admin))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def drain(self, i: int, seconds: float = 30.0) -> None:
        """Take replica i out of HAProxy's rotation and wait (bounded) until it has no request in flight: then
        it can stop without a kept-alive connection racing a new request (what a Kubernetes preStop pause does)."""
        self.lb(f"set server replicas/r{i} state drain")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            stat = self.lb("show stat")  # CSV: pxname,svname,qcur,qmax,scur,...
            row = next(line.split(",") for line in stat.splitlines() if line.startswith(f"replicas,r{i},"))
            if row[2] == "0" and row[4] == "0":
                return
            time.sleep(0.05)

    def undrain(self, i: int) -> None:
        self.lb(f"set server replicas/r{i} state ready")

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i - 1]}"


@contextlib.contextmanager
def cluster(
    replicas: int,
    port: int,
    *,
    redis_url: str = REDIS_URL,
    pg_dsn: str = PG_DSN,
    tweak: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    extra: dict[str, list[str]] | None = None,
) -> Iterator[dict[str, Any]]:
    """`tweak(config, registry)` may change both before the replicas start; `extra` names more upstream
    processes (name: command) started before them."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        raise SystemExit("cluster: HAProxy is not installed (make cluster installs Debian's haproxy)")
    work = Path(tempfile.mkdtemp(prefix="agentgw-cluster-"))
    prefix = f"agw-cluster-{uuid.uuid4().hex[:8]}"
    docs, planner, researcher = port + 91, port + 92, port + 93
    reg = registry(port, docs, planner, researcher)
    cfg = config(work, prefix, redis_url, pg_dsn)
    if tweak is not None:
        doc = yaml.safe_load(cfg.read_text())
        tweak(doc, reg)
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    (work / "registry.yaml").write_text(yaml.safe_dump(reg))
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(work / f"{name}.log", "ab")  # noqa: SIM115 (open for the process's lifetime)
        logs.append(log)
        p = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )
        procs.append(p)
        return p

    try:
        lb = f"http://127.0.0.1:{port}"
        start("docs", [PY, str(ROOT / "examples/servers/docs_server.py")],
              {"DOCS_PORT": str(docs), "DOCS_TOKEN": "quickstart-docs-token"})  # fmt: skip
        for name, p in (("planner", planner), ("researcher", researcher)):
            start(name, [PY, str(ROOT / f"examples/agents/{name}.py"), "--port", str(p)],
                  {"AGENTGW_URL": lb, "AGENTGW_KEY": f"agw-demo-{name}-key"})  # fmt: skip
        for name, cmd in (extra or {}).items():
            start(name, cmd)
        ports = [port + i for i in range(1, replicas + 1)]
        group = Replicas(start, cfg, ports)
        for i in range(1, replicas + 1):
            group.start(i)
        for i in range(1, replicas + 1):
            wait_ready(f"{group.url(i)}/readyz", proc=group.procs[i])
        start("haproxy", [haproxy, "-f", str(haproxy_cfg(work, port, ports)), "-db"])
        wait_ready(f"{lb}/healthz")
        group.admin = work / "haproxy.sock"
        info = {"url": lb, "replicas": [f"http://127.0.0.1:{p}" for p in ports], "config": str(cfg),
                "work": str(work), "redis": redis_url, "pg": pg_dsn, "prefix": prefix,
                "haproxy": procs[-1], "group": group}  # fmt: skip
        print(f"cluster: {replicas} replicas behind HAProxy at {lb} (logs in {work})", flush=True)
        yield info
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
        _drop(prefix, redis_url, pg_dsn)


def _drop(prefix: str, redis_url: str, pg_dsn: str) -> None:
    """The cluster's Redis keys and PostgreSQL schema."""
    with contextlib.suppress(Exception):
        import redis

        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)
    with contextlib.suppress(Exception):
        subprocess.run(
            ["psql", pg_dsn, "-q", "-c", f'DROP SCHEMA IF EXISTS "{prefix.replace("-", "_")}" CASCADE'],
            check=False, capture_output=True, timeout=30,
        )  # fmt: skip


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "test"])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    with cluster(args.replicas, args.port) as info:
        if args.command == "up":
            signal.signal(signal.SIGTERM, _interrupt)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
            return
        env = {**os.environ, "AGENTGW_CLUSTER_URL": info["url"], "AGENTGW_CLUSTER_CONFIG": info["config"],
               "AGENTGW_CLUSTER_REPLICAS": ",".join(info["replicas"])}  # fmt: skip
        rc = subprocess.call([PY, "-m", "pytest", "tests/cluster", *args.pytest_args], env=env, cwd=ROOT)
    raise SystemExit(rc)


if __name__ == "__main__":
    main()
