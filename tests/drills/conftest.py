"""The drills' own cluster pieces: free loopback ports, a private redis-server and a private PostgreSQL (initdb into
a temp dir, trust auth) that a drill may stop and start — the machine's shared Redis and PostgreSQL are never
touched — and a small cluster (scripts/cluster.py) on whichever stores a drill names."""

from __future__ import annotations

import contextlib
import glob
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from cluster import cluster, wait_ready  # noqa: E402

UPSTREAMS = Path(__file__).with_name("slow_upstreams.py")


def free_port_block(size: int) -> int:
    """A base port whose next `size` ports and base+91… are all free, below the ephemeral range (32768…): other
    tests' outgoing connections take ephemeral ports, and one took a replica's port between check and bind."""
    for _ in range(200):
        base = random.randrange(20000, 32000, 100)
        ok = True
        for p in [base, *range(base + 1, base + 1 + size), *range(base + 91, base + 97)]:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free block of ports")


def free_port() -> int:
    """A free port below the ephemeral range (see free_port_block)."""
    for _ in range(200):
        port = random.randrange(32100, 32700)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Polls a condition of another process (a server coming up): there is no event to wait on across processes."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {seconds} s")
        time.sleep(0.1)


class PrivateRedis:
    """A redis-server of the drill's own, with an append-only file so its data survives a restart."""

    def __init__(self, work: Path) -> None:
        self.work, self.port = work, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.work),
             "--appendonly", "yes", "--save", "", "--logfile", str(self.work / "redis.log")],
        )  # fmt: skip
        wait_until(self.answers, 10, "redis-server answering")

    def answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


class PrivatePostgres:
    """A PostgreSQL cluster of the drill's own (initdb, trust auth, loopback, its socket in the temp dir)."""

    def __init__(self, work: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            pytest.skip("PostgreSQL server binaries are not installed")
        self.bin, self.data, self.port = Path(bins[-1]), work / "pgdata", free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.as_user: list[str] = []
        if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0:
            # initdb and postgres refuse root: run them as the postgres system user
            shutil.chown(work, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.as_user, str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "-A", "trust", "--no-sync"], check=True, capture_output=True)  # fmt: skip
        self.log = work / "pg.log"

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                        "-o", opts, "-w", "start"], check=True, capture_output=True)  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                        "stop"], check=False, capture_output=True)  # fmt: skip


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    work = Path(tempfile.mkdtemp(prefix="agentgw-drill-redis-"))
    r = PrivateRedis(work)
    r.start()
    yield r
    r.stop()
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    work = Path(tempfile.mkdtemp(prefix="agentgw-drill-pg-"))
    pg = PrivatePostgres(work)
    pg.start()
    yield pg
    pg.stop("immediate")
    shutil.rmtree(work, ignore_errors=True)


def slow_models(cfg: dict[str, Any], reg: dict[str, Any]) -> None:
    """A model that streams its echo one token per 100 ms (so a stream is still going when a replica dies)."""
    reg["llm"]["providers"].append(
        {"name": "mock-slow", "kind": "mock", "mock": {"chunk_delay_ms": 100, "chunk_tokens": 1}}
    )
    reg["llm"]["models"].append(
        {"name": "mock-slow", "targets": [{"provider": "mock-slow", "model": "slow-1"}]}
    )


@contextlib.contextmanager
def drill_cluster(replicas: int, **kw: Any) -> Iterator[dict[str, Any]]:
    base = free_port_block(replicas)
    tweak = kw.pop("tweak", None)

    def both(cfg: dict[str, Any], reg: dict[str, Any]) -> None:
        slow_models(cfg, reg)
        reg["mcp"]["servers"].append(
            {"name": "slow", "transport": "streamable-http", "url": f"http://127.0.0.1:{base + 95}/mcp",
             "timeout_s": 60}
        )  # fmt: skip
        reg["a2a"]["agents"].append(
            {"name": "slowpoke", "url": f"http://127.0.0.1:{base + 94}/", "timeout_s": 60}
        )
        if tweak is not None:
            tweak(cfg, reg)

    extra = {
        "slow-a2a": [sys.executable, str(UPSTREAMS), "a2a", str(base + 94)],
        "slow-mcp": [sys.executable, str(UPSTREAMS), "mcp", str(base + 95)],
    }
    with cluster(replicas, base, tweak=both, extra=extra, **kw) as info:
        yield info


def restart(info: dict[str, Any], i: int) -> None:
    """Replica i again (after a kill or a stop), ready, and back in HAProxy's rotation."""
    group = info["group"]
    group.start(i)
    wait_ready(f"{group.url(i)}/readyz", proc=group.procs[i])
