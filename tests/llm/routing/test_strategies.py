"""Routing strategies across a model's targets, under load through the gateway with targets of different latency
(in-process mock providers): round robin alternates, weighted follows the weights, least latency settles on the
fast target, least busy spreads concurrent calls, cost prefers the cheap one, and a target at its rpm or tpm limit
is skipped (429 when every one is)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx

from agentgw.llm.routing.strategies import TargetStats
from agentgw.registry import Target
from tests.support import TEST_KEY, gateway

AUTH = {"authorization": f"Bearer {TEST_KEY}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "route me"}]}


def registry(
    strategy: str, slow_ms: float = 40.0, quick_ms: float = 0.0, **targets: dict[str, Any]
) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [
                {"name": "quick", "kind": "mock", "mock": {"latency_ms": quick_ms}},
                {"name": "slow", "kind": "mock", "mock": {"latency_ms": slow_ms}},
            ],
            "models": [
                {
                    "name": "m",
                    "strategy": strategy,
                    "targets": [
                        {"provider": "slow", "model": "m-slow", **targets.get("slow", {})},
                        {"provider": "quick", "model": "m-quick", **targets.get("quick", {})},
                    ],
                }
            ],
        }
    }


async def served(url: str, n: int, concurrency: int = 1) -> Counter[str]:
    """Which target model answered each of `n` calls (at most `concurrency` at once; bounded in count and time)."""
    got: Counter[str] = Counter()
    limit = anyio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as c:

        async def one() -> None:
            async with limit:
                r = await c.post("/v1/chat/completions", json=CHAT)
                got[r.json()["model"] if r.status_code == 200 else str(r.status_code)] += 1

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)
    return got


async def test_round_robin_alternates_between_the_targets(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry("round_robin", slow_ms=0)) as (url, _):
        got = await served(url, 10)
    assert got == Counter({"m-slow": 5, "m-quick": 5})


async def test_weighted_sends_each_target_its_share(tmp_path: Path) -> None:
    reg = registry("weighted", slow_ms=0, slow={"weight": 1}, quick={"weight": 4})
    async with gateway(tmp_path, reg) as (url, _):
        got = await served(url, 200, concurrency=8)
    assert got["m-slow"] + got["m-quick"] == 200
    assert 0.65 <= got["m-quick"] / 200 <= 0.95  # 80 % expected; wide enough never to flake


async def test_least_latency_settles_on_the_fast_target(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry("least_latency")) as (url, _):
        got = await served(url, 20)
    assert (
        got["m-slow"] <= 1 and got["m-quick"] >= 19
    )  # one call measures the slow target, then the fast wins


async def test_least_busy_spreads_concurrent_calls(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry("least_busy", slow_ms=30, quick_ms=30)) as (url, _):
        got = await served(url, 20, concurrency=4)
    # equally fast targets, four calls at a time: each takes about half (failover would send all to the first)
    assert got["m-slow"] >= 5 and got["m-quick"] >= 5


async def test_cost_prefers_the_cheapest_target(tmp_path: Path) -> None:
    reg = registry("cost", slow_ms=0, slow={"cost_per_mtok": 0.5}, quick={"cost_per_mtok": 3.0})
    async with gateway(tmp_path, reg) as (url, _):
        got = await served(url, 5)
    assert got == Counter({"m-slow": 5})


async def test_a_target_at_its_rpm_limit_is_skipped_and_429_when_every_one_is(tmp_path: Path) -> None:
    reg = registry("failover", slow_ms=0, slow={"rpm": 2}, quick={"rpm": 1})
    async with gateway(tmp_path, reg) as (url, _), httpx.AsyncClient(base_url=url, headers=AUTH) as c:
        answers = [await c.post("/v1/chat/completions", json=CHAT) for _ in range(4)]
        registry_view = await c.get("/v1/models")
    assert [a.json().get("model") for a in answers[:3]] == ["m-slow", "m-slow", "m-quick"]
    assert answers[3].status_code == 429 and answers[3].json()["error"]["code"] == "upstream_rate_limited"
    assert registry_view.status_code == 200


async def test_a_target_at_its_tpm_limit_is_skipped(tmp_path: Path) -> None:
    reg = registry("failover", slow_ms=0, slow={"tpm": 10})
    async with gateway(tmp_path, reg) as (url, _):
        got = await served(url, 3)
    assert got["m-slow"] == 1 and got["m-quick"] == 2  # the first call used up the slow target's minute


def test_the_last_minutes_calls_and_tokens_are_kept_in_seconds_with_exact_totals() -> None:
    st = TargetStats()
    limited = Target(provider="p", model="m", rpm=1000, tpm=10_000)
    for second in range(120):  # two minutes of 10 calls a second, 7 tokens each
        for _ in range(10):
            st.add(1000.0 + second + 0.5, 1, 7)
    st.trim(1000.0 + 120)
    assert len(st.buckets) <= 61  # memory bounded by seconds, not calls
    assert st.calls == sum(b[1] for b in st.buckets) and st.tokens == sum(b[2] for b in st.buckets)
    assert 600 <= st.calls <= 610  # the last minute's calls
    assert st.at_limit(limited, 1000.0 + 120) is False
    for _ in range(400):
        st.add(1000.0 + 120.5, 1, 7)
    assert st.at_limit(limited, 1000.0 + 120.5) is True  # 1,000 calls in the last minute
    st.trim(1000.0 + 300)
    assert (st.calls, st.tokens, len(st.buckets)) == (0, 0, 0)
