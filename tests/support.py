"""Test support: real uvicorn servers on 127.0.0.1 inside the test's event loop, `agentgw serve` as a child
process, and config writers.

Nothing here imitates agentgw: the gateway under test is the real app; upstreams are small real servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import uvicorn
import yaml
from anyio.abc import Process

from agentgw import create_app, load_settings
from agentgw.app import Gateway

POLICIES = Path(__file__).resolve().parent.parent / "policies"
TEST_KEY = "agw-test-key-0123456789"
OTHER_KEY = "agw-other-key-0123456789"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(uvicorn.Server):
    """uvicorn with a readiness event, so tests wait on an event instead of polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


@contextlib.asynccontextmanager
async def serve(app: Any, *, graceful_s: float | None = 2.0, port: int | None = None) -> AsyncIterator[str]:
    """Run `app` on uvicorn at 127.0.0.1:<port, else a free one> in this event loop; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="none",
        lifespan="auto",
        log_level="warning",
        timeout_graceful_shutdown=graceful_s,
    )
    server = _Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            await server.ready.wait()
        if not server.started:
            raise RuntimeError("server failed to start")
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


def write_config(
    tmp: Path,
    registry: dict[str, Any],
    settings: dict[str, Any] | None = None,
) -> Path:
    """agentgw.yaml + registry/main.yaml in `tmp`, with TEST_KEY (subject `tester`, role `agents`) and
    OTHER_KEY (subject `other`)."""
    (tmp / "registry").mkdir(exist_ok=True)
    (tmp / "registry" / "main.yaml").write_text(yaml.safe_dump(registry))
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "registry": ["registry/*.yaml"],
        "auth": {
            "api_keys": [
                {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
                {"subject": "other", "roles": [], "sha256": sha(OTHER_KEY)},
            ]
        },
        "policies": {"model": str(POLICIES / "model.conf"), "policy": str(POLICIES / "policy.csv")},
    }
    for key, value in (settings or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp / "agentgw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.asynccontextmanager
async def gateway(
    tmp: Path, registry: dict[str, Any], settings: dict[str, Any] | None = None, port: int | None = None
) -> AsyncIterator[tuple[str, Gateway]]:
    app = create_app(load_settings(write_config(tmp, registry, settings)))
    async with serve(app, port=port) as url:
        yield url, app


def audit_rows(path: Path) -> list[Any]:
    """Every row of a SQLite audit store in seq order, read the way the store reads it: each record's JSON (the
    bytes the chain hashes) expanded from its compact stored form."""
    import sqlite3

    from agentgw.audit.sqlite import SELECT, _row

    with contextlib.closing(sqlite3.connect(path)) as db:
        return [_row(r) for r in db.execute(SELECT + " ORDER BY seq")]


def audit_bytes(tmp: Path) -> bytes:
    """What a look at the SQLite audit store beside the config can see: its files' bytes and every record's JSON
    (records are stored compressed, so a search of the file alone would find nothing they hold)."""
    files = b"".join(p.read_bytes() for p in sorted(tmp.glob("audit.db*")))
    path = tmp / "audit.db"
    return files + b"\n".join(r.data for r in audit_rows(path)) if path.exists() else files


def audit_records(tmp: Path) -> list[dict[str, Any]]:
    """The call records in the gateway's SQLite audit store (`audit.db` beside the config), oldest first. Read
    after the gateway has shut down (its writer drained the queue); the chain's links are checked on the way (from
    wherever it starts: retention may have pruned its beginning)."""
    import orjson

    from agentgw.audit.chain import hasher

    path = tmp / "audit.db"
    if not path.exists():
        return []
    link, prev, out = hasher(None), None, []
    for row in audit_rows(path):
        assert (row.prev_hash, link(row.prev_hash, row.data)) == (prev or row.prev_hash, row.hash), (
            "the audit chain is broken"
        )
        prev = row.hash
        record = orjson.loads(row.data)
        if record["kind"] == "call":
            out.append(record)
    return out


MOCK_REGISTRY: dict[str, Any] = {
    "llm": {
        "providers": [{"name": "mock", "kind": "mock"}],
        "models": [
            {"name": "mock-fast", "targets": [{"provider": "mock", "model": "mock-fast-1"}]},
            {"name": "mock-embed", "targets": [{"provider": "mock", "model": "mock-embed-1"}]},
        ],
    }
}


AGENTGW = str(Path(sys.executable).parent / "agentgw")


class ServeProcess:
    """`agentgw serve` as a child process; its log lines are collected as they arrive."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._waits: list[tuple[str, anyio.Event]] = []

    async def pump(self) -> None:
        assert self.process.stderr is not None
        buf = b""
        async for chunk in self.process.stderr:
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                self.lines.append(raw.decode())
                for text, event in self._waits:
                    if text in self.lines[-1]:
                        event.set()
        for _, event in self._waits:  # the process is gone: nobody waits forever
            event.set()

    async def logged(self, text: str) -> None:
        event = anyio.Event()
        self._waits.append((text, event))
        with anyio.fail_after(20):
            if not any(text in line for line in self.lines):
                await event.wait()
        assert any(text in line for line in self.lines), "\n".join(self.lines)


@contextlib.asynccontextmanager
async def agentgw_serve(cfg: Path, port: int) -> AsyncIterator[ServeProcess]:
    process = await anyio.open_process(
        [AGENTGW, "serve", "--config", str(cfg), "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    gw = ServeProcess(process)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(gw.pump)
            await gw.logged("Uvicorn running on")
            yield gw
            with anyio.fail_after(20):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def drop_redis_keys(url: str, prefix: str) -> None:
    """Delete a test's Redis keys (everything under its unique prefix)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        keys = await client.keys(f"{prefix}:*")
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
