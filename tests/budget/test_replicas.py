"""One task's budget shared by three separate `agentgw serve` processes on loopback, over one real Redis: 1,000
concurrent calls spread across them never overspend, every token the provider reported is charged exactly once,
and nothing stays reserved. Redis missing under CI=true is a failure, never a skip."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import redis.asyncio as aioredis

from agentgw.tokens import count_messages
from tests.budget.test_budgets import REDIS_URL, REGISTRY, budgets, chat
from tests.support import (
    TEST_KEY,
    agentgw_serve,
    audit_records,
    drop_redis_keys,
    free_port,
    sha,
    write_config,
)

ADMIN_KEY = "agw-admin-key-0123456789"
CALLS, IN_FLIGHT_PER_GATEWAY, LIMIT, MAX_TOKENS = 1000, 32, 5000, 5


async def require_redis() -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        with anyio.fail_after(5):
            await client.ping()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI and is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def replicas(tmp: Path, n: int) -> AsyncIterator[list[str]]:
    """`n` gateway processes, each on its own loopback port and folder, sharing one Redis ledger under a key
    prefix of their own (parallel runs never collide); the prefix's keys are deleted afterwards."""
    prefix = f"agwtest-{uuid.uuid4().hex[:12]}"
    settings: dict[str, Any] = {
        **budgets({"tokens": LIMIT}, ledger="redis", redis_url=REDIS_URL, key_prefix=prefix),
        "auth": {
            "api_keys": [
                {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
                {"subject": "root", "roles": ["admins"], "sha256": sha(ADMIN_KEY)},
            ]
        },
        # Budgets only: the routing-state sync's shutdown can hang under load (RoutingSync.aclose, a known issue).
        "llm": {"routing": {"state": "memory"}},
    }
    try:
        async with contextlib.AsyncExitStack() as stack:
            urls, gateways = [], []
            try:
                for i in range(n):
                    folder = tmp / f"replica{i}"
                    folder.mkdir()
                    port = free_port()
                    cfg = write_config(folder, REGISTRY, settings)
                    gateways.append(await stack.enter_async_context(agentgw_serve(cfg, port)))
                    urls.append(f"http://127.0.0.1:{port}")
                yield urls
            finally:
                for gw in gateways:  # a clean stop (SIGTERM); agentgw_serve waits for each exit
                    with contextlib.suppress(ProcessLookupError):
                        gw.process.terminate()
    finally:
        await drop_redis_keys(REDIS_URL, prefix)


async def test_three_gateway_processes_sharing_redis_never_overspend_one_task(tmp_path: Path) -> None:
    await require_redis()
    statuses: list[int] = []
    reported: list[int] = []  # total_tokens of each 200, as the provider reported it in `usage`
    headers = {"authorization": f"Bearer {TEST_KEY}", "x-agentgw-task": "shared"}
    async with replicas(tmp_path, 3) as urls, contextlib.AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(
                aiohttp.ClientSession(
                    base_url=url, connector=aiohttp.TCPConnector(limit=IN_FLIGHT_PER_GATEWAY)
                )
            )
            for url in urls
        ]
        start = anyio.Event()

        async def call(i: int) -> None:
            await start.wait()  # every call is queued before the first one is sent
            body = chat(f"call {i}", max_tokens=MAX_TOKENS)
            async with sessions[i % 3].post("/v1/chat/completions", json=body, headers=headers) as r:
                statuses.append(r.status)
                reply = await r.json()
                if r.status == 200:
                    reported.append(reply["usage"]["total_tokens"])
                else:
                    assert reply["error"]["code"] == "budget_exhausted"

        with anyio.fail_after(180):  # a bound, not an expectation (~5 s here)
            async with anyio.create_task_group() as tg:
                for i in range(CALLS):
                    tg.start_soon(call, i)
                start.set()
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}

        async def view(s: aiohttp.ClientSession) -> dict[str, Any]:
            async with s.get("/admin/tasks/shared/budget?principal=tester", headers=admin) as r:
                assert r.status == 200
                got: dict[str, Any] = await r.json()
                return got

        # On a loaded machine a settlement can miss the ledger's timeout and land later, from the replica's
        # retry queue: the ledger is final once nothing is reserved (each pending settlement holds its reservation).
        with anyio.fail_after(60):
            while (await view(sessions[0]))["reserved"] != {"tokens": 0}:
                await anyio.lowlevel.checkpoint()
        views = [
            await view(s) for s in sessions
        ]  # every replica reads the same ledger: none keeps a local copy
    assert len(statuses) == CALLS
    assert set(statuses) == {200, 429}  # the task ran out part-way: the limit was contended
    assert views[0] == views[1] == views[2]
    view = views[0]
    longest_prompt = count_messages(chat(f"call {CALLS - 1}")["messages"], None)
    one_call_max = longest_prompt + MAX_TOKENS  # the largest reservation of any call
    assert view["limits"] == {"tokens": LIMIT}
    assert view["reserved"] == {"tokens": 0}  # nothing leaked
    assert view["spent"]["tokens"] == sum(reported)  # every reported token charged, exactly once
    assert view["spent"]["tokens"] <= LIMIT + one_call_max
    records = [
        r for i in range(3) for r in audit_records(tmp_path / f"replica{i}") if r["operation"] == "chat"
    ]
    assert len(records) == CALLS  # each replica drained its audit queue into its store on the clean stop
    assert sum(r["usage"]["total_tokens"] for r in records if r["status"] == "ok") == sum(reported)
