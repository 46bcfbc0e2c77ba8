"""Upstream MCP servers that answer in unusual or broken ways: SSE replies that open with a priming event,
servers without completions in the 2026-07-28 era, and HTTP 200s that carry no JSON-RPC at all."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import audit_records, gateway, serve


@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
async def test_a_streamable_http_server_that_primes_its_streams_is_listed_and_called(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs", handshake_only=True, event_store=True)
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, gw):
        with anyio.fail_after(10):
            await gw.mcp.upstreams.by_name["docs"].wait_connected()
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            added = await client.call_tool("docs__add", {"a": 2, "b": 3})
            steps: list[float] = []

            async def progress(value: float, total: float | None, message: str | None) -> None:
                steps.append(value)

            counted = await client.call_tool("docs__count", {"n": 3}, progress_callback=progress)
    assert "docs__add" in names
    assert added.structured_content == {"result": 5}
    assert counted.structured_content == {"result": 3} and steps == [1, 2, 3]
    # the upstream really primed: its event store holds a priming event (no message) for each stream
    assert docs.event_store and any(m is None for _, _, m in docs.store.events)
    records = [r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/add"]
    assert records and records[0]["status"] == "ok"
