"""Task chains are at most `budgets.max_task_depth` deep: a call whose task would sit deeper below its root is
refused with 400 `task_too_deep`, recorded as a budget deny, and charges nothing, so no caller can make one request
walk an unbounded chain of ancestors. Each ledger checks the depth atomically with the reservation, counting the
ancestors it has recorded. Both ledgers (Redis: the real server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agentgw import create_app, load_settings
from agentgw.budget.config import Budgets
from agentgw.budget.ledger import Ledger, Reservation, TooDeep
from agentgw.pipeline import Pipeline
from agentgw.stages.budget import BudgetStage
from tests.budget.test_budgets import REGISTRY, auth, budgets, chat, inproc
from tests.budget.test_ledger import ledger  # noqa: F401 - the memory and Redis ledger fixture
from tests.budget.test_loops import RULES, agent_call, reaches_the_agent, refused
from tests.support import audit_records, write_config


def stage(ledger: Ledger, depth: int) -> Pipeline:  # noqa: F811
    return Pipeline([BudgetStage(Budgets.model_validate({**RULES, "max_task_depth": depth}), ledger, {}, {})])


async def test_a_chain_exactly_as_deep_as_the_limit_works_and_one_more_level_is_refused_and_charged_nothing(
    ledger: Ledger,  # noqa: F811
) -> None:
    pipeline = stage(ledger, 3)
    await pipeline.run(agent_call("t0"), reaches_the_agent)
    for i in range(1, 4):  # t3 sits 3 below its root: exactly the limit
        await pipeline.run(agent_call(f"t{i}", parent=f"t{i - 1}"), reaches_the_agent)
    ex = agent_call("t4", parent="t3")
    err = await refused(pipeline, ex)
    assert (err.status, err.code) == (400, "task_too_deep")
    assert "max_task_depth" not in err.message and "3" in err.message
    assert [(d.outcome, d.rule) for d in ex.decisions] == [
        ("deny", "task tester/t4: depth 4 > max_task_depth 3")
    ]
    assert await ledger.state("tester/t4") is None
    root = await ledger.state("tester/t0")
    assert root is not None and (root.spent, root.reserved) == ({"agent_calls": 4}, {"agent_calls": 0})


async def test_the_ledger_refuses_a_chain_longer_than_the_limit_and_writes_nothing(
    ledger: Ledger,  # noqa: F811
) -> None:
    assert isinstance(
        await ledger.reserve(["c", "b", "a"], {"tokens": 1}, {"tokens": 9}, max_depth=2), Reservation
    )
    got = await ledger.reserve(["d", "c", "b", "a"], {"tokens": 1}, {"tokens": 9}, max_depth=2)
    assert got == TooDeep("d", 3)
    assert await ledger.state("d") is None
    a = await ledger.state("a")
    assert a is not None and a.reserved == {"tokens": 1}


async def test_the_ledger_counts_the_ancestors_it_recorded_not_only_the_chain_it_is_given(
    ledger: Ledger,  # noqa: F811
) -> None:
    # The caller read no ancestors for p (p did not exist yet), but by the time its call lands p sits 2 deep.
    assert isinstance(await ledger.reserve(["p", "a", "b"], {"tokens": 1}, {}, max_depth=2), Reservation)
    assert await ledger.reserve(["t", "p"], {"tokens": 1}, {}, max_depth=2) == TooDeep("t", 3)
    assert await ledger.state("t") is None
    p = await ledger.state("p")
    assert p is not None and p.reserved == {"tokens": 1}


def test_max_task_depth_is_at_least_one_and_sixteen_by_default() -> None:
    assert Budgets().max_task_depth == 16
    with pytest.raises(ValidationError):
        Budgets.model_validate({"max_task_depth": 0})


async def test_a_task_too_deep_on_the_llm_plane_is_a_400_in_the_openai_envelope_and_a_recorded_deny(
    tmp_path: Path,
) -> None:
    cfg = budgets({"tokens": 1000}, max_task_depth=1)
    app = create_app(load_settings(write_config(tmp_path, REGISTRY, cfg)))
    async with inproc(app) as c:
        ok = await c.post("/v1/chat/completions", json=chat(max_tokens=5), headers=auth(task="root"))
        assert ok.status_code == 200
        ok = await c.post(
            "/v1/chat/completions",
            json=chat(max_tokens=5),
            headers=auth(task="kid", **{"x-agentgw-parent-task": "root"}),
        )
        assert ok.status_code == 200
        r = await c.post(
            "/v1/chat/completions",
            json=chat(max_tokens=5),
            headers=auth(task="grandkid", **{"x-agentgw-parent-task": "kid"}),
        )
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["code"], error["type"]) == ("task_too_deep", "invalid_request_error")
    record = audit_records(tmp_path)[-1]
    assert (record["status"], record["error_code"], record["http_status"]) == ("error", "task_too_deep", 400)
    assert {
        "stage": "budget",
        "outcome": "deny",
        "rule": "task tester/grandkid: depth 2 > max_task_depth 1",
    } in record["decisions"]
