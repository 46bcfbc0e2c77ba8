"""Budgets survive faults without leaking a reservation or charging twice: an upstream that dies mid-stream,
and a Redis that is killed and restarted under load (a private redis-server, append-only, on a free port)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentgw import create_app, load_settings
from tests.budget.test_budgets import REGISTRY, auth, budgets, chat, inproc, spent
from tests.support import audit_records, free_port, gateway, serve, write_config
from tests.upstreams import FakeOpenAI


async def test_an_upstream_that_dies_mid_stream_is_charged_what_was_delivered_and_nothing_stays_reserved(
    tmp_path: Path,
) -> None:
    up = FakeOpenAI(chunks=6, die_after=3, usage=None)
    registry: dict[str, Any] = {
        "llm": {
            "providers": [{"name": "up", "kind": "openai", "base_url": "x"}],
            "models": [{"name": "echo", "targets": [{"provider": "up", "model": "m"}]}],
        }
    }
    async with serve(up.app()) as u:
        registry["llm"]["providers"][0]["base_url"] = f"{u}/v1"
        async with (
            gateway(tmp_path, registry, budgets({"tokens": 1000})) as (url, app),
            httpx.AsyncClient() as c,
        ):
            r = await c.post(f"{url}/v1/chat/completions", json=chat(stream=True), headers=auth(task="cut"))
            used, reserved = await spent(app, "tester/cut")
    assert '"code":"upstream_error"' in r.text.replace(" ", "")  # the client is told, in an error frame
    assert reserved == 0
    record = audit_records(tmp_path)[-1]
    assert record["status"] == "error"
    assert used == record["usage"]["total_tokens"] > record["usage"]["input_tokens"]  # the 3 delivered chunks


@contextlib.asynccontextmanager
async def private_redis(folder: Path, port: int, *extra: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A redis-server of the test's own, yielded once it is ready: Redis says so itself (sd_notify READY=1 on
    NOTIFY_SOCKET), after every listener (TCP and Unix socket) is open and its data is loaded. An open port is
    not enough: a Redis still loading its append-only file accepts connections and answers -LOADING."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--supervised",
        "systemd",
        *extra,
    ]
    notify = folder / "notify.sock"
    notify.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ready:
        ready.bind(str(notify))
        ready.setblocking(False)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
        # A Popen (not anyio): the fault test kills it synchronously, mid-load.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # noqa: ASYNC220
        try:
            with anyio.fail_after(20):
                while b"READY=1" not in await _datagram(ready):
                    pass
            yield proc
        finally:
            proc.kill()
            proc.wait(timeout=10)


async def _datagram(sock: socket.socket) -> bytes:
    await anyio.wait_readable(sock)
    return sock.recv(4096)


async def test_a_redis_restart_under_load_leaks_no_reservation_and_charges_nothing_twice(
    tmp_path: Path,
) -> None:
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    cfg = budgets(
        {"tokens": 10**9}, ledger="redis", redis_url=f"redis://127.0.0.1:{port}/0", key_prefix="fault"
    )
    app = create_app(load_settings(write_config(tmp_path, REGISTRY, cfg)))
    statuses: list[int] = []
    async with private_redis(data, port) as first:
        async with inproc(app) as c:

            async def call(i: int) -> None:
                r = await c.post(
                    "/v1/chat/completions", json=chat(f"call {i}", max_tokens=5), headers=auth(task="t")
                )
                statuses.append(r.status_code)

            async def kill_midway() -> None:
                while len(statuses) < 40:
                    await anyio.lowlevel.checkpoint()
                first.kill()  # calls are in flight: some reserved, their settlements now fail

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_midway)
                for i in range(150):
                    tg.start_soon(call, i)
            first.wait(timeout=10)
            down = await c.post("/v1/chat/completions", json=chat(max_tokens=5), headers=auth(task="t"))
            assert down.status_code == 503  # while Redis is down, calls fail closed
            async with private_redis(data, port):  # the same data (append-only file) comes back
                assert app.budget is not None
                with anyio.fail_after(20):  # the pending settlements land once Redis is back
                    while app.budget.pending:
                        await anyio.lowlevel.checkpoint()
                for _ in range(20):  # each dead pooled connection fails one call, then is replaced
                    await c.post("/v1/chat/completions", json=chat(max_tokens=5), headers=auth(task="warm"))
                for i in range(150, 200):  # and calls go through again
                    await call(i)
                used, reserved = await spent(app, "tester/t")
    charged = sum(
        r["usage"]["total_tokens"]
        for r in audit_records(tmp_path)
        if r["status"] == "ok" and r["task_id"] == "t"
    )
    assert set(statuses) <= {200, 503}
    assert statuses[-10:] == [200] * 10
    assert reserved == 0  # no reservation leaked
    assert used == charged  # every call that succeeded is charged exactly once


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
async def test_a_stream_whose_top_up_finds_redis_down_is_cut_or_goes_on_unmetered_and_settles_once_it_is_back(
    tmp_path: Path, mode: str
) -> None:
    # The reservation covers one output token; the second chunk needs a top-up, and Redis is killed before it.
    up = FakeOpenAI(chunks=6, chunk_gate=anyio.Event(), usage=None)
    assert up.chunk_gate is not None
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    url = f"redis://127.0.0.1:{port}/0"
    cfg = budgets(
        {"tokens": 10**6}, ledger="redis", redis_url=url, on_ledger_error=mode, default_max_tokens=1
    )
    async with serve(up.app()) as u:
        registry: dict[str, Any] = {
            "llm": {
                "providers": [{"name": "up", "kind": "openai", "base_url": f"{u}/v1"}],
                "models": [{"name": "echo", "targets": [{"provider": "up", "model": "m"}]}],
            }
        }
        app = create_app(load_settings(write_config(tmp_path, registry, cfg)))
        async with private_redis(data, port) as first:
            async with inproc(app) as c:
                answer: list[str] = []

                async def stream() -> None:
                    r = await c.post("/v1/chat/completions", json=chat(stream=True), headers=auth(task="s"))
                    answer.append(r.text)

                async def kill_then_open_the_gate() -> None:
                    await up.started.wait()  # reserved: the call reached the upstream
                    first.kill()
                    first.wait(timeout=10)
                    assert up.chunk_gate is not None
                    up.chunk_gate.set()

                with anyio.fail_after(30):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(kill_then_open_the_gate)
                        tg.start_soon(stream)
                assert app.budget is not None and app.budget.pending  # the settle waits for Redis
                async with private_redis(data, port):  # the same data (append-only file) comes back
                    with anyio.fail_after(20):
                        while app.budget.pending:
                            await anyio.lowlevel.checkpoint()
                    used, reserved = await spent(app, "tester/s")
    text = answer[0].replace(" ", "")
    record = audit_records(tmp_path)[-1]
    budget = [d for d in record["decisions"] if d["stage"] == "budget"]
    if mode == "fail_closed":
        assert '"finish_reason":"length"' in text and "w1" not in text  # cut before the unvouched chunk
        assert record["stream_cut"] == "budget_exhausted"
        assert any(
            d["outcome"] == "deny" and d["rule"].startswith("stream cut: ledger unavailable") for d in budget
        )
    else:
        assert '"finish_reason":"stop"' in text and "w5" in text  # the whole answer, unmetered
        assert record["stream_cut"] is None
        assert any(d["rule"] == "stream top-up: ledger unavailable: fail_open" for d in budget)
    assert reserved == 0 and used == record["usage"]["total_tokens"]  # settled once Redis was back
