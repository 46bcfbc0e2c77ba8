"""Ledger keys are injective: every component (subject, task id) is percent-encoded before it is joined, so a
subject or task id containing the separator can never name another principal's task. Both ledgers (Redis: the
real server on 127.0.0.1:6379)."""

from __future__ import annotations

import itertools

import pytest

from agentgw.budget.config import Budgets
from agentgw.budget.ledger import Ledger, child_key, key_part, task_key
from agentgw.errors import GatewayError
from agentgw.exchange import Attempt, Exchange, Principal, Result
from agentgw.pipeline import Pipeline
from agentgw.stages.budget import BudgetStage
from tests.budget.test_ledger import ledger  # noqa: F401 - the memory and Redis ledger fixture
from tests.budget.test_stage import agent_call

RULES = {"rules": [{"match": {"roles": ["agents"]}, "task": {"agent_calls": 1}}]}


async def reaches_the_agent(ex: Exchange) -> Result:
    ex.attempts.append(Attempt(1, ex.target, "ok", 200))
    return Result(body=b"{}")


async def test_a_subject_with_a_slash_never_spends_another_principals_task(
    ledger: Ledger,  # noqa: F811
) -> None:
    pipeline = Pipeline([BudgetStage(Budgets.model_validate(RULES), ledger, {}, {})])
    alice, alice_x = Principal("alice", ("agents",)), Principal("alice/x", ("agents",))
    await pipeline.run(agent_call(alice, "x/job"), reaches_the_agent)  # alice's only agent call
    await pipeline.run(agent_call(alice_x, "job"), reaches_the_agent)  # its own task: allowed
    with pytest.raises(GatewayError) as refused:
        await pipeline.run(agent_call(alice, "x/job"), reaches_the_agent)
    assert refused.value.code == "budget_exhausted"
    own = await ledger.state(task_key("alice", "x/job"))
    other = await ledger.state(task_key("alice/x", "job"))
    assert own is not None and own.spent == {"agent_calls": 1}
    assert other is not None and other.spent == {"agent_calls": 1}
    assert task_key("alice", "x/job") == "alice/x%2Fjob" and task_key("alice/x", "job") == "alice%2Fx/job"


async def test_a_subject_named_like_the_child_namespace_gets_a_task_of_its_own(
    ledger: Ledger,  # noqa: F811
) -> None:
    pipeline = Pipeline([BudgetStage(Budgets.model_validate(RULES), ledger, {}, {})])
    sneaky = Principal("~child", ("agents",))
    await pipeline.run(agent_call(sneaky, "c-0123"), reaches_the_agent)  # not a minted child: its own task
    assert await ledger.state(child_key("c-0123")) is None
    assert await ledger.state(task_key("~child", "c-0123")) is not None


def test_key_components_are_encoded_injectively_and_plain_ids_keep_their_keys() -> None:
    parts = ["alice", "alice/x", "x/job", "a%2Fb", "a/b", "%", "%25", "~child", "%7Echild", "a\nb", "job", ""]
    keys = {task_key(s, t): (s, t) for s, t in itertools.product(parts, parts)}
    assert len(keys) == len(parts) ** 2  # no two (subject, task) pairs share a key
    assert all("\n" not in k for k in keys)  # the Redis ledger joins chains with newlines
    for plain in ("alice", "alice@example.com", "job:42", "run-7 (retry)", "user~1"):
        assert key_part(plain) == plain  # existing keys of ordinary ids are unchanged
    assert task_key("spiffe://example.org/agent", "t") == "spiffe:%2F%2Fexample.org%2Fagent/t"
