"""What a budget rule counts, through the gateway: weighted output tokens, USD from the registry's model prices,
per-principal token windows corrected to the real usage, embeddings by their input, MCP tool calls with the
registry's per-tool costs (refused with the MCP limit error), every client-lowering header, and `serve`
refusing the memory ledger with several workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from mcp.shared.exceptions import MCPError

from agentgw.budget.config import BudgetRule
from agentgw.cli import main
from agentgw.stages.budget import BudgetStage
from tests.budget.test_budgets import REGISTRY, auth, budgets, chat, spent
from tests.mcp.support import Upstream, mcp_client, modern_request, registry, server_entry
from tests.support import TEST_KEY, gateway, serve, write_config

PRICED: dict[str, Any] = {
    "llm": {
        "providers": [{"name": "mock", "kind": "mock"}],
        "models": [
            {
                "name": "echo",
                "targets": [{"provider": "mock", "model": "echo-1"}],
                "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},  # 1 and 2 micro-USD per token
            },
            {"name": "embed", "targets": [{"provider": "mock", "model": "embed-1"}]},
        ],
    }
}


async def test_weighted_output_tokens_are_reserved_and_charged_at_their_weight(tmp_path: Path) -> None:
    settings = budgets({"tokens": 200})
    settings["budgets"]["rules"][0]["weights"] = {"input": 1.0, "output": 4.0}
    async with gateway(tmp_path, REGISTRY, settings) as (url, app), httpx.AsyncClient() as c:
        r = await c.post(f"{url}/v1/chat/completions", json=chat(max_tokens=20), headers=auth(task="w"))
        assert await spent(app, "tester/w") == (7 + 4 * 1, 0)  # 7 prompt tokens, 1 output token × 4
    assert r.headers["x-agentgw-budget-remaining-tokens"] == str(200 - (7 + 4 * 20))


async def test_a_usd_limit_prices_each_call_from_the_registry(tmp_path: Path) -> None:
    settings = budgets({"usd": 0.0001})  # 100 micro-USD
    async with gateway(tmp_path, PRICED, settings) as (url, app), httpx.AsyncClient() as c:
        first = await c.post(f"{url}/v1/chat/completions", json=chat(max_tokens=20), headers=auth(task="u"))
        big = await c.post(f"{url}/v1/chat/completions", json=chat(max_tokens=60), headers=auth(task="u"))
        assert app.ledger is not None
        st = await app.ledger.state("tester/u")
    assert first.status_code == 200
    assert first.headers["x-agentgw-budget-remaining-usd"] == "0.000053"  # 100 - (7×1 + 20×2) reserved
    assert st is not None and st.spent["usd_micros"] == 7 * 1 + 1 * 2 and st.reserved["usd_micros"] == 0
    assert big.status_code == 429  # 7 + 60×2 = 127 micro-USD > the 91 left
    assert big.headers["x-agentgw-budget-remaining-usd"] == "0.000091"


async def test_a_token_window_counts_real_usage_across_tasks_and_says_when_to_retry(tmp_path: Path) -> None:
    settings = budgets({}, windows={"tokens_per_day": 30})
    async with gateway(tmp_path, REGISTRY, settings) as (url, _), httpx.AsyncClient() as c:
        replies = [
            await c.post(f"{url}/v1/chat/completions", json=chat(max_tokens=10), headers=auth(task=f"t{i}"))
            for i in range(3)
        ]
    # Each call counts its estimate (7 + 10 = 17), then is corrected to its real 8 tokens: 8 + 17 fits in 30,
    # 16 + 17 does not.
    assert [r.status_code for r in replies] == [200, 200, 429]
    assert replies[2].json()["error"]["code"] == "rate_limited"
    assert 1 <= int(replies[2].headers["retry-after"]) <= 86400


async def test_a_call_that_reserves_all_that_is_left_counts_only_its_real_usage_in_a_token_window(
    tmp_path: Path,
) -> None:
    settings = budgets({"tokens": 1000}, windows={"tokens_per_day": 30})
    async with gateway(tmp_path, REGISTRY, settings) as (url, _), httpx.AsyncClient() as c:
        replies = [
            await c.post(f"{url}/v1/chat/completions", json=chat(), headers=auth(task=f"r{i}"))
            for i in range(5)
        ]
    # No max_tokens: each call reserves its task's whole 1,000 tokens but counts 8 (7 + 1) in the window once
    # settled, so the window fills after three calls, not never.
    assert [r.status_code for r in replies] == [200, 200, 200, 429, 429]


async def test_embeddings_reserve_their_input_and_are_charged_the_providers_usage(tmp_path: Path) -> None:
    async with gateway(tmp_path, PRICED, budgets({"tokens": 20})) as (url, app), httpx.AsyncClient() as c:
        small = await c.post(
            f"{url}/v1/embeddings", json={"model": "embed", "input": "hello there"}, headers=auth(task="e")
        )
        large = await c.post(
            f"{url}/v1/embeddings", json={"model": "embed", "input": "word " * 40}, headers=auth(task="e")
        )
        used, reserved = await spent(app, "tester/e")
    assert small.status_code == 200 and large.status_code == 429
    assert (used, reserved) == (small.json()["usage"]["total_tokens"], 0)


async def test_tool_calls_past_the_tasks_limit_get_the_mcp_limit_error_and_tool_costs_are_charged(
    tmp_path: Path,
) -> None:
    settings = budgets({"tool_calls": 2, "tokens": 100})
    docs = Upstream("docs")
    async with serve(docs) as up:
        entry = server_entry("docs", up, tools={"costs": {"echo": 5}})
        async with gateway(tmp_path, registry(entry), settings) as (url, app):
            async with mcp_client(
                f"{url}/mcp", mode="2026-07-28", headers={"x-agentgw-task": "tools"}
            ) as mcp:
                await mcp.call_tool("docs__echo", {"text": "a"})
                await mcp.call_tool("docs__add", {"a": 1, "b": 2})
                with pytest.raises(MCPError) as refused:
                    await mcp.call_tool("docs__echo", {"text": "b"})
            assert app.ledger is not None
            st = await app.ledger.state("tester/tools")
    assert refused.value.code == -32012 and refused.value.data["code"] == "budget_exhausted"
    assert st is not None and st.spent == {"tool_calls": 2, "tokens": 5}  # echo costs 5 tokens, add nothing
    assert st.reserved == {"tool_calls": 0, "tokens": 0}


CONFIGURED = {"tokens": 1000, "tool_calls": 10, "agent_calls": 5, "usd_micros": 2_000_000}


@pytest.mark.parametrize(
    ("header", "value", "metric", "limit"),
    [
        ("x-agentgw-budget-tokens", "40", "tokens", 40),
        ("x-agentgw-budget-tool-calls", "3", "tool_calls", 3),
        ("x-agentgw-budget-agent-calls", "0", "agent_calls", 0),
        ("x-agentgw-budget-usd", "0.5", "usd_micros", 500_000),
        ("x-agentgw-budget-agent-calls", "99", "agent_calls", 5),  # higher than configured: ignored
        ("x-agentgw-budget-usd", "1e9", "usd_micros", 2_000_000),
    ],
)
def test_every_limit_can_be_lowered_by_its_header_and_none_raised(
    header: str, value: str, metric: str, limit: int
) -> None:
    rule = BudgetRule.model_validate(
        {"task": {"tokens": 1000, "tool_calls": 10, "agent_calls": 5, "usd": 2.0}}
    )
    assert BudgetStage.limits(rule, {header: value}) == {**CONFIGURED, metric: limit}


def test_serve_refuses_the_memory_ledger_with_several_workers(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, REGISTRY, budgets({"tokens": 10}))
    result = CliRunner().invoke(main, ["serve", "--config", str(cfg), "--workers", "2"])
    assert result.exit_code == 3
    assert "budgets.ledger: the memory ledger cannot be shared by 2 workers" in result.stderr


async def test_mcp_answers_say_what_the_task_has_left_and_the_refusal_says_it_too(tmp_path: Path) -> None:
    settings = budgets({"tool_calls": 1})
    docs = Upstream("docs")
    headers = {
        "Authorization": f"Bearer {TEST_KEY}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "docs__echo",
        "x-agentgw-task": "left",
    }
    call = modern_request("tools/call", {"name": "docs__echo", "arguments": {"text": "a"}})
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, _):
        async with httpx.AsyncClient(timeout=10) as http:
            first = await http.post(f"{url}/mcp", json=call, headers=headers)
            second = await http.post(f"{url}/mcp", json=call, headers=headers)
    assert first.status_code == 200 and first.headers["x-agentgw-budget-remaining-tool-calls"] == "0"
    error = second.json()["error"]
    assert error["code"] == -32012
    assert error["data"]["code"] == "budget_exhausted" and error["data"]["remaining"] == {"tool-calls": 0}
