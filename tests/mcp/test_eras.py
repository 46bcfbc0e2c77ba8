"""The real `mcp` SDK client, in both eras, through agentgw to real upstream MCP servers of both eras: listing,
calling, progress, prompts and resources all work in every combination."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import gateway, serve

CLIENT_MODES = ["legacy", "2026-07-28"]
ERAS = ["handshake", "modern"]


@pytest.mark.parametrize("upstream_era", ERAS)
@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_client_of_either_era_lists_and_calls_tools_of_an_upstream_of_either_era(
    tmp_path: Path, client_mode: str, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, gw):
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool("docs__add", {"a": 20, "b": 22})
            negotiated = client.protocol_version
    assert gw.mcp.status()["docs"]["era"] == upstream_era
    assert negotiated == ("2025-11-25" if client_mode == "legacy" else "2026-07-28")
    assert names == sorted(names) and "docs__add" in names and "docs__search_docs" in names
    assert result.is_error is False
    assert result.structured_content == {"result": 42}


@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_tools_of_several_servers_merge_in_server_then_name_order(
    tmp_path: Path, client_mode: str
) -> None:
    alpha, beta = Upstream("alpha"), Upstream("beta", handshake_only=True)
    async with serve(alpha) as a, serve(beta) as b:
        reg = registry(server_entry("beta", b), server_entry("alpha", a))
        async with gateway(tmp_path, reg) as (url, _), mcp_client(f"{url}/mcp", mode=client_mode) as client:
            tools = (await client.list_tools()).tools
    names = [t.name for t in tools]
    assert names == [f"alpha__{n}" for n in sorted(_TOOLS)] + [f"beta__{n}" for n in sorted(_TOOLS)]
    add = next(t for t in tools if t.name == "beta__add")
    assert add.input_schema["required"] == ["a", "b"]  # the upstream's schema, passed through raw
    assert add.description == "Add two integers"


_TOOLS = [
    "add",
    "block",
    "chatty",
    "client_roots",
    "count",
    "declared",
    "echo",
    "greet_user",
    "grow",
    "remember_roots",
    "roots_later",
    "sample_hi",
    "search_docs",
    "stored_roots",
    "task_header",
    "touch",
    "wait_gate",
]


@pytest.mark.parametrize("upstream_era", ERAS)
@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_progress_notifications_reach_the_caller_on_its_own_request(
    tmp_path: Path, client_mode: str, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client:
            result = await client.call_tool("docs__count", {"n": 3}, progress_callback=on_progress)
    assert result.structured_content == {"result": 3}
    assert seen == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]


@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_prompts_and_resources_are_prefixed_and_read_back_through_the_gateway(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs", handshake_only=True)
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client:
            prompts = [p.name for p in (await client.list_prompts()).prompts]
            prompt = await client.get_prompt("docs__greet", {"name": "Ada"})
            resources = [str(r.uri) for r in (await client.list_resources()).resources]
            templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            readme = await client.read_resource("agentgw://docs/file:///readme.md")
            note = await client.read_resource("agentgw://docs/file:///notes/eras")
    assert prompts == ["docs__greet"]
    assert prompt.messages[0].content.text == "Hello, Ada!"  # type: ignore[union-attr]
    assert resources == ["agentgw://docs/file:///readme.md"]
    assert templates == ["agentgw://docs/file:///notes/{topic}"]
    assert readme.contents[0].text == "# docs readme"  # type: ignore[union-attr]
    assert str(readme.contents[0].uri) == "agentgw://docs/file:///readme.md"
    assert note.contents[0].text == "note about eras"  # type: ignore[union-attr]
