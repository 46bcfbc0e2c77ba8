"""Names on the aggregated endpoints: prefixes, virtual servers and their prefix modes, the registry's trimming
(include, exclude, rename, descriptions, tags), the audit record's original names, and the static collision check."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from agentgw.mcp import check_collisions
from agentgw.mcp.catalog.naming import unwrap_uri, wrap_uri
from agentgw.registry import Registry
from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import audit_records, gateway, serve

TRIM = {
    "include": ["search*", "add", "echo"],
    "exclude": ["echo"],
    "rename": {"search_docs": "search"},
    "descriptions": {"add": "Adds, for docs"},
    "tags": {"search": ["read-only"]},
}


async def test_registry_trimming_renames_describes_and_tags_tools_and_calls_reach_the_original(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up, tools=TRIM))) as (url, _),
    ):
        async with mcp_client(f"{url}/mcp", headers={"x-agentgw-task": "audit-me"}) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            result = await client.call_tool("docs__search", {"query": "eras"})
            with pytest.raises(MCPError) as hidden:
                await client.call_tool("docs__echo", {"text": "excluded"})
    assert sorted(tools) == ["docs__add", "docs__search"]
    assert tools["docs__add"].description == "Adds, for docs"
    assert tools["docs__search"].meta == {"io.agentgw/tags": ["read-only"]}
    assert result.structured_content == {"result": "results for eras"}
    assert hidden.value.code == -32602
    record = next(
        r for r in audit_records(tmp_path) if r["operation"] == "tools/call" and r["status"] == "ok"
    )
    assert record["plane"] == "mcp"
    assert record["target"] == "mcp:docs/search_docs"  # the upstream's own name, not the exposed one
    assert record["principal"] == "tester" and record["task_id"] == "audit-me"
    assert record["attempts"][0]["target"] == "mcp:docs" and record["attempts"][0]["outcome"] == "ok"
    denied = next(r for r in audit_records(tmp_path) if r["error_code"] == "unknown_tool")
    assert denied["status"] == "error"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("never", ["add", "search_docs", "echo"]),
        ("conditional", ["alpha__add", "search_docs", "beta__add", "echo"]),
        ("always", ["alpha__add", "alpha__search_docs", "beta__add", "beta__echo"]),
    ],
)
async def test_a_virtual_server_lists_only_its_globs_named_by_its_prefix_mode(
    tmp_path: Path, prefix: str, expected: list[str]
) -> None:
    alpha, beta = Upstream("alpha"), Upstream("beta", handshake_only=True)
    tools = ["alpha__add", "alpha__search*", "beta__add", "beta__echo"]
    if prefix == "never":
        tools = ["alpha__add", "alpha__search*", "beta__echo"]  # `add` twice would be a collision
    virtual = [{"name": "picked", "tools": tools, "prefix": prefix}]
    async with serve(alpha) as a, serve(beta) as b:
        reg = registry(server_entry("alpha", a), server_entry("beta", b), virtual=virtual)
        async with gateway(tmp_path, reg) as (url, _), mcp_client(f"{url}/mcp/picked") as client:
            names = [t.name for t in (await client.list_tools()).tools]
            echoed = await client.call_tool(
                expected[-1], {"text": "hi"} if "echo" in expected[-1] else {"a": 1, "b": 1}
            )
            with pytest.raises(MCPError) as outside:
                await client.call_tool("alpha__count" if prefix != "never" else "count", {"n": 1})
    assert names == expected
    assert echoed.is_error is False
    assert outside.value.code == -32602


async def test_unknown_tools_and_other_servers_prefixes_are_invalid_params_not_errors_of_the_gateway(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    virtual = [{"name": "only-docs", "tools": ["docs__add"]}]
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up), virtual=virtual)) as (url, _),
    ):
        async with mcp_client(f"{url}/mcp") as client:
            codes = []
            for name in ("docs__nope", "nope__add", "no_prefix", "__add"):
                with pytest.raises(MCPError) as err:
                    await client.call_tool(name, {})
                codes.append((err.value.code, err.value.data["code"]))
        async with mcp_client(f"{url}/mcp/only-docs", mode="2026-07-28") as client:
            with pytest.raises(MCPError) as other:
                await client.call_tool("docs__echo", {"text": "not in this view"})
            with pytest.raises(MCPError) as resource:
                await client.read_resource("agentgw://elsewhere/file:///x")
    assert codes == [(-32602, "unknown_tool")] * 4
    assert other.value.code == -32602
    assert resource.value.code == -32602


def test_resource_uris_wrap_verbatim_and_unwrap_to_the_original() -> None:
    for uri in ("file:///readme.md", "https://example.com/a?b=1#c", "test://x/{id}"):
        wrapped = wrap_uri("docs", uri)
        assert wrapped.startswith("agentgw://docs/")
        assert unwrap_uri(wrapped) == ("docs", uri)
    assert unwrap_uri("file:///readme.md") is None
    assert unwrap_uri("agentgw://docs") is None


@pytest.mark.parametrize(
    ("mcp", "problems"),
    [
        ({"servers": [{"name": "a", "url": "http://x", "tools": {"rename": {"one": "x", "two": "x"}}}]}, 1),
        ({"servers": [{"name": "a", "url": "http://x", "tools": {"rename": {"one": "bad name!"}}}]}, 1),
        (
            {
                "servers": [
                    {"name": "a", "url": "http://x", "tools": {"rename": {"find": "search"}}},
                    {"name": "b", "url": "http://x", "tools": {"rename": {"lookup": "search"}}},
                ],
                "virtual_servers": [{"name": "v", "tools": ["a__*", "b__*"], "prefix": "never"}],
            },
            1,
        ),
        (
            {
                "servers": [{"name": "a", "url": "http://x"}, {"name": "b", "url": "http://x"}],
                "virtual_servers": [{"name": "v", "tools": ["a__echo", "b__echo"], "prefix": "never"}],
            },
            1,
        ),
        (
            {
                "servers": [{"name": "a", "url": "http://x"}, {"name": "b", "url": "http://x"}],
                "virtual_servers": [
                    {"name": "v", "tools": ["a__echo", "b__echo"], "prefix": "conditional"},
                    {"name": "w", "tools": ["nothing__*"], "prefix": "never"},
                ],
            },
            0,
        ),
    ],
)
def test_check_collisions_reports_what_the_registry_alone_reveals(
    mcp: dict[str, object], problems: int
) -> None:
    found = check_collisions(Registry.model_validate({"mcp": mcp}))
    assert len(found) == problems, found
    assert all(line.startswith("mcp.") and "\n" not in line for line in found)
