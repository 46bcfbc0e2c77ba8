"""The bypass corpus: names that try to reach a tool the caller may not use, or one outside the endpoint it
called, are all refused exactly like a tool that does not exist, and never reach an upstream."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import OTHER_KEY, POLICIES, TEST_KEY, audit_records, gateway, serve

POLICY = """\
p, role:agents, mcp:*, *, allow
p, user:other, mcp:docs/add, call, allow
"""

CORPUS = [
    "docs__ADD",  # case changes
    "DOCS__add",
    "Docs__Add",
    "docs__\u0430dd",  # Cyrillic a
    "docs__\uff41dd",  # fullwidth a (NFKC-folds to "add")
    "docs__add\u200b",  # zero-width space
    "docs__a\u0301dd",  # combining accent
    "docs__add ",
    " docs__add",
    "docs__echo",  # a tool it may not use
    "fs__add",  # the allowed tool name under another server's prefix
    "docs__fs__add",  # separator injection
    "fs__docs__add",
    "docs____add",
    "__docs__add",
    "docs___add",
    "docs_add",
    "docs__",
    "__add",
    "docs%5F%5Fadd",  # percent encoding
    "docs__%61dd",
    "docs/add",
    "mcp:docs/add",
    "docs.add",
    "docs__add/../echo",
    "docs__*",
]


@pytest.fixture
def policy(tmp_path: Path) -> dict[str, object]:
    (tmp_path / "policy.csv").write_text(POLICY)
    return {"policies": {"model": str(POLICIES / "model.conf"), "policy": str(tmp_path / "policy.csv")}}


async def test_every_bypass_name_is_refused_like_a_tool_that_does_not_exist(
    tmp_path: Path, policy: dict[str, object]
) -> None:
    docs, fs = Upstream("docs"), Upstream("fs")
    async with serve(docs) as d, serve(fs) as f:
        reg = registry(server_entry("docs", d), server_entry("fs", f))
        async with gateway(tmp_path, reg, policy) as (url, _):
            async with mcp_client(f"{url}/mcp", mode="2026-07-28", key=OTHER_KEY) as other:
                ok = await other.call_tool("docs__add", {"a": 2, "b": 3})
                refusals: dict[str, tuple[int, str]] = {}
                for name in CORPUS:
                    with pytest.raises(MCPError) as err:
                        await other.call_tool(name, {"a": 1, "b": 1})
                    refusals[name] = (err.value.code, err.value.message)
    assert ok.structured_content == {"result": 5}
    assert refusals == {name: (-32602, f"Unknown tool: {name}") for name in CORPUS}
    calls = [r for r in audit_records(tmp_path) if r["operation"] == "tools/call"]
    assert [r["target"] for r in calls if r["status"] == "ok"] == ["mcp:docs/add"]
    assert all(not r["attempts"] for r in calls if r["status"] != "ok")  # nothing refused reached an upstream


async def test_a_virtual_server_path_cannot_reach_a_tool_outside_it(tmp_path: Path) -> None:
    docs = Upstream("docs")
    async with serve(docs) as d:
        reg = registry(server_entry("docs", d), virtual=[{"name": "ro", "tools": ["docs__add"]}])
        async with gateway(tmp_path, reg) as (url, _):
            async with mcp_client(f"{url}/mcp/ro", key=TEST_KEY) as agent:
                listed = [t.name for t in (await agent.list_tools()).tools]
                with pytest.raises(MCPError) as outside:
                    await agent.call_tool("docs__echo", {"text": "x"})
            async with mcp_client(f"{url}/mcp", key=TEST_KEY) as agent:
                inside = await agent.call_tool("docs__echo", {"text": "x"})  # the same key may, on /mcp
    assert listed == ["docs__add"]
    assert (outside.value.code, outside.value.message) == (-32602, "Unknown tool: docs__echo")
    assert inside.structured_content == {"result": "x"}


@pytest.mark.parametrize("path", ["/mcp/%2e%2e", "/mcp/RO", "/mcp/ro/extra", "/mcp/ro%2f..%2f"])
async def test_odd_endpoint_paths_are_not_found(tmp_path: Path, path: str) -> None:
    import httpx

    docs = Upstream("docs")
    async with serve(docs) as d:
        reg = registry(server_entry("docs", d), virtual=[{"name": "ro", "tools": ["docs__add"]}])
        async with gateway(tmp_path, reg) as (url, _), httpx.AsyncClient() as c:
            r = await c.post(
                f"{url}{path}",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={
                    "authorization": f"Bearer {TEST_KEY}",
                    "accept": "application/json, text/event-stream",
                },
            )
    assert r.status_code == 404
