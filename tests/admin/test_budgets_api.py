"""`GET /admin/budgets` on a real gateway, with the memory ledger and with the real Redis on 127.0.0.1:6379 (a
failure under CI=true, never a skip): a task's reservation while its stream is in flight, its spending once it
settled, its parent, the principal's rate windows, a principal filter, the `limit` bound; 404 `no_budgets` without
budgets; only admins read it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentgw.app import Gateway
from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, gateway, serve, sha
from tests.upstreams import FakeOpenAI

REDIS_URL = os.environ.get("AGENTGW_TEST_REDIS", "redis://127.0.0.1:6379/15")
ADMIN_KEY = "agw-admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
KEYS = [
    {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
    {"subject": "other/bot", "roles": ["agents"], "sha256": sha(OTHER_KEY)},
    {"subject": "root", "roles": ["admins"], "sha256": sha(ADMIN_KEY)},
]
RULE = {
    "match": {"roles": ["agents"]},
    "task": {"tokens": 10_000, "tool_calls": 5},
    "windows": {"requests_per_minute": 100, "tokens_per_day": 1_000_000},
}


def registry(llm: str) -> dict[str, Any]:
    providers = [
        *MOCK_REGISTRY["llm"]["providers"],
        {"name": "up", "kind": "openai", "base_url": f"{llm}/v1"},
    ]
    models = [
        *MOCK_REGISTRY["llm"]["models"],
        {"name": "slow", "targets": [{"provider": "up", "model": "s-1"}]},
    ]
    return {"llm": {"providers": providers, "models": models}}


def who(key: str, task: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "x-agentgw-task": task, **extra}


def chat(model: str = "mock-fast", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], **extra}


async def redis_or_skip(prefix: str) -> None:
    """The real Redis must answer (under CI=true its absence fails the test)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI and is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    finally:
        await client.aclose()


async def drop_keys(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def budgeted(tmp: Path, ledger: str, llm: str) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    budgets: dict[str, Any] = {"rules": [RULE], "ledger": ledger}
    prefix = f"agwtest-{uuid.uuid4().hex[:8]}"
    if ledger == "redis":
        await redis_or_skip(prefix)
        budgets |= {"redis_url": REDIS_URL, "key_prefix": prefix}
    try:
        settings = {"auth": {"api_keys": KEYS}, "budgets": budgets}
        async with gateway(tmp, registry(llm), settings) as (url, app):
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                yield c, app
    finally:
        if ledger == "redis":
            await drop_keys(prefix)


async def listing(c: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    r = await c.get("/admin/budgets", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


def task(body: dict[str, Any], task_id: str, principal: str | None) -> dict[str, Any]:
    (found,) = [t for t in body["tasks"] if (t["task"], t["principal"]) == (task_id, principal)]
    return found


@pytest.mark.parametrize("ledger", ["memory", "redis"])
async def test_budgets_list_a_task_reserved_in_flight_then_spent_with_its_parent_and_rate_windows(
    tmp_path: Path, ledger: str
) -> None:
    upstream = FakeOpenAI(chunk_gate=anyio.Event())
    async with serve(upstream.app()) as llm, budgeted(tmp_path, ledger, llm) as (c, _):
        assert (
            await c.post("/v1/chat/completions", json=chat(), headers=who(TEST_KEY, "root-job"))
        ).status_code == 200
        headers = who(TEST_KEY, "step-1", **{"x-agentgw-parent-task": "root-job"})
        with anyio.fail_after(20):
            async with c.stream(
                "POST", "/v1/chat/completions", json=chat("slow", stream=True), headers=headers
            ) as r:
                assert r.status_code == 200
                lines = r.aiter_lines()
                assert (await anext(lines)).startswith(
                    "data: "
                )  # the first chunk: the call holds its reservation
                during = await listing(c)
                upstream.chunk_gate.set()  # type: ignore[union-attr]
                async for _ in lines:
                    pass
        r = await c.post("/v1/chat/completions", json=chat(), headers=who(OTHER_KEY, "root-job"))
        assert r.status_code == 200
        after = await listing(c)
        mine = await listing(c, principal="tester")
        theirs = await listing(c, principal="other/bot")
        one = await listing(c, limit="1")

    assert (during["ledger"], after["ledger"]) == (ledger, ledger)
    held = task(during, "step-1", "tester")
    assert held["reserved"]["tokens"] > 0 and held["parents"] == ["tester/root-job"]
    assert task(during, "root-job", "tester")["reserved"]["tokens"] == held["reserved"]["tokens"]
    step, root = task(after, "step-1", "tester"), task(after, "root-job", "tester")
    assert (step["key"], step["limits"]) == ("tester/step-1", {"tokens": 10_000, "tool_calls": 5})
    assert step["spent"]["tokens"] > 0 and not any(step["reserved"].values())
    assert root["spent"]["tokens"] > step["spent"]["tokens"]  # its own call and its child's
    assert not any(root["reserved"].values()) and root["parents"] == []
    other = task(after, "root-job", "other/bot")  # the same task id, another principal: another budget
    assert other["key"] == "other%2Fbot/root-job" and other["spent"]["tokens"] > 0
    assert after["truncated"] is False and after["limit"] == 200

    rates = {r["principal"]: {w["window"]: w for w in r["windows"]} for r in after["rate_windows"]}
    assert set(rates) == {"tester", "other/bot"}
    assert set(rates["tester"]) == {"requests_per_minute", "tokens_per_day"}
    assert (
        rates["tester"]["requests_per_minute"]["count"] == 2
        and rates["other/bot"]["requests_per_minute"]["count"] == 1
    )
    assert rates["tester"]["requests_per_minute"]["seconds"] == 60
    assert 0 < rates["tester"]["requests_per_minute"]["resets_in_s"] <= 60
    assert rates["tester"]["tokens_per_day"]["count"] == root["spent"]["tokens"]

    assert {(t["task"], t["principal"]) for t in mine["tasks"]} == {
        ("root-job", "tester"),
        ("step-1", "tester"),
    }
    assert [r["principal"] for r in mine["rate_windows"]] == ["tester"]
    assert [(t["task"], t["principal"]) for t in theirs["tasks"]] == [("root-job", "other/bot")]
    assert len(one["tasks"]) == 1 and one["truncated"] is True


async def test_budgets_answer_no_budgets_without_budget_rules(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, {"auth": {"api_keys": KEYS}}) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get("/admin/budgets", headers=ADMIN)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "no_budgets")


@pytest.mark.parametrize(
    ("key", "query", "status", "code"),
    [
        (TEST_KEY, "", 403, "admin_role_required"),
        (ADMIN_KEY, "?limit=0", 400, "invalid_request"),
        (ADMIN_KEY, "?limit=many", 400, "invalid_request"),
        (ADMIN_KEY, "?limit=5001", 400, "invalid_request"),
    ],
)
async def test_budgets_refuse_non_admins_and_bad_limits(
    tmp_path: Path, key: str, query: str, status: int, code: str
) -> None:
    settings = {"auth": {"api_keys": KEYS}, "budgets": {"rules": [RULE]}}
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient(base_url=url) as c:
        r = await c.get(f"/admin/budgets{query}", headers={"authorization": f"Bearer {key}"})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
