"""A task can never be its own ancestor: naming itself or a descendant as parent is refused with 400
`task_parent_loop` and charges nothing, and each ledger refuses a looping chain atomically, even one made by
calls that raced (each naming the other as parent before either existed). Both ledgers (Redis: the real server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgw import create_app, load_settings
from agentgw.budget.config import Budgets
from agentgw.budget.ledger import Ledger, Loop, Reservation
from agentgw.errors import GatewayError
from agentgw.exchange import Attempt, Exchange, Principal, Result, task_from_headers
from agentgw.pipeline import Pipeline
from agentgw.stages.budget import BudgetStage
from tests.budget.test_budgets import REGISTRY, auth, budgets, chat, inproc
from tests.budget.test_ledger import ledger  # noqa: F401 - the memory and Redis ledger fixture
from tests.support import audit_records, write_config

AGENT = Principal("tester", ("agents",))
RULES = {"rules": [{"match": {"roles": ["agents"]}, "task": {"agent_calls": 10}}]}


def agent_call(task: str, parent: str | None = None) -> Exchange:
    headers = {"x-agentgw-task": task, **({"x-agentgw-parent-task": parent} if parent else {})}
    ex = Exchange("a2a", "SendMessage", "a2a:planner", headers, "127.0.0.1")
    ex.principal, ex.task = AGENT, task_from_headers(headers)
    return ex


async def reaches_the_agent(ex: Exchange) -> Result:
    ex.attempts.append(Attempt(1, ex.target, "ok", 200))
    return Result(body=b"{}")


async def refused(pipeline: Pipeline, ex: Exchange) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await pipeline.run(ex, reaches_the_agent)
    return caught.value


async def test_a_task_that_names_itself_as_parent_is_refused_and_charged_nothing(
    ledger: Ledger,  # noqa: F811
) -> None:
    pipeline = Pipeline([BudgetStage(Budgets.model_validate(RULES), ledger, {}, {})])
    ex = agent_call("job", parent="job")
    err = await refused(pipeline, ex)
    assert (err.status, err.code) == (400, "task_parent_loop")
    assert [(d.outcome, d.rule) for d in ex.decisions] == [("deny", "task tester/job: parent loop")]
    assert "job" in err.message
    assert await ledger.state("tester/job") is None


async def test_a_task_that_names_a_descendant_as_parent_is_refused_and_charged_nothing(
    ledger: Ledger,  # noqa: F811
) -> None:
    pipeline = Pipeline([BudgetStage(Budgets.model_validate(RULES), ledger, {}, {})])
    await pipeline.run(agent_call("root"), reaches_the_agent)
    await pipeline.run(agent_call("mid", parent="root"), reaches_the_agent)
    await pipeline.run(agent_call("leaf", parent="mid"), reaches_the_agent)
    err = await refused(pipeline, agent_call("root", parent="leaf"))
    assert (err.status, err.code) == (400, "task_parent_loop")
    root = await ledger.state("tester/root")
    assert root is not None and root.spent == {"agent_calls": 3}  # its own call and its two descendants'
    assert root.reserved == {"agent_calls": 0}
    leaf = await ledger.state("tester/leaf")
    assert leaf is not None and leaf.spent == {"agent_calls": 1}


async def test_the_ledger_refuses_a_chain_that_names_a_task_twice(ledger: Ledger) -> None:  # noqa: F811
    got = await ledger.reserve(["a", "b", "a"], {"tokens": 1}, {"tokens": 100})
    assert got == Loop("a")
    assert await ledger.state("a") is None and await ledger.state("b") is None  # nothing written


async def test_the_ledger_refuses_a_loop_made_by_calls_that_raced(ledger: Ledger) -> None:  # noqa: F811
    # Each call named its parent before the parent existed, so no caller could see the loop it was closing.
    assert isinstance(await ledger.reserve(["a", "b"], {"tokens": 1}, {"tokens": 100}), Reservation)
    assert isinstance(await ledger.reserve(["b", "c"], {"tokens": 1}, {"tokens": 100}), Reservation)
    assert await ledger.reserve(["c", "a"], {"tokens": 1}, {"tokens": 100}) == Loop("c")
    assert await ledger.reserve(["b", "a"], {"tokens": 1}, {}) == Loop("b")
    b, c = await ledger.state("b"), await ledger.state("c")
    assert b is not None and b.reserved == {"tokens": 2}  # its own reservation and a's, nothing refused
    assert c is not None and (c.reserved, c.limits) == ({"tokens": 1}, {})  # b's only: never opened itself


async def test_a_parent_loop_on_the_llm_plane_is_a_400_in_the_openai_envelope(tmp_path: Path) -> None:
    app = create_app(load_settings(write_config(tmp_path, REGISTRY, budgets({"tokens": 1000}))))
    async with inproc(app) as c:
        r = await c.post(
            "/v1/chat/completions",
            json=chat(max_tokens=5),
            headers=auth(task="job", **{"x-agentgw-parent-task": "job"}),
        )
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["code"], error["type"]) == ("task_parent_loop", "invalid_request_error")
    assert "its own ancestor" in error["message"]
    record = audit_records(tmp_path)[-1]
    assert (record["status"], record["error_code"], record["http_status"]) == (
        "error",
        "task_parent_loop",
        400,
    )
    assert {"stage": "budget", "outcome": "deny", "rule": "task tester/job: parent loop"} in record[
        "decisions"
    ]
