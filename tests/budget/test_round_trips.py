"""The Redis ledger costs one round trip to reserve and one to settle, rate windows, child tasks and the
forgetting of one-request tasks included: counted on a private redis-server with MONITOR."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import redis.asyncio as aioredis

from agentgw import create_app, load_settings
from tests.budget.test_budgets import REGISTRY, auth, budgets, chat, inproc
from tests.budget.test_faults import private_redis
from tests.support import free_port, write_config

CALLS = 20


class Commands:
    """The top-level commands a private Redis receives, from MONITOR (commands run inside scripts left out):
    each is one round trip from a client."""

    def __init__(self, client: Any, monitor: Any) -> None:
        self.client, self.monitor, self.marks = client, monitor, 0

    async def since_last(self) -> Counter[str]:
        self.marks += 1
        mark = f"agw-mark-{self.marks}"
        await self.client.echo(mark)  # the monitor has seen everything before this once it sees this
        seen: Counter[str] = Counter()
        with anyio.fail_after(10):
            while True:
                info = await self.monitor.next_command()
                name = info["command"].split(" ", 1)[0].lower()
                if info["command"] == f"ECHO {mark}":
                    return seen
                if info["client_type"] != "lua":
                    seen[name] += 1


@contextlib.asynccontextmanager
async def commands(url: str) -> AsyncIterator[Commands]:
    client = aioredis.from_url(url, decode_responses=True)
    try:
        async with client.monitor() as monitor:
            yield Commands(client, monitor)
    finally:
        await client.aclose()


async def calls(c: httpx.AsyncClient, n: int, **headers: str) -> None:
    for i in range(n):
        r = await c.post(
            "/v1/chat/completions", json=chat(f"call {i}", max_tokens=5), headers=auth(**headers)
        )
        assert r.status_code == 200, r.text


async def test_each_call_costs_one_round_trip_to_reserve_and_one_to_settle(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    url = f"redis://127.0.0.1:{port}/0"
    windows = {"requests_per_minute": 10_000, "tokens_per_minute": 10**6, "tokens_per_day": 10**7}
    cfg = budgets({"tokens": 10**6}, windows, ledger="redis", redis_url=url)
    app = create_app(load_settings(write_config(tmp_path, REGISTRY, cfg)))
    async with private_redis(data, port):
        async with inproc(app) as c, commands(url) as seen:
            await calls(c, 1, task="warm")  # the first call loads the scripts and opens a connection
            assert app.ledger is not None
            await app.ledger.state("warm")  # the redis-py connection (reads) is opened too
            await seen.since_last()
            await calls(c, CALLS, task="named")
            named = await seen.since_last()
            await calls(c, CALLS)  # one-request tasks: settled and forgotten in the same script
            anonymous = await seen.since_last()
            await calls(c, CALLS, task="kid", **{"x-agentgw-parent-task": "named"})
            with_parent = await seen.since_last()
    assert named == {"evalsha": 2 * CALLS}
    assert anonymous == {"evalsha": 2 * CALLS}
    assert with_parent == {"evalsha": 2 * CALLS, "hgetall": 1}  # the parent's ancestors are read once


async def test_a_long_stream_costs_one_round_trip_per_top_up_never_one_per_chunk(tmp_path: Path) -> None:
    # 400 output tokens in 400 chunks, topped up 50 at a time: the reservation, 8 top-ups (the last for the
    # finishing chunk), the settle.
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    url = f"redis://127.0.0.1:{port}/0"
    cfg = budgets({"tokens": 10**6}, ledger="redis", redis_url=url, default_max_tokens=50)
    app = create_app(load_settings(write_config(tmp_path, REGISTRY, cfg)))
    async with private_redis(data, port):
        async with inproc(app) as c, commands(url) as seen:
            await calls(c, 1, task="warm")
            assert app.ledger is not None
            await app.ledger.state("warm")
            await seen.since_last()
            body = chat("go", model="talk", stream=True)
            async with c.stream("POST", "/v1/chat/completions", json=body, headers=auth(task="story")) as r:
                frames = [line async for line in r.aiter_lines() if line.startswith("data: ")]
            streamed = await seen.since_last()
    assert len(frames) > 400 and frames[-1] == "data: [DONE]" and '"finish_reason":"stop"' in frames[-2]
    assert streamed == {"evalsha": 1 + 8 + 1}
