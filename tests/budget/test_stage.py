"""The budget stage on the real pipeline and both ledgers, for the planes that have no HTTP front yet: an A2A
agent call reserves one agent call, delegates under a fresh child task, is charged once it reached the agent,
releases when it did not, and is refused with budget_exhausted when the task (or, for the agent calling back
with its child id, the parent) has no agent calls left."""

from __future__ import annotations

import pytest

from agentgw.budget.config import Budgets
from agentgw.budget.ledger import Ledger
from agentgw.errors import GatewayError, UpstreamError
from agentgw.exchange import Attempt, Exchange, Principal, Result, task_from_headers
from agentgw.pipeline import Pipeline
from agentgw.stages.budget import BudgetStage
from tests.budget.test_ledger import ledger  # noqa: F401 - the memory and Redis ledger fixture

AGENT = Principal("tester", ("agents",))
DOWNSTREAM = Principal("planner-agent", ("agents",))


def agent_call(principal: Principal, task: str) -> Exchange:
    headers = {"x-agentgw-task": task}
    ex = Exchange("a2a", "SendMessage", "a2a:planner", headers, "127.0.0.1")
    ex.principal, ex.task = principal, task_from_headers(headers)
    return ex


async def test_an_a2a_agent_call_is_budgeted_as_one_agent_call_under_a_child_task(
    ledger: Ledger,  # noqa: F811
) -> None:
    rules = {"rules": [{"match": {"roles": ["agents"]}, "task": {"agent_calls": 2}}]}
    stage = BudgetStage(Budgets.model_validate(rules), ledger, {}, {})
    pipeline = Pipeline([stage])
    sent: list[str | None] = []

    async def reaches_the_agent(ex: Exchange) -> Result:
        sent.append(ex.outbound_task)  # the task id the A2A plane sends upstream
        ex.attempts.append(Attempt(1, ex.target, "ok", 200))
        return Result(body=b"{}")

    async def never_reaches_it(ex: Exchange) -> Result:
        raise UpstreamError("The agent is down.")

    first = agent_call(AGENT, "job")
    await pipeline.run(first, reaches_the_agent)
    with pytest.raises(UpstreamError):
        await pipeline.run(agent_call(AGENT, "job"), never_reaches_it)  # released, not charged
    await pipeline.run(agent_call(AGENT, "job"), reaches_the_agent)
    with pytest.raises(GatewayError) as refused:
        await pipeline.run(agent_call(AGENT, "job"), reaches_the_agent)
    child = sent[0]
    assert child is not None and child.startswith("c-") and sent[1] != child
    with pytest.raises(GatewayError) as callback:  # the planner delegates further with the child id it got
        await pipeline.run(agent_call(DOWNSTREAM, child), reaches_the_agent)
    assert len(sent) == 2  # neither refused call reached an agent
    assert (refused.value.status, refused.value.code) == (429, "budget_exhausted")
    assert refused.value.headers == {"x-agentgw-budget-remaining-agent-calls": "0"}
    assert callback.value.code == "budget_exhausted" and "a parent task" in callback.value.message
    st = await ledger.state("tester/job")
    assert st is not None and (st.spent, st.reserved) == ({"agent_calls": 2}, {"agent_calls": 0})
    kid = await ledger.state(f"~child/{child}")
    assert kid is not None and kid.chain == ["tester/job"]
    children = await ledger.children("tester/job")
    assert len(children) == 3  # every granted reservation opened a child, the failed attempt's included
    assert {f"~child/{c}" for c in sent} <= set(children)
    assert first.decisions[0].rule == "task tester/job"
