"""The gateway's side of each upstream: stdio processes it launches and relaunches, sessions it re-opens, broken
servers it leaves out, cancellations it passes on, and list changes it notices."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.mcp.support import UPSTREAM_TOKEN, Upstream, mcp_client, registry, server_entry
from tests.support import audit_records, free_port, gateway, serve

STDIO_SERVER = Path(__file__).parents[1] / "stdio_server.py"
ERAS = ["handshake", "modern"]
CLIENT_MODES = ["legacy", "2026-07-28"]


async def test_a_broken_upstream_is_left_out_of_listings_and_calls_to_it_fail_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    docs = Upstream("docs")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with serve(docs) as up:
        reg = registry(server_entry("dead", dead), server_entry("docs", up))
        async with gateway(tmp_path, reg) as (url, gw), mcp_client(f"{url}/mcp") as client:
            names = [t.name for t in (await client.list_tools()).tools]
            with pytest.raises(MCPError) as err:
                await client.call_tool("dead__add", {"a": 1, "b": 2})
            still = await client.call_tool("docs__add", {"a": 1, "b": 2})
            status = gw.mcp.status()["dead"]
    assert names and all(n.startswith("docs__") for n in names)
    assert err.value.code == -32013
    assert err.value.data["code"] == "mcp_server_unavailable"
    assert "'dead' left out of listings" in caplog.text
    assert still.structured_content == {"result": 3}
    assert status["state"] in ("down", "connecting") and status["error"]
    record = next(r for r in audit_records(tmp_path) if r["target"] == "mcp:dead/add")
    assert record["status"] == "error" and record["error_code"] == "mcp_server_unavailable"


async def test_a_stdio_server_is_launched_with_its_env_and_relaunched_after_it_dies(tmp_path: Path) -> None:
    entry = {
        "name": "local",
        "transport": "stdio",
        "command": [sys.executable, str(STDIO_SERVER)],
        "env": {"TZ": "Pacific/Auckland"},
        "timeout_s": 30,
        "session_scope": "shared",  # the gateway's one process (a principal's own: tests/mcp/upstream/test_scope.py)
    }
    async with gateway(tmp_path, registry(entry)) as (url, gw), mcp_client(f"{url}/mcp") as client:
        zone = await client.call_tool("local__zone", {})
        first = await client.call_tool("local__pid", {})
        with pytest.raises(MCPError) as err:
            await client.call_tool("local__crash", {})
        with anyio.fail_after(30):
            await gw.mcp.upstreams.by_name["local"].wait_connected(2)
        second = await client.call_tool("local__pid", {})
        status = gw.mcp.status()["local"]
    assert zone.structured_content == {"result": "Pacific/Auckland"}
    assert err.value.code == -32013
    assert first.structured_content != second.structured_content
    assert status["restarts"] == 1 and status["state"] == "ready"


async def test_an_expired_upstream_session_is_reinitialized_without_the_caller_noticing(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs", handshake_only=True)
    async with (
        serve(docs) as up,
        # the gateway's one session (a principal's own: tests/mcp/upstream/test_scope.py)
        gateway(tmp_path, registry(server_entry("docs", up, session_scope="shared"))) as (url, gw),
    ):
        async with mcp_client(f"{url}/mcp") as client:
            await client.call_tool("docs__echo", {"text": "one"})
            sid = next(h["mcp-session-id"] for h in reversed(docs.headers) if "mcp-session-id" in h)
            async with (
                httpx.AsyncClient() as http
            ):  # the upstream ends the gateway's session (a restart would too)
                ended = await http.delete(
                    f"{up}/mcp",
                    headers={"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"},
                )
            result = await client.call_tool("docs__echo", {"text": "two"})
            status = gw.mcp.status()["docs"]
    assert ended.status_code == 200
    assert result.structured_content == {"result": "two"}
    assert status["restarts"] == 1
    assert all(
        h.get("authorization") == f"Bearer {UPSTREAM_TOKEN}" for h in docs.headers if "x-agentgw-task" in h
    )


@pytest.mark.parametrize("upstream_era", ERAS)
@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_cancelling_a_call_cancels_it_at_the_upstream(
    tmp_path: Path, client_mode: str, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "docs__block", {})
                with anyio.fail_after(10):
                    await docs.tool_started.wait()
                tg.cancel_scope.cancel()
            with anyio.fail_after(10):
                await docs.tool_cancelled.wait()
    record = next(r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/block")
    assert record["status"] == "cancelled"
    assert record["attempts"][-1]["outcome"] == "cancelled"


@pytest.mark.parametrize("upstream_era", ERAS)
async def test_a_list_change_announced_upstream_shows_in_the_next_listing(
    tmp_path: Path, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp") as client:
            before = [t.name for t in (await client.list_tools()).tools]
            await client.call_tool("docs__grow", {})
            names = before
            with anyio.fail_after(10):
                while "docs__fresh" not in names:  # each round is a real listing; the change arrives async
                    names = [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
            fresh = await client.call_tool("docs__fresh", {})
    assert "docs__fresh" not in before
    assert fresh.content[0].text == "fresh"  # type: ignore[union-attr]


async def test_a_legacy_sse_upstream_is_listed_and_called_in_the_handshake_era(tmp_path: Path) -> None:
    old = Upstream("old", sse=True)
    async with serve(old) as up:
        entry = {**server_entry("old", up), "transport": "sse", "url": f"{up}/sse"}
        async with (
            gateway(tmp_path, registry(entry)) as (url, gw),
            mcp_client(f"{url}/mcp", mode="2026-07-28") as client,
        ):
            names = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool("old__add", {"a": 2, "b": 3})
            status = gw.mcp.status()["old"]
    assert "old__add" in names
    assert result.structured_content == {"result": 5}
    assert status["era"] == "handshake" and status["transport"] == "sse"
    assert all(h.get("authorization") == f"Bearer {UPSTREAM_TOKEN}" for h in old.headers)


async def test_a_call_slower_than_the_servers_timeout_fails_with_upstream_timeout_and_is_cancelled_there(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up, timeout_s=0.5))) as (url, _),
    ):
        async with mcp_client(f"{url}/mcp") as client:
            with pytest.raises(MCPError) as err:
                await client.call_tool("docs__block", {})
            with anyio.fail_after(10):
                await docs.tool_cancelled.wait()
    assert err.value.code == -32001 and err.value.data["code"] == "upstream_timeout"
    record = next(r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/block")
    assert record["status"] == "error" and record["attempts"][0]["outcome"] == "timeout"
