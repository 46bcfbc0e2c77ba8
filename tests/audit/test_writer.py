"""The writer under pressure, through the real gateway: while the store cannot take writes (another process holds
SQLite's write lock), a full queue blocks finishing calls (`on_full: block`: they complete, and are recorded, once
the store is back) or drops records with a counter and leaves a `dropped` record in the chain (`drop`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from tests.audit.support import sqlite_db
from tests.support import MOCK_REGISTRY, TEST_KEY, audit_records, audit_rows, gateway

AUTH = {"authorization": f"Bearer {TEST_KEY}"}
CHAT = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}


def pressure(on_full: str, writer: str) -> dict[str, Any]:
    return {
        "audit": {
            "writer": writer,
            "queue_size": 2,
            "batch_size": 1,
            "batch_wait_ms": 0,
            "on_full": on_full,
            "sqlite": {"busy_timeout_s": 0.05},
        }
    }


def kinds(tmp: Path) -> list[dict[str, Any]]:
    return [orjson.loads(r.data) for r in audit_rows(tmp / "audit.db")]


# In process: two records queued and one in the writer's failing batch. Through the writer process: two in
# flight (the limit counts everything handed over and not yet stored).
HELD = {"inline": (3, 2), "process": (4, 2)}  # callers held back, queue depth
DROPPED = {"inline": 3, "process": 4}


@pytest.mark.parametrize("writer", ["process", "inline"])
async def test_a_full_queue_blocks_finishing_calls_until_the_store_takes_writes_again(
    tmp_path: Path, writer: str
) -> None:
    held, depth = HELD[writer]
    async with (
        gateway(tmp_path, MOCK_REGISTRY, pressure("block", writer)) as (url, app),
        httpx.AsyncClient(base_url=url) as c,
    ):
        w = app.audit
        assert w is not None
        send, receive = anyio.create_memory_object_stream[int](10)

        async def call(i: int) -> None:
            r = await c.post("/v1/chat/completions", json=CHAT, headers={**AUTH, "x-agentgw-task": f"t{i}"})
            assert r.status_code == 200
            await send.send(i)

        with sqlite_db(tmp_path) as db, anyio.fail_after(30):
            db.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(call, i)
                await w.until(lambda: w.blocked == held and w.depth == depth and w.store_errors >= 1)
                answered = [await receive.receive() for _ in range(6 - held)]
                assert (w.blocked, w.depth, w.dropped) == (held, depth, 0)  # the others still wait
                db.execute("COMMIT")
                rest = [await receive.receive() for _ in range(held)]
    assert sorted(answered + rest) == list(range(6))
    assert sorted(r["task_id"] for r in audit_records(tmp_path)) == [f"t{i}" for i in range(6)]
    assert w.dropped == 0 and w.written == 6


async def call(c: httpx.AsyncClient) -> None:
    r = await c.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200


@pytest.mark.parametrize("writer", ["process", "inline"])
async def test_with_on_full_drop_calls_finish_and_the_drops_are_counted_and_recorded(
    tmp_path: Path, writer: str
) -> None:
    drops = DROPPED[writer]
    async with (
        gateway(tmp_path, MOCK_REGISTRY, pressure("drop", writer)) as (url, app),
        httpx.AsyncClient(base_url=url) as c,
    ):
        w = app.audit
        assert w is not None
        with sqlite_db(tmp_path) as db, anyio.fail_after(30):
            db.execute("BEGIN IMMEDIATE")
            await call(c)
            await w.until(lambda: w.store_errors >= 1)  # the writer holds that record, failing to store it
            for _ in range(5):
                await call(c)
            # nothing waited: every call answered while the store was locked
            assert w.dropped == drops and w.blocked == 0
            ready = await c.get("/readyz")
            assert ready.json()["audit"]["dropped"] == drops
            db.execute("COMMIT")
    records = kinds(tmp_path)
    assert [r["kind"] for r in records].count("call") == 6 - drops
    [dropped] = [r for r in records if r["kind"] == "dropped"]
    assert dropped["dropped"] == drops and dropped["first_dropped"] <= dropped["last_dropped"]


async def test_a_call_that_finishes_after_shutdown_is_still_recorded(tmp_path: Path) -> None:
    from tests.audit.support import finished, running_writer

    async with running_writer(tmp_path, {"store": "sqlite"}) as w:
        pass
    await w.submit(finished(task="straggler"), 0.0)  # e.g. a stream cut after the lifespan ended
    assert [r["task_id"] for r in audit_records(tmp_path)] == ["straggler"]
