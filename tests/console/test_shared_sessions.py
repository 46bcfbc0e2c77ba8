"""Console sessions shared by replicas through Redis: signed in through one gateway, the same cookie works on
another (the console and the admin API), and signing out through either ends it on both."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.a2a.test_replicas import REDIS_URL, redis_up
from tests.approvals.support import ADMIN_KEY
from tests.console.test_sessions import settings
from tests.support import MOCK_REGISTRY, drop_redis_keys, gateway


async def test_a_console_session_signed_in_on_one_replica_works_and_ends_on_every_replica(
    tmp_path: Path,
) -> None:
    await redis_up()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    shared = {
        **settings(tmp_path),
        "console": {"sessions": "redis", "redis_url": REDIS_URL},
        "budgets": {"redis_url": REDIS_URL, "key_prefix": prefix},
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        async with (
            gateway(tmp_path / "a", MOCK_REGISTRY, shared) as (url_a, _),
            gateway(tmp_path / "b", MOCK_REGISTRY, shared) as (url_b, _),
            httpx.AsyncClient(base_url=url_a) as a,
            httpx.AsyncClient(base_url=url_b) as b,
        ):
            signed = await a.post("/console/login", json={"credential": ADMIN_KEY})
            cookie = {"cookie": f"agentgw_console={signed.cookies['agentgw_console']}"}
            on_b = await b.get("/console/session", headers=cookie)
            tasks_on_b = await b.get("/admin/tasks", headers=cookie)
            out = await b.post("/console/logout", headers={**cookie, "x-csrf-token": signed.json()["csrf"]})
            on_a = await a.get("/console/session", headers=cookie)
            keys = await _keys(prefix)
    finally:
        await drop_redis_keys(REDIS_URL, prefix)
    assert signed.status_code == 200, signed.text
    assert on_b.status_code == 200 and on_b.json()["subject"] == "root"
    assert on_b.json()["csrf"] == signed.json()["csrf"]
    assert tasks_on_b.status_code == 200, tasks_on_b.text
    assert out.status_code == 200
    assert on_a.status_code == 401
    assert keys == []  # signed out: nothing left, and the cookie's value was never a key


async def _keys(prefix: str) -> list[bytes]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        return list(await client.keys(f"{prefix}:console:*"))
    finally:
        await client.aclose()
