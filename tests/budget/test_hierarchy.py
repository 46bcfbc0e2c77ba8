"""A task's budget spans agents: parent → child → grandchild across MCP tools whose server calls back into
the gateway. Every LLM token and tool call lands on the task that spent it and on every ancestor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from mcp.server.mcpserver import Context, MCPServer

from tests.budget.test_budgets import REGISTRY
from tests.mcp.support import mcp_client, server_entry
from tests.support import TEST_KEY, gateway, serve, sha

DOWN_KEY = "agw-downstream-key-0123456789"


def helper_server(gw: dict[str, str], seen: dict[str, list[str]]) -> MCPServer:
    """An MCP server whose tools are agents themselves: they call back into the gateway with the task id the
    gateway gave them, and their own credential."""
    mcp = MCPServer(name="helper")

    @mcp.tool(description="Ask the LLM through the gateway")
    async def ask(prompt: str, ctx: Context) -> str:
        task = (ctx.headers or {}).get("x-agentgw-task", "")
        seen.setdefault("ask", []).append(task)
        async with httpx.AsyncClient() as c:
            r = await c.post(
                f"{gw['url']}/v1/chat/completions",
                json={"model": "echo", "max_tokens": 10, "messages": [{"role": "user", "content": prompt}]},
                headers={"authorization": f"Bearer {DOWN_KEY}", "x-agentgw-task": task},
            )
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"])

    @mcp.tool(description="Delegate to another agent through the gateway")
    async def delegate(prompt: str, ctx: Context) -> str:
        task = (ctx.headers or {}).get("x-agentgw-task", "")
        seen.setdefault("delegate", []).append(task)
        async with mcp_client(
            f"{gw['url']}/mcp", mode="2026-07-28", key=DOWN_KEY, headers={"x-agentgw-task": task}
        ) as client:
            result = await client.call_tool("helper__ask", {"prompt": prompt})
        return str(result.content[0].text)  # type: ignore[union-attr]

    return mcp


async def test_parent_child_and_grandchild_tasks_all_charge_their_ancestors(tmp_path: Path) -> None:
    gw: dict[str, str] = {}
    seen: dict[str, list[str]] = {}
    server = helper_server(gw, seen)
    app_up = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    settings: dict[str, Any] = {
        "auth": {
            "api_keys": [
                {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
                {"subject": "downstream", "roles": ["agents"], "sha256": sha(DOWN_KEY)},
            ]
        },
        "budgets": {
            "rules": [{"match": {"roles": ["agents"]}, "task": {"tokens": 10_000, "tool_calls": 10}}]
        },
    }
    async with serve(app_up) as up:
        registry = {**REGISTRY, "mcp": {"servers": [server_entry("helper", up)]}}
        async with gateway(tmp_path, registry, settings) as (url, app):
            gw["url"] = url
            async with mcp_client(
                f"{url}/mcp", mode="2026-07-28", headers={"x-agentgw-task": "root"}
            ) as agent:
                result = await agent.call_tool("helper__delegate", {"prompt": "deep question"})
            assert app.ledger is not None
            root = await app.ledger.state("tester/root")
            child = await app.ledger.state(f"~child/{seen['delegate'][0]}")
            grandchild = await app.ledger.state(f"~child/{seen['ask'][0]}")
            root_children = await app.ledger.children("tester/root")
    assert result.content[0].text == "deep question"  # type: ignore[union-attr]
    child_id, grandchild_id = seen["delegate"][0], seen["ask"][0]
    assert child_id.startswith("c-") and grandchild_id.startswith("c-") and child_id != grandchild_id
    assert root is not None and child is not None and grandchild is not None
    assert child.chain == ["tester/root"]
    assert grandchild.chain == [f"~child/{child_id}", "tester/root"]
    assert root_children == [f"~child/{child_id}"]
    llm_tokens = grandchild.spent["tokens"]
    assert llm_tokens == 10  # 8 prompt + 2 output ("deep question" echoed), spent by the grandchild's agent
    assert child.spent == {"tokens": llm_tokens, "tool_calls": 1}  # its agent's tool call (ask)
    assert root.spent == {"tokens": llm_tokens, "tool_calls": 2}  # delegate + ask: everything below it
    assert root.reserved.get("tokens", 0) == root.reserved.get("tool_calls", 0) == 0
