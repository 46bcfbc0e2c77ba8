"""`agentgw trace show` in text: each step says why it failed (the error message) and every decision taken on
it; a step refused before authorization says so; a refused LLM request still names its model."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.mcp.support import Upstream, mcp_client, server_entry
from tests.support import AGENTGW, MOCK_REGISTRY, OTHER_KEY, TEST_KEY, gateway, serve


async def test_text_trace_shows_each_error_message_and_every_decision(tmp_path: Path) -> None:
    up = Upstream("one")
    task = {"x-agentgw-task": "tr-1"}
    async with serve(up) as u:
        registry = {**MOCK_REGISTRY, "mcp": {"servers": [server_entry("one", u)]}}
        async with gateway(tmp_path, registry) as (url, _):
            async with httpx.AsyncClient(base_url=url, headers=task) as c:
                bad = {"model": "mock-fast", "messages": "not a list"}
                await c.post(
                    "/v1/chat/completions", json=bad, headers={"authorization": f"Bearer {TEST_KEY}"}
                )
                ok = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}
                await c.post(
                    "/v1/chat/completions", json=ok, headers={"authorization": f"Bearer {OTHER_KEY}"}
                )
            async with mcp_client(f"{url}/mcp", headers=task) as client:
                with pytest.raises(MCPError):
                    await client.call_tool("one__nowhere", {})
    cfg = str(tmp_path / "agentgw.yaml")
    shown = await anyio.run_process([AGENTGW, "trace", "show", "tr-1", "--principal", "*", "--config", cfg])
    lines = shown.stdout.decode().splitlines()
    refused = next(line for line in lines if "invalid_messages" in line)
    assert "llm chat llm:mock-fast  error invalid_messages" in refused  # the model it asked for
    assert "error: 'messages' must be a non-empty array." in refused
    assert "[authn allow: api_key:" in refused and "authz not reached" in refused
    denied = next(line for line in lines if "permission_denied" in line)
    assert "error: other may not call llm:mock-fast." in denied
    assert "authn allow: api_key:" in denied and "authz deny: default deny" in denied
    unknown = next(line for line in lines if "tools/call" in line)
    assert "error unknown_tool" in unknown and "error: Unknown tool: one__nowhere" in unknown
    assert "authz not reached" in unknown
