"""The audit writer process: a snapshot of a finished call builds exactly the record the gateway would have built
itself, the worker stores what it is handed and reports it, and a worker that dies is started again with what it
held counted as lost (never silently)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from agentgw.audit.process import ProcessWriter
from agentgw.audit.snapshot import restore, snapshot
from agentgw.audit.writer import open_sink, open_writer
from agentgw.errors import GatewayError
from agentgw.exchange import Attempt, Result
from agentgw.settings import load_settings
from tests.audit.support import check, finished, settings_file, sqlite_db

AUDIT = {"payloads": [{"match": "llm:*"}]}


def _without_ids(record: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in record.items() if k not in ("record_id",)}


@pytest.mark.parametrize("shape", ["answered", "denied", "streamed"])
def test_a_snapshot_builds_the_same_record_as_the_call_itself(tmp_path: Path, shape: str) -> None:
    writer = open_writer(load_settings(settings_file(tmp_path, AUDIT)))
    assert writer is not None
    ex = finished(task="same")
    ex.decide("authz", "allow", rule="policy.csv:3: p, role:agents, llm:*, call, allow")
    ex.attempts.append(Attempt(1, "mock/echo", "ok", 200, 1.25))
    ex.attrs.update({"child_task": "same/c1", "endpoint": "/v1/chat/completions", "ignored": object()})
    if shape == "denied":
        ex.error, ex.status, ex.result = (
            GatewayError("no", status=403, code="permission_denied"),
            "denied",
            None,
        )
    elif shape == "streamed":
        ex.result = Result(stream=iter(()))  # type: ignore[arg-type]
        chunk = 'data: {"choices":[{"delta":{"content":"hé"}}]}\n\n'.encode()
        ex.attrs["audit_frames"] = [chunk, b"data: [DONE]\n\n"]
    ended = time.perf_counter()
    again, again_ended = restore(snapshot(ex, ended))
    mine = writer.builder.build(ex, ended)
    theirs = writer.builder.build(again, again_ended)
    assert _without_ids(theirs) == _without_ids(mine)


async def test_the_worker_stores_what_it_is_handed_and_the_chain_verifies(tmp_path: Path) -> None:
    sink = open_sink(load_settings(settings_file(tmp_path, {"batch_wait_ms": 0})))
    assert isinstance(sink, ProcessWriter)
    await sink.start()
    try:
        with anyio.fail_after(30):
            for i in range(50):
                await sink.submit(finished(task=f"t{i % 5}"), time.perf_counter())
            await sink.flush()
        assert (sink.written, sink.depth, sink.lost, sink.dropped) == (50, 0, 0, 0)
    finally:
        await sink.aclose()
    reader = open_writer(load_settings(settings_file(tmp_path, {})))
    assert reader is not None
    await reader.store.open()
    verdict = await check(reader)
    await reader.store.aclose()
    assert verdict.ok and verdict.count == 50


async def test_a_worker_that_dies_is_started_again_and_what_it_held_is_counted_lost(tmp_path: Path) -> None:
    sink = open_sink(load_settings(settings_file(tmp_path, {"batch_wait_ms": 0})))
    assert isinstance(sink, ProcessWriter)
    await sink.start()
    try:
        with anyio.fail_after(30):
            await sink.submit(finished(task="before"), time.perf_counter())
            await sink.flush()
            first = sink._proc
            assert first is not None
            os.kill(first.pid, signal.SIGKILL)
            await sink.until(lambda: sink._proc is not first)
            await sink.submit(finished(task="after"), time.perf_counter())
            await sink.flush()
        assert sink.written == 2 and sink.lost == 0  # nothing was in flight when it died
    finally:
        await sink.aclose()


async def test_records_a_dying_worker_held_are_counted_lost_never_silently_gone(tmp_path: Path) -> None:
    settings = {"batch_wait_ms": 0, "sqlite": {"busy_timeout_s": 0.05}}
    sink = open_sink(load_settings(settings_file(tmp_path, settings)))
    assert isinstance(sink, ProcessWriter)
    await sink.start()
    try:
        with sqlite_db(tmp_path) as db, anyio.fail_after(30):
            db.execute("BEGIN IMMEDIATE")  # the store takes no writes: the worker holds what it is handed
            for _ in range(3):
                await sink.submit(finished(), time.perf_counter())
            await sink.until(lambda: sink.store_errors >= 1 and sink.depth == 3)
            first = sink._proc
            assert first is not None
            os.kill(first.pid, signal.SIGKILL)
            await sink.until(lambda: sink._proc is not first and sink.lost == 3)
            db.execute("COMMIT")
            await sink.submit(finished(task="after"), time.perf_counter())
            await sink.flush()
        assert (sink.lost, sink.written, sink.depth) == (3, 1, 0)
    finally:
        await sink.aclose()


async def test_after_drops_and_a_killed_worker_lost_equals_what_is_missing_and_depth_never_goes_negative(
    tmp_path: Path,
) -> None:
    settings = {"batch_wait_ms": 0, "on_full": "drop", "queue_size": 3, "sqlite": {"busy_timeout_s": 0.05}}
    sink = open_sink(load_settings(settings_file(tmp_path, settings)))
    assert isinstance(sink, ProcessWriter)
    depths: list[int] = []

    def seen() -> bool:  # runs on every counter change: every depth /readyz could have shown
        depths.append(sink.depth)
        return False

    await sink.start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.until, seen)
            with sqlite_db(tmp_path) as db, anyio.fail_after(30):
                db.execute("BEGIN IMMEDIATE")  # the store takes no writes: the worker holds what it is handed
                for i in range(3):
                    await sink.submit(finished(task=f"held-{i}"), time.perf_counter())
                await sink.submit(finished(task="dropped"), time.perf_counter())  # 3 in flight: dropped
                db.execute("COMMIT")
                await sink.flush()  # 3 calls stored, and a `dropped` record for the fourth
                errors = sink.store_errors
                db.execute("BEGIN IMMEDIATE")
                for i in range(3):
                    await sink.submit(finished(task=f"killed-{i}"), time.perf_counter())
                await sink.until(lambda: sink.store_errors > errors and sink.depth == 3)
                first = sink._proc
                assert first is not None
                os.kill(first.pid, signal.SIGKILL)  # kill -9 with three records in flight
                await sink.until(lambda: sink._proc is not first and sink.lost == 3)
                db.execute("COMMIT")
                await sink.submit(finished(task="after"), time.perf_counter())
                await sink.flush()
            tg.cancel_scope.cancel()
        reader = open_writer(load_settings(settings_file(tmp_path, settings)))
        assert reader is not None
        await reader.store.open()
        stored = [r.columns[3] async for r in reader.store.rows() if r.columns[1] == "call"]
        kinds = [r.columns[1] async for r in reader.store.rows()]
        await reader.store.aclose()
        assert sorted(stored) == ["after", "held-0", "held-1", "held-2"]
        assert kinds.count("dropped") == 1
        handed = 3 + 3 + 1  # to the worker (the fourth call was dropped at the door)
        assert (sink.written, sink.dropped, sink.lost, sink.depth) == (4, 1, handed - len(stored), 0)
        assert min(depths) >= 0, depths
    finally:
        await sink.aclose()
