"""Routing by content (`routes:` of a model alias) through the gateway: long prompts to the long-context model,
a role, a header or the request's metadata to another alias, decided before the budget so a task is charged and
refused at the price of the model actually used; rules that cannot work are refused when the registry loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest

from agentgw.registry import LLMSection
from tests.support import POLICIES, TEST_KEY, audit_records, gateway, sha

INTERN_KEY = "agw-test-intern-key-000000000000"
LONG = " ".join(f"word{i}" for i in range(300))


def registry(**auto: Any) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [{"name": "mock", "kind": "mock"}],
            "models": [
                {
                    "name": "auto",
                    "targets": [{"provider": "mock", "model": "default-1"}],
                    "routes": [
                        {"when": {"min_prompt_tokens": 200}, "model": "long"},
                        {"when": {"roles": ["interns"]}, "model": "small"},
                        {"when": {"headers": {"x-tier": "premium*"}}, "model": "premium"},
                        {"when": {"metadata": {"team": "research"}}, "model": "long"},
                    ],
                    **auto,
                },
                {
                    "name": "long",
                    "targets": [{"provider": "mock", "model": "long-1"}],
                    "pricing": {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000},
                },
                {"name": "small", "targets": [{"provider": "mock", "model": "small-1"}]},
                {"name": "premium", "targets": [{"provider": "mock", "model": "premium-1"}]},
            ],
        }
    }


SETTINGS: dict[str, Any] = {
    "auth": {
        "api_keys": [
            {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
            {"subject": "intern", "roles": ["interns"], "sha256": sha(INTERN_KEY)},
        ]
    }
}


def chat(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


async def answered_by(
    url: str, body: dict[str, Any], key: str = TEST_KEY, **headers: str
) -> tuple[int, str | None]:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(
            f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}", **headers}
        )
    return r.status_code, r.json().get("model") if r.status_code == 200 else r.json()["error"]["code"]


async def test_each_rule_sends_its_requests_to_its_model_and_the_rest_to_the_alias_own_targets(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, registry(), SETTINGS) as (url, _):
        plain = await answered_by(url, chat())
        long = await answered_by(url, chat(LONG))
        header = await answered_by(url, chat(), **{"x-tier": "premium-gold"})
        other_header = await answered_by(url, chat(), **{"x-tier": "basic"})
        meta = await answered_by(url, chat(metadata={"team": "research"}))
    assert plain == (200, "default-1")
    assert long == (200, "long-1")
    assert header == (200, "premium-1")
    assert other_header == (200, "default-1")
    assert meta == (200, "long-1")


async def test_the_first_matching_rule_wins_and_a_role_rule_routes_that_role(tmp_path: Path) -> None:
    reg = registry()
    policy = tmp_path / "policy.csv"
    policy.write_text("p, role:interns, llm:auto, call, allow\np, role:agents, llm:*, call, allow\n")
    settings = {**SETTINGS, "policies": {"model": str(POLICIES / "model.conf"), "policy": str(policy)}}
    async with gateway(tmp_path, reg, settings) as (url, _):
        intern = await answered_by(url, chat(), INTERN_KEY)
        intern_long = await answered_by(url, chat(LONG), INTERN_KEY)  # the long-prompt rule comes first
        agent = await answered_by(url, chat())
    # the intern may call `auto` only: the alias asked for is what authorization judges
    assert intern == (200, "small-1")
    assert intern_long == (200, "long-1")
    assert agent == (200, "default-1")


async def test_the_route_is_on_the_record_and_the_call_is_priced_as_the_model_it_went_to(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, registry(), SETTINGS) as (url, _):
        assert (await answered_by(url, chat(LONG)))[0] == 200
    rec = audit_records(tmp_path)[-1]
    assert rec["target"] == "llm:long"
    assert {"stage": "route", "outcome": "info", "rule": "auto.routes[0]", "detail": "to long"} in rec[
        "decisions"
    ]
    assert rec["cost"]["usd"] > 300  # long's price, 1 USD a token: the alias asked for has none


async def test_a_budget_reserves_at_the_price_of_the_routed_model_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    settings = {
        **SETTINGS,
        "budgets": {"rules": [{"match": {"roles": ["agents"]}, "task": {"usd": 50}}]},
    }
    async with gateway(tmp_path, registry(), settings) as (url, _):
        short = await answered_by(url, chat(max_tokens=5), **{"x-agentgw-task": "t1"})
        long = await answered_by(url, chat(LONG, max_tokens=5), **{"x-agentgw-task": "t2"})
    assert short == (200, "default-1")  # the alias's own target has no price: nothing to reserve
    assert long == (429, "budget_exhausted")  # 300+ prompt tokens at 1 USD each do not fit 50 USD
    attempts = audit_records(tmp_path)[-1]["attempts"]
    assert attempts == []  # refused before any upstream was called


async def test_an_alias_with_only_routes_serves_through_its_catch_all_rule(tmp_path: Path) -> None:
    reg = registry()
    auto = reg["llm"]["models"][0]
    auto["targets"] = []
    auto["routes"].append({"model": "small"})
    async with gateway(tmp_path, reg, SETTINGS) as (url, _):
        assert await answered_by(url, chat()) == (200, "small-1")
        assert await answered_by(url, chat(LONG)) == (200, "long-1")


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([{"name": "a", "routes": [{"model": "nowhere"}]}], "routes to unknown model 'nowhere'"),
        (
            [
                {"name": "a", "routes": [{"model": "b"}]},
                {"name": "b", "routes": [{"model": "c"}], "targets": [{"provider": "p", "model": "x"}]},
                {"name": "c", "targets": [{"provider": "p", "model": "x"}]},
            ],
            "which has routes of its own",
        ),
        (
            [
                {"name": "a", "routes": [{"when": {"roles": ["x"]}, "model": "c"}]},
                {"name": "c", "targets": [{"provider": "p", "model": "x"}]},
            ],
            "needs targets, or routes ending with one without `when`",
        ),
    ],
)
def test_rules_that_cannot_work_are_refused_when_the_registry_loads(
    models: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        LLMSection.model_validate({"models": models})
