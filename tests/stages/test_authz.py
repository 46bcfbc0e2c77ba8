"""The authz stage's answer to a denial, whatever the plane: the plane's unknown-target error (so a future plane,
A2A included, inherits the concealment by naming its error), a plain 404 when it names none, a 403 with
`reveal_denied`; the Exchange keeps the real 403 for the record either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgw.budget.config import Budgets
from agentgw.budget.memory import MemoryLedger
from agentgw.errors import GatewayError, NotFound
from agentgw.exchange import Exchange, Principal, Result, task_from_headers
from agentgw.keys import KeyStore
from agentgw.pipeline import Pipeline
from agentgw.policy import PolicyStore
from agentgw.settings import Settings
from agentgw.stages import default_stages
from agentgw.stages.authn import Authenticator
from agentgw.stages.authz import AuthzStage
from agentgw.stages.budget import BudgetStage
from tests.support import POLICIES


class UnknownAgent(NotFound):
    code = "agent_not_found"


async def mediate(reveal: bool, unseen: GatewayError | None) -> tuple[GatewayError, Exchange]:
    store = PolicyStore(POLICIES / "model.conf", POLICIES / "policy.csv")
    assert store.load()
    ex = Exchange("a2a", "SendMessage", "a2a:planner", {})
    ex.principal = Principal("ivy", ("interns",))  # interns may call no agent
    ex.unseen = unseen

    async def forward(ex: Exchange) -> Result:
        raise AssertionError("a denied call is never forwarded")

    with pytest.raises(GatewayError) as raised:
        await Pipeline([AuthzStage(store, reveal_denied=reveal)]).run(ex, forward)
    return raised.value, ex


@pytest.mark.parametrize(
    ("reveal", "unseen", "answer"),
    [
        (False, UnknownAgent("Unknown agent: planner"), (404, "agent_not_found", "Unknown agent: planner")),
        (False, None, (404, "not_found", "Not found.")),
        (
            True,
            UnknownAgent("Unknown agent: planner"),
            (403, "permission_denied", "ivy may not call a2a:planner."),
        ),
    ],
)
async def test_a_denial_is_answered_as_the_planes_unknown_target_and_recorded_as_a_denial(
    reveal: bool, unseen: GatewayError | None, answer: tuple[int, str, str]
) -> None:
    shown, ex = await mediate(reveal, unseen)
    assert (shown.status, shown.code, shown.message) == answer
    assert ex.error is not None and (ex.error.status, ex.error.code) == (403, "permission_denied")
    assert ex.status == "denied"
    [decision] = [d for d in ex.decisions if d.stage == "authz"]
    assert (decision.outcome, decision.rule) == ("deny", "default deny")
    assert decision.detail == (None if reveal else f"answered as {answer[1]} (authz.reveal_denied: false)")


@pytest.mark.parametrize("effect", ["approve", "confirm"])
async def test_an_approve_or_confirm_line_holds_the_call_for_the_next_stage(
    tmp_path: Path, effect: str
) -> None:
    (tmp_path / "policy.csv").write_text(
        f"p, role:agents, mcp:*, call, allow\np, role:agents, mcp:fs/rm, call, {effect}\n"
    )
    store = PolicyStore(POLICIES / "model.conf", tmp_path / "policy.csv")
    assert store.load()
    ex = Exchange("mcp", "tools/call", "mcp:fs/rm", {})
    ex.principal = Principal("bot", ("agents",))
    await AuthzStage(store).on_request(ex)
    rule = f"policy.csv:2: p, role:agents, mcp:fs/rm, call, {effect}"
    assert [(d.stage, d.outcome, d.rule) for d in ex.decisions] == [("authz", "hold", rule)]
    assert ex.attrs["hold"] == {"effect": effect, "rule": rule, "line": 2}


def test_check_decides_a_call_with_its_arguments_without_an_exchange(tmp_path: Path) -> None:
    (tmp_path / "policy.csv").write_text(
        'p, role:agents, mcp:web/fetch, call, allow, url(args.url).host in ["example.com"]\n'
    )
    store = PolicyStore(POLICIES / "model.conf", tmp_path / "policy.csv")
    assert store.load()
    authz = AuthzStage(store)
    bot = Principal("bot", ("agents",))
    ok = authz.check(bot, "mcp:web/fetch", "call", {"url": "https://EXAMPLE.com./a"})
    assert (ok.allowed, ok.effect, ok.line) == (True, "allow", 1)
    refused = authz.check(bot, "mcp:web/fetch", "call", {"url": "https://example.com@evil.com/"})
    assert (refused.allowed, refused.rule, refused.unmet) == (False, None, (1,))
    missing = authz.check(bot, "mcp:web/fetch", "call", {})
    assert not missing.allowed and missing.errors
    assert authz.allows(bot, "mcp:web/fetch")  # listed: callable with some arguments


async def test_conditions_see_the_task_limits_of_the_principals_budget_rule(tmp_path: Path) -> None:
    (tmp_path / "policy.csv").write_text(
        "p, role:agents, a2a:*, call, allow, task.limits.agent_calls <= 5 && task.id == 'job'\n"
    )
    store = PolicyStore(POLICIES / "model.conf", tmp_path / "policy.csv")
    assert store.load()
    rules = {"rules": [{"match": {"roles": ["agents"]}, "task": {"agent_calls": 10}}]}
    budget = BudgetStage(Budgets.model_validate(rules), MemoryLedger(), {}, {})
    [_, authz, _, _, _] = default_stages(
        None, Authenticator(KeyStore(Settings())), store, budget
    )  # authn authz route hold budget
    assert isinstance(authz, AuthzStage)

    def call(headers: dict[str, str]) -> Exchange:
        ex = Exchange("a2a", "SendMessage", "a2a:planner", {"x-agentgw-task": "job", **headers})
        ex.principal, ex.task = Principal("bot", ("agents",)), task_from_headers(ex.headers)
        return ex

    with pytest.raises(GatewayError):  # 10 agent calls: the condition does not hold
        await authz.on_request(call({}))
    lowered = call({"x-agentgw-budget-agent-calls": "3"})  # the client lowers its task's limit
    await authz.on_request(lowered)
    assert [d.outcome for d in lowered.decisions] == ["allow"]
