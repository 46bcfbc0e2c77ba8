"""Every MCP operation passes the gateway's policy: listings show exactly what the caller may use, and a call to
anything else answers exactly as if it did not exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.mcp.support import ACCEPT, INIT, Upstream, mcp_client, modern_request, registry, server_entry
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


OTHER = {"Authorization": f"Bearer {OTHER_KEY}", "x-agentgw-task": "same-task"}
# (method, params of a name that exists but is denied to `other`, params of a name that does not exist)
ASKS = [
    (
        "tools/call",
        {"name": "docs__echo", "arguments": {"text": "x"}},
        {"name": "docs__nope", "arguments": {}},
    ),
    ("prompts/get", {"name": "docs__greet", "arguments": {"name": "x"}}, {"name": "docs__nope"}),
    (
        "resources/read",
        {"uri": "agentgw://docs/file:///notes/x"},
        {"uri": "agentgw://nope/file:///notes/x"},
    ),
]


async def _ask(
    http: httpx.AsyncClient, url: str, era: str, session: dict[str, str], method: str, params: dict[str, Any]
) -> httpx.Response:
    if era == "modern":
        headers = {**ACCEPT, **OTHER, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
        name = params.get("name") or params.get("uri")
        return await http.post(
            f"{url}/mcp", json=modern_request(method, params, rid=9), headers={**headers, "Mcp-Name": name}
        )
    body = {"jsonrpc": "2.0", "id": 9, "method": method, "params": params}
    return await http.post(f"{url}/mcp", json=body, headers=session)


async def _session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    opened = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **OTHER})
    session = {**ACCEPT, **OTHER, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
    session["MCP-Protocol-Version"] = "2025-11-25"
    ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    await http.post(f"{url}/mcp", json=ready, headers=session)
    return session


def _names_out(response: httpx.Response, params: dict[str, Any]) -> bytes:
    """The answer's bytes without what differs by design: the asked name, and the SSE event id (a counter of
    the session's stream, for resumption)."""
    name = str(params.get("name") or params.get("uri"))
    return re.sub(rb"(?m)^id: \d+\r?\n", b"", response.content.replace(name.encode(), b"NAME"))


@pytest.mark.parametrize("era", ["modern", "legacy"])
@pytest.mark.parametrize("reveal", [False, True])
async def test_a_denied_tool_prompt_or_resource_answers_byte_for_byte_like_an_unknown_one(
    tmp_path: Path, era: str, reveal: bool
) -> None:
    (tmp_path / "policy.csv").write_text(
        POLICY.replace("mcp:docs/resource/*", "mcp:docs/resource/file:///r*")
    )
    settings: dict[str, Any] = {
        "policies": {"model": str(POLICIES / "model.conf"), "policy": str(tmp_path / "policy.csv")},
        "authz": {"reveal_denied": reveal},
    }
    docs = Upstream("docs")
    async with serve(docs) as up:
        async with gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, _):
            async with httpx.AsyncClient(timeout=10) as http:
                session = await _session(http, url) if era == "legacy" else {}
                answers = [
                    (
                        await _ask(http, url, era, session, method, denied),
                        await _ask(http, url, era, session, method, unknown),
                        denied,
                        unknown,
                    )
                    for method, denied, unknown in ASKS
                ]
    for denied_r, unknown_r, denied, unknown in answers:
        if reveal:
            assert b'"code":-32011' in denied_r.content and b"permission_denied" in denied_r.content
            assert b'"code":-32602' in unknown_r.content
        else:
            assert denied_r.status_code == unknown_r.status_code
            assert denied_r.headers["content-type"] == unknown_r.headers["content-type"]
            assert _names_out(denied_r, denied) == _names_out(unknown_r, unknown)
            assert b'"code":-32602' in denied_r.content
    records = [
        r
        for r in audit_records(tmp_path)
        if r["principal"] == "other" and r["target"].startswith("mcp:docs/")
    ]
    assert {r["target"] for r in records} == {
        "mcp:docs/echo",
        "mcp:docs/prompt/greet",
        "mcp:docs/resource/file:///notes/x",
    }
    assert all(r["status"] == "denied" for r in records)
    assert all(d["outcome"] == "deny" for r in records for d in r["decisions"] if d["stage"] == "authz")
