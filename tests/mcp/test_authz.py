"""Every MCP operation passes the gateway's policy: listings show exactly what the caller may use, and a call to
anything else answers exactly as if it did not exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import OTHER_KEY, POLICIES, audit_records, gateway, serve

POLICY = """\
p, role:agents, mcp:*, *, allow
p, role:agents, tag:dangerous, call, deny
p, user:other, mcp:docs/add, call, allow
p, user:other, mcp:docs/resource/*, read, allow
"""


@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
async def test_listings_show_only_what_the_policy_allows_and_other_calls_are_denied(
    tmp_path: Path, client_mode: str
) -> None:
    (tmp_path / "policy.csv").write_text(POLICY)
    settings = {"policies": {"model": str(POLICIES / "model.conf"), "policy": str(tmp_path / "policy.csv")}}
    docs = Upstream("docs")
    entry = server_entry("docs", "", tools={"tags": {"echo": ["dangerous"]}})
    async with serve(docs) as up:
        entry["url"] = f"{up}/mcp"
        async with gateway(tmp_path, registry(entry), settings) as (url, _):
            async with mcp_client(f"{url}/mcp", mode=client_mode) as agent:
                agent_tools = [t.name for t in (await agent.list_tools()).tools]
                with pytest.raises(MCPError) as dangerous:
                    await agent.call_tool("docs__echo", {"text": "x"})
            async with mcp_client(f"{url}/mcp", mode=client_mode, key=OTHER_KEY) as other:
                other_tools = [t.name for t in (await other.list_tools()).tools]
                other_prompts = (await other.list_prompts()).prompts
                other_resources = [str(r.uri) for r in (await other.list_resources()).resources]
                added = await other.call_tool("docs__add", {"a": 1, "b": 1})
                readme = await other.read_resource("agentgw://docs/file:///readme.md")
                with pytest.raises(MCPError) as denied:
                    await other.call_tool("docs__search_docs", {"query": "x"})
    assert "docs__echo" not in agent_tools and "docs__add" in agent_tools
    # what a caller may not use answers exactly like what does not exist (no existence leak)
    assert dangerous.value.code == -32602 and dangerous.value.data["code"] == "unknown_tool"
    assert other_tools == ["docs__add"] and other_prompts == []
    assert other_resources == ["agentgw://docs/file:///readme.md"]
    assert added.structured_content == {"result": 2}
    assert readme.contents[0].text == "# docs readme"  # type: ignore[union-attr]
    assert (denied.value.code, denied.value.message) == (-32602, "Unknown tool: docs__search_docs")
    record = next(r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/search_docs")
    assert record["status"] == "denied" and record["principal"] == "other"
