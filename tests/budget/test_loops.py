"""A task can never be its own ancestor: naming itself or a descendant as parent is refused with 400
`task_parent_loop` and charges nothing, and each ledger refuses a looping chain atomically, even one made by
calls that raced (each naming the other as parent before either existed). Both ledgers (Redis: the real server)."""

from __future__ import annotations

import pytest

from agentgw.budget.config import Budgets
from agentgw.budget.ledger import Ledger, Loop, Reservation
from agentgw.errors import GatewayError
from agentgw.exchange import Attempt, Exchange, Principal, Result, task_from_headers
from agentgw.pipeline import Pipeline
from agentgw.stages.budget import BudgetStage
from tests.budget.test_ledger import ledger  # noqa: F401 - the memory and Redis ledger fixture

AGENT = Principal("tester", ("agents",))
RULES = {"rules": [{"match": {"roles": ["agents"]}, "task": {"agent_calls": 10}}]}


def agent_call(task: str, parent: str | None = None) -> Exchange:
    headers = {"x-agentgw-task": task, **({"x-agentgw-parent-task": parent} if parent else {})}
    ex = Exchange("a2a", "message/send", "a2a:planner", headers, "127.0.0.1")
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
    err = await refused(pipeline, agent_call("job", parent="job"))
    assert (err.status, err.code) == (400, "task_parent_loop")
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
