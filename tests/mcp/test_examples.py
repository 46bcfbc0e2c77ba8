"""The quickstart's two demo MCP servers work through the gateway: `time` launched over stdio from its registry
entry, `docs` over Streamable HTTP with the registry's bearer token (served here on a free loopback port)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.mcp.support import mcp_client, registry
from tests.support import gateway, serve

SERVERS = Path(__file__).resolve().parents[2] / "examples" / "servers"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", SERVERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_quickstart_time_and_docs_servers_answer_through_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCS_TOKEN", "example-token")
    docs = load("docs_server")
    time_entry = {
        "name": "time",
        "transport": "stdio",
        "command": [sys.executable, str(SERVERS / "time_server.py")],
        "env": {"TZ": "Asia/Tokyo"},
        "timeout_s": 30,
    }
    async with serve(docs.app) as up:
        docs_entry = {
            "name": "docs",
            "url": f"{up}/mcp",
            "headers": {"Authorization": "Bearer example-token"},
            "tools": {"rename": {"search_docs": "search"}},
        }
        async with gateway(tmp_path, registry(time_entry, docs_entry)) as (url, _):
            async with mcp_client(f"{url}/mcp", mode="2026-07-28") as client:
                names = [t.name for t in (await client.list_tools()).tools]
                now = await client.call_tool("time__get_current_time", {})
                found = await client.call_tool("docs__search", {"query": "budget"})
                index = await client.read_resource("agentgw://docs/docs://index")
    assert names == [
        "docs__read_doc",
        "docs__search",
        "time__convert_time",
        "time__get_current_time",
    ]
    assert now.structured_content is not None and now.structured_content["timezone"] == "Asia/Tokyo"
    assert found.structured_content == {"result": ["budgets"]}
    assert "getting-started" in index.contents[0].text  # type: ignore[union-attr]
