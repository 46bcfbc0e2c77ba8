"""A multi-step agent workflow, audited end to end: an agent (the `openai` SDK and the `mcp` SDK) makes LLM calls
and tool calls under one task; one tool's server is an agent itself and calls back into the gateway's LLM plane
under the child task it was given; one tool call is denied. The trace tree, from the admin API and from
`agentgw trace show`, has every step in order, with parentage, usage, cost and the denial."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import orjson
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError

from tests.budget.test_hierarchy import DOWN_KEY, helper_server
from tests.mcp.support import mcp_client, server_entry
from tests.support import TEST_KEY, gateway, serve, sha

AGENTGW = str(Path(sys.executable).parent / "agentgw")
ADMIN_KEY = "agw-admin-key-0123456789"
PRICING = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
KEYS = {
    "api_keys": [
        {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
        {"subject": "downstream", "roles": ["agents"], "sha256": sha(DOWN_KEY)},
        {"subject": "auditor", "roles": ["admins"], "sha256": sha(ADMIN_KEY)},
    ]
}
STEP_KINDS = ("chat", "tools/call")  # the agent's own steps (listings such as tools/list are recorded too)


def tools_server(gw: dict[str, str]) -> MCPServer:
    server = helper_server(gw, {})

    @server.tool(description="Ask the LLM through the gateway, propagating W3C trace context as OTel would")
    async def ask_traced(prompt: str, ctx: Context) -> str:
        headers = ctx.headers or {}
        async with httpx.AsyncClient() as c:
            r = await c.post(
                f"{gw['url']}/v1/chat/completions",
                json={"model": "echo", "messages": [{"role": "user", "content": prompt}]},
                headers={
                    "authorization": f"Bearer {DOWN_KEY}",
                    "x-agentgw-task": headers.get("x-agentgw-task", ""),
                    "traceparent": headers.get("traceparent", ""),
                },
            )
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"])

    @server.tool(description="Delete everything (tagged dangerous: agents may not call it)")
    def wipe() -> str:
        return "wiped"

    return server


def registry(up: str) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [{"name": "mock", "kind": "mock"}],
            "models": [
                {"name": "echo", "pricing": PRICING, "targets": [{"provider": "mock", "model": "echo-1"}]}
            ],
        },
        "mcp": {"servers": [server_entry("helper", up, tools={"tags": {"wipe": ["dangerous"]}})]},
    }


async def run_workflow(url: str, era: str) -> None:
    """The agent: think, use a tool (whose server asks the LLM itself), think again, try a forbidden tool."""
    task = {"x-agentgw-task": "wf-1"}
    llm = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0)
    async with llm:
        await llm.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "plan the job"}], extra_headers=task
        )
        async with mcp_client(f"{url}/mcp", mode=era, headers=task) as agent:
            result = await agent.call_tool("helper__ask", {"prompt": "what is in the docs"})
            assert result.content[0].text == "what is in the docs"  # type: ignore[union-attr]
            await llm.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "summarise"}], extra_headers=task
            )
            with pytest.raises(MCPError):
                await agent.call_tool("helper__wipe", {})


def agent_steps(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in node["steps"] if s["operation"] in STEP_KINDS]


def check_tree(tree: dict[str, Any]) -> None:
    assert (tree["task_id"], tree["principal"], tree["parent_task_id"]) == ("wf-1", "tester", None)
    steps = agent_steps(tree)
    assert [(s["plane"], s["operation"], s["target"], s["status"]) for s in steps] == [
        ("llm", "chat", "llm:echo", "ok"),
        ("mcp", "tools/call", "mcp:helper/ask", "ok"),
        ("llm", "chat", "llm:echo", "ok"),
        ("mcp", "tools/call", "mcp:helper/wipe", "denied"),
    ]
    assert [s["ts"] for s in steps] == sorted(s["ts"] for s in steps)
    first, ask, second, wipe = steps
    for chat in (first, second):
        assert chat["usage"]["input_tokens"] > 0 and chat["usage"]["output_tokens"] > 0
        expected = (chat["usage"]["input_tokens"] * 1.0 + chat["usage"]["output_tokens"] * 2.0) / 1e6
        assert chat["cost"]["usd"] == pytest.approx(expected)
        assert {"stage": "authz", "outcome": "allow"}.items() <= chat["decisions"][1].items()
    # The tool's server called back under the child task the gateway gave it: a child of this very step.
    [child] = ask["child_tasks"]
    assert child["task_id"] == ask["child_task_id"] and child["task_id"].startswith("c-")
    assert (child["principal"], child["parent_task_id"], child["parent_record_id"]) == (
        "downstream",
        "wf-1",
        ask["record_id"],
    )
    [callback] = agent_steps(child)
    assert (callback["operation"], callback["target"], callback["status"]) == ("chat", "llm:echo", "ok")
    assert callback["usage"]["output_tokens"] > 0
    assert ask["ts"] <= callback["ts"] <= ask["ts"] + ask["duration_ms"] / 1000
    # The denial, with the policy line that made it.
    assert wipe["error_code"] == "permission_denied"
    deny = [d for d in wipe["decisions"] if d["outcome"] == "deny"]
    assert deny and deny[0]["stage"] == "authz" and "tag:dangerous" in deny[0]["rule"]
    totals = tree["totals"]
    assert totals["denied"] == 1
    assert totals["input_tokens"] == sum(s["usage"]["input_tokens"] for s in (first, second, callback))
    assert totals["cost_usd"] > 0
    assert totals["charged"]["tool_calls"] == 1
    assert totals["charged"]["tokens"] == sum(s["charged"]["tokens"] for s in (first, second, callback))


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_the_trace_tree_of_a_workflow_shows_every_step_child_task_usage_and_denial(
    tmp_path: Path, era: str
) -> None:
    gw: dict[str, str] = {}
    settings = {
        "auth": KEYS,
        "budgets": {
            "rules": [{"match": {"roles": ["agents"]}, "task": {"tokens": 100_000, "tool_calls": 10}}]
        },
    }
    async with serve(
        tools_server(gw).streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    ) as up:
        async with gateway(tmp_path, registry(up), settings) as (url, app):
            gw["url"] = url
            with anyio.fail_after(60):
                await run_workflow(url, era)
            assert app.audit is not None
            await app.audit.flush()
            async with httpx.AsyncClient(base_url=url) as c:
                api = await c.get("/admin/tasks/wf-1", headers={"authorization": f"Bearer {ADMIN_KEY}"})
                listed = await c.get(
                    "/admin/tasks?denied=true", headers={"authorization": f"Bearer {ADMIN_KEY}"}
                )
                record = await c.get(
                    f"/admin/records/{api.json()['steps'][0]['record_id']}",
                    headers={"authorization": f"Bearer {ADMIN_KEY}"},
                )
                as_agent = await c.get("/admin/tasks/wf-1", headers={"authorization": f"Bearer {TEST_KEY}"})
    assert api.status_code == 200, api.text
    check_tree(api.json())
    assert [(t["task_id"], t["principal"], t["denied"]) for t in listed.json()["tasks"]] == [
        ("wf-1", "tester", 1)
    ]
    assert record.status_code == 200 and record.json()["seq"] >= 1 and len(record.json()["hash"]) == 64
    assert as_agent.status_code == 403 and "steps" not in as_agent.text
    # The same tree from the CLI, reading the store the gateway left behind.
    cfg = str(tmp_path / "agentgw.yaml")
    shown = await anyio.run_process([AGENTGW, "trace", "show", "wf-1", "--config", cfg, "--json"])
    check_tree(orjson.loads(shown.stdout))
    text = (await anyio.run_process([AGENTGW, "trace", "show", "wf-1", "--config", cfg])).stdout.decode()
    lines = text.splitlines()
    assert lines[0].startswith("task wf-1  principal tester") and "1 denied" in lines[0]
    order = [n for n, line in enumerate(lines) if "tools/call" in line or " chat " in line]
    assert "llm chat llm:echo  ok" in lines[order[0]] and "charged tokens " in lines[order[0]]
    # What the whole tree charged the task: its own steps and the child task's (the child paid it, and wf-1 too).
    assert "charged tokens " in lines[0] and "tool_calls 1" in lines[0]
    assert (
        "mcp tools/call mcp:helper/ask  ok" in lines[order[1]] and "charged tool_calls 1" in lines[order[1]]
    )
    assert "principal downstream  parent wf-1" in lines[order[1] + 1]
    assert "llm chat llm:echo  ok" in lines[order[2]]  # the downstream agent's callback, nested
    assert "mcp tools/call mcp:helper/wipe  denied permission_denied" in lines[order[-1]]
    verified = await anyio.run_process([AGENTGW, "audit", "verify", "--config", cfg])
    assert verified.stdout.decode().startswith("OK: ")


async def test_without_budgets_a_callback_carrying_the_traceparent_it_was_sent_is_a_child_of_the_step(
    tmp_path: Path,
) -> None:
    gw: dict[str, str] = {}
    async with serve(
        tools_server(gw).streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    ) as up:
        async with gateway(tmp_path, registry(up), {"auth": KEYS}) as (url, app):
            gw["url"] = url
            with anyio.fail_after(30):
                async with mcp_client(
                    f"{url}/mcp", mode="2026-07-28", headers={"x-agentgw-task": "wf-2"}
                ) as agent:
                    await agent.call_tool("helper__ask_traced", {"prompt": "hello"})
            assert app.audit is not None
            await app.audit.flush()
            async with httpx.AsyncClient(base_url=url) as c:
                auth = {"authorization": f"Bearer {ADMIN_KEY}"}
                tree = (await c.get("/admin/tasks/wf-2?principal=tester", headers=auth)).json()
                ambiguous = await c.get("/admin/tasks/wf-2", headers=auth)
    [step] = agent_steps(tree)
    assert (step["target"], step["child_task_id"]) == (
        "mcp:helper/ask_traced",
        None,
    )  # no budget: no child id
    [child] = step["child_tasks"]
    # The downstream agent reused the task id under its own principal: its own node, never mixed in.
    assert (child["task_id"], child["principal"], child["parent_record_id"]) == (
        "wf-2",
        "downstream",
        step["record_id"],
    )
    [callback] = child["steps"]
    # in the step's trace, under the span of the upstream attempt that carried the call
    [attempt] = step["attempts"]
    assert (callback["trace_id"], callback["parent_span_id"]) == (step["trace_id"], attempt["span_id"])
    assert ambiguous.status_code == 409 and ambiguous.json()["error"]["code"] == "ambiguous_task"
