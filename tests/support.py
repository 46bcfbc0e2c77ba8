"""Test support: real uvicorn servers on 127.0.0.1 inside the test's event loop, and config writers.

Nothing here imitates agentgw: the gateway under test is the real app; upstreams are small real servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import uvicorn
import yaml

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
        "audit": {"log": {"path": "audit.jsonl"}},
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


def audit_records(tmp: Path) -> list[dict[str, Any]]:
    import orjson

    path = tmp / "audit.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


MOCK_REGISTRY: dict[str, Any] = {
    "llm": {
        "providers": [{"name": "mock", "kind": "mock"}],
        "models": [
            {"name": "mock-fast", "targets": [{"provider": "mock", "model": "mock-fast-1"}]},
            {"name": "mock-embed", "targets": [{"provider": "mock", "model": "mock-embed-1"}]},
        ],
    }
}
