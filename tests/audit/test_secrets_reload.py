"""A secret added by a registry reload is scrubbed at once, like one configured at start: a running gateway gains
an MCP server whose header carries a token, the server's tool echoes it, and the token reaches neither the audit
store's bytes, nor /admin, nor a log line, with either audit writer (the worker process is told the new secrets,
in order with the records, and a restarted worker is told them again)."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from agentgw.exchange import Exchange
from tests.audit.support import store_bytes
from tests.audit.test_admin_api import ADMIN_KEY
from tests.audit.test_admin_api import SETTINGS as ADMIN_SETTINGS
from tests.audit.test_secrets import Echo
from tests.mcp.support import Upstream, mcp_client, server_entry
from tests.support import MOCK_REGISTRY, gateway, serve

TOKEN = (
    "vr8Reloaded3377tokenWXYZ"  # no known credential shape: only the reloaded registry says it is a secret
)


async def call_echo(url: str, task: str) -> str:
    async with mcp_client(f"{url}/mcp", headers={"x-agentgw-task": task}) as client:
        with anyio.fail_after(20):
            result = await client.call_tool("echo__whoami", {})
    return str(result.content)


async def admin_views(url: str, task: str) -> str:
    """The task tree and the call's record as /admin answers them."""
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as c:
        tree = await c.get(f"/admin/tasks/{task}", params={"principal": "tester"})
        assert tree.status_code == 200, tree.text
        record = await c.get(f"/admin/records/{tree.json()['steps'][0]['record_id']}")
        assert record.status_code == 200, record.text
    return tree.text + record.text


@pytest.mark.parametrize("writer", ["process", "inline"])
async def test_a_secret_added_by_a_registry_reload_is_scrubbed_from_the_store_admin_and_logs(
    tmp_path: Path, writer: str
) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)  # a handler of the root logger, as `agentgw serve` logs through
    root = logging.getLogger()
    root.addHandler(handler)
    echo = Echo()
    try:
        async with serve(Upstream("one")) as one, serve(echo) as up:
            before = {**MOCK_REGISTRY, "mcp": {"servers": [server_entry("one", one)]}}
            settings = {
                "auth": ADMIN_SETTINGS["auth"],
                "audit": {"writer": writer, "payloads": [{"match": "mcp:*"}]},
            }
            async with gateway(tmp_path, before, settings) as (url, app):
                assert app.audit is not None
                async with mcp_client(f"{url}/mcp") as client:  # serving (its audit worker running) before
                    await client.call_tool("one__chatty", {})
                await app.audit.flush()
                server: dict[str, Any] = {
                    "name": "echo",
                    "transport": "streamable-http",
                    "url": f"{up}/mcp",
                    "headers": {"Authorization": f"Bearer {TOKEN}"},
                    "timeout_s": 10,
                }
                registry = {**before, "mcp": {"servers": [server_entry("one", one), server]}}
                (tmp_path / "registry" / "main.yaml").write_text(yaml.safe_dump(registry))
                assert await app.registry.reload()
                answer = await call_echo(url, "echo-task")
                assert TOKEN in answer  # the caller gets the answer as the upstream gave it
                logging.getLogger("agentgw.mcp").warning("upstream answered %s", answer)
                await app.audit.flush()
                views = await admin_views(url, "echo-task")
                if writer == "process":  # a worker started again is told the current secrets too
                    proc = app.audit._proc  # type: ignore[attr-defined]
                    proc.kill()
                    await proc.wait()
                    await call_echo(url, "again-task")
                    await app.audit.flush()
                    views += await admin_views(url, "again-task")
    finally:
        root.removeHandler(handler)
    raw = store_bytes(tmp_path)
    assert b"[secret]" in raw  # the echo was recorded, with the token cut out
    assert TOKEN.encode() not in raw
    assert "[secret]" in views and TOKEN not in views
    assert "upstream answered" in out.getvalue() and TOKEN not in out.getvalue()


async def test_a_worker_started_again_is_told_the_secrets_a_reload_added(tmp_path: Path) -> None:
    from agentgw.audit.process import ProcessWriter
    from agentgw.audit.writer import open_sink
    from agentgw.settings import load_settings
    from tests.audit.support import finished, settings_file

    def echoing(
        task: str,
    ) -> Exchange:  # a call whose payload carries the secret (its config does not name it)
        ex = finished(task=task)
        ex.payload = {"model": "echo", "messages": [{"role": "user", "content": f"token {TOKEN}"}]}
        return ex

    sink = open_sink(
        load_settings(settings_file(tmp_path, {"batch_wait_ms": 0, "payloads": [{"match": "llm:*"}]}))
    )
    assert isinstance(sink, ProcessWriter)
    await sink.start()
    try:
        with anyio.fail_after(30):
            sink.use_secrets([TOKEN])
            await sink.submit(echoing("before"), time.perf_counter())
            await sink.flush()
            first = sink._proc
            assert first is not None
            first.kill()
            await sink.until(lambda: sink._proc is not first)
            await sink.submit(echoing("after"), time.perf_counter())
            await sink.flush()
        assert sink.written == 2
    finally:
        await sink.aclose()
    raw = store_bytes(tmp_path)
    assert raw.count(b"[secret]") >= 2 and TOKEN.encode() not in raw
