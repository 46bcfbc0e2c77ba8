"""The gateway's own SSE streams are resumable in the handshake era: a caller whose stream broke mid-call
reconnects with GET + Last-Event-ID and receives the rest of that stream, the result included."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx

from tests.mcp.support import ACCEPT, INIT, Upstream, registry, server_entry
from tests.support import TEST_KEY, gateway, serve

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


async def test_a_caller_whose_stream_broke_mid_call_gets_the_result_after_reconnecting_with_last_event_id(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with httpx.AsyncClient(timeout=10) as http:
            opened = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH})
            session = {**ACCEPT, **AUTH, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
            session["MCP-Protocol-Version"] = "2025-11-25"
            ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await http.post(f"{url}/mcp", json=ready, headers=session)
            call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "docs__wait_gate"}}
            with anyio.fail_after(10):
                async with http.stream("POST", f"{url}/mcp", json=call, headers=session) as stream:
                    async for line in stream.aiter_lines():  # the priming event: an id and empty data
                        if line.startswith("id:"):
                            event_id = line[3:].strip()
                            break
                # the stream is gone (a disconnect is not a cancellation in this era); the call goes on
                docs.gate.set()
                resumed = {**session, "Accept": "text/event-stream", "Last-Event-ID": event_id}
                async with http.stream("GET", f"{url}/mcp", headers=resumed) as replay:
                    async for line in replay.aiter_lines():
                        if line.startswith("data:") and line[5:].strip():
                            message = json.loads(line[5:])
                            break
    assert message["id"] == 7
    assert message["result"]["content"][0]["text"] == "opened"
