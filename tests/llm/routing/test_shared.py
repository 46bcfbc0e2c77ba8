"""Routing state shared through Redis by gateways of one fleet: an rpm limit holds across them, least_latency on one
gateway starts from what another measured, a gateway that stops no longer counts, and a Redis that fails leaves
each gateway routing on its own numbers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx

from agentgw.app import Gateway
from tests.budget.test_budgets import REDIS_URL
from tests.support import TEST_KEY, drop_redis_keys, free_port, gateway

AUTH = {"authorization": f"Bearer {TEST_KEY}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "route me"}]}


def registry(strategy: str, **slow: Any) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [
                {"name": "quick", "kind": "mock"},
                {"name": "slow", "kind": "mock", "mock": {"latency_ms": 40}},
            ],
            "models": [
                {
                    "name": "m",
                    "strategy": strategy,
                    "targets": [
                        {"provider": "slow", "model": "m-slow", **slow},
                        {"provider": "quick", "model": "m-quick"},
                    ],
                }
            ],
        }
    }


@asynccontextmanager
async def fleet(
    tmp: Path, reg: dict[str, Any], url: str = REDIS_URL
) -> AsyncIterator[tuple[tuple[str, Gateway], tuple[str, Gateway]]]:
    """Two gateways whose routing state is shared through Redis (the sync loop is slow: the tests sync by hand)."""
    prefix = f"agw-test-{uuid.uuid4().hex[:8]}"
    settings = {
        "llm": {"routing": {"state": "redis", "redis_url": url, "sync_s": 60}},
        "budgets": {"key_prefix": prefix},
    }
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    try:
        async with gateway(tmp / "a", reg, settings) as a, gateway(tmp / "b", reg, settings) as b:
            yield a, b
    finally:
        await drop_redis_keys(REDIS_URL, prefix)


async def sync(*apps: Gateway) -> None:
    for app in apps:
        assert app.llm.routing_sync is not None
        await app.llm.routing_sync.sync()


async def answer(url: str) -> str:
    async with httpx.AsyncClient(headers=AUTH, timeout=10) as c:
        r = await c.post(f"{url}/v1/chat/completions", json=CHAT)
    return str(r.json()["model"]) if r.status_code == 200 else r.json()["error"]["code"]


async def test_an_rpm_limit_holds_across_gateways_once_they_have_synced(tmp_path: Path) -> None:
    reg = registry("failover", rpm=3)
    reg["llm"]["models"][0]["targets"].pop()  # only the limited target
    with anyio.fail_after(30):
        async with fleet(tmp_path, reg) as ((url_a, a), (url_b, b)):
            on_a = [await answer(url_a) for _ in range(3)]
            before = await answer(url_b)  # b has not heard of a's calls yet: its own count is 0
            await sync(a, b)
            after = await answer(url_b)  # 3 on a + 1 on b: at the limit
            report = b.llm.router.routing.of("slow/m-slow").report()
    assert on_a == ["m-slow"] * 3 and before == "m-slow"
    assert after == "upstream_rate_limited"
    assert report["others"] == {
        "processes": 1, "calls_last_minute": 3, "tokens_last_minute": report["others"]["tokens_last_minute"],
        "in_flight": 0, "latency_ms": report["others"]["latency_ms"], "error_rate": 0.0,
    }  # fmt: skip


async def test_least_latency_starts_from_what_another_gateway_measured(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with fleet(tmp_path, registry("least_latency")) as ((url_a, a), (url_b, b)):
            learned = [await answer(url_a) for _ in range(3)]  # each untried target once, then the quick one
            await sync(a, b)
            first_on_b = await answer(url_b)
    assert learned == ["m-slow", "m-quick", "m-quick"]
    assert first_on_b == "m-quick"  # alone, b would try the first listed (slow) target to measure it


async def test_a_gateway_that_stops_no_longer_counts_for_the_others(tmp_path: Path) -> None:
    reg = registry("failover")
    prefix = f"agw-test-{uuid.uuid4().hex[:8]}"
    settings = {
        "llm": {"routing": {"state": "redis", "redis_url": REDIS_URL, "sync_s": 60}},
        "budgets": {"key_prefix": prefix},
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        with anyio.fail_after(30):
            async with gateway(tmp_path / "b", reg, settings) as (_, b):
                async with gateway(tmp_path / "a", reg, settings) as (url_a, a):
                    await answer(url_a)
                    await sync(a, b)
                    while_up = b.llm.router.routing.of("slow/m-slow").report()["others"]["processes"]
                await sync(b)
                after = b.llm.router.routing.of("slow/m-slow").report()["others"]["processes"]
    finally:
        await drop_redis_keys(REDIS_URL, prefix)
    assert (while_up, after) == (1, 0)


async def test_a_redis_that_fails_leaves_each_gateway_routing_on_its_own_numbers(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with anyio.fail_after(30):
        async with fleet(tmp_path, registry("least_latency"), url=dead) as ((url_a, a), (_, b)):
            await sync(a, b)
            answers = [await answer(url_a) for _ in range(3)]
            await sync(a, b)  # does not raise
            others = a.llm.router.routing.of("slow/m-slow").others
    assert answers == ["m-slow", "m-quick", "m-quick"]
    assert others is None
