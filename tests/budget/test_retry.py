"""Settlements that could not be written (Redis unreachable) are retried by one consumer only: `flush()` on
shutdown and the background retry task never both apply and pop the same pending settlement. The Redis ledger
talks to the real Redis through a loopback TCP proxy the test controls (refuse connections, hold what clients
send until released), so a settle fails, and a retry is in flight, exactly when the test says."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentgw import create_app, load_settings
from agentgw.budget.config import Budgets
from agentgw.budget.redis import RedisLedger
from agentgw.exchange import Attempt, Exchange, Principal, Result
from agentgw.pipeline import Pipeline
from agentgw.stages.budget import BudgetStage
from tests.budget.test_budgets import auth, budgets, inproc
from tests.budget.test_budgets import chat as body
from tests.budget.test_ledger import REDIS_URL
from tests.budget.test_stage import agent_call
from tests.support import audit_records, serve, write_config

AGENT = Principal("tester", ("agents",))
RULES = {"rules": [{"match": {"roles": ["agents"]}, "task": {"agent_calls": 10}}]}


class RedisProxy:
    """Loopback TCP proxy to the test Redis. `refuse()`: drop every connection and close new ones at once (Redis
    is down). `hold()`: pass connections, but keep what clients send until `release()` (a call in flight)."""

    def __init__(self) -> None:
        self.mode = "pass"
        self.held = 0
        self.holding = asyncio.Event()  # set once something is held
        self.released = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{REDIS_URL.rsplit('/', 1)[-1]}"

    def refuse(self) -> None:
        self.mode = "refuse"
        for w in self.writers:
            w.close()
        self.writers.clear()

    def hold(self) -> None:
        self.mode, self.released = "hold", asyncio.Event()

    def release(self) -> None:
        self.mode = "pass"
        self.released.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)
        host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, outbound: bool) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    if outbound and self.mode == "hold":
                        self.held += 1
                        self.holding.set()
                        await self.released.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        except asyncio.CancelledError:  # closed by aclose(): end as a finished handler, not a cancelled one
            writer.close()
            up_writer.close()

    async def aclose(self) -> None:
        self.refuse()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def proxied_ledger() -> AsyncIterator[tuple[RedisProxy, RedisLedger]]:
    proxy = RedisProxy()
    await proxy.start()
    led = RedisLedger(proxy.url(), prefix=f"agwtest-{uuid.uuid4().hex[:8]}", task_ttl_s=600)
    if led.fast is not None:
        led.fast.timeout = 60  # a held call waits for the test, not for the ledger's 2 s deadline
    try:
        try:
            await led.client.ping()
        except Exception as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"Redis is required in CI and is not reachable at {REDIS_URL}: {exc}")
            pytest.skip(f"Redis not reachable at {REDIS_URL}")
        yield proxy, led
    finally:
        proxy.mode = "pass"
        keys = await led.client.keys(f"{led.prefix}:*")
        if keys:
            await led.client.delete(*keys)
        await led.aclose()
        await proxy.aclose()


async def test_flush_and_the_retry_task_never_apply_the_same_pending_settlement_twice() -> None:
    async with proxied_ledger() as (proxy, ledger):
        stage = BudgetStage(Budgets.model_validate(RULES), ledger, {}, {})
        stage.retries.retry_delay_s = (
            0  # retry at once: the interleaving below is made by the proxy, not by time
        )

        async def redis_dies_during_the_call(ex: Exchange) -> Result:
            ex.attempts.append(Attempt(1, ex.target, "ok", 200))
            proxy.refuse()  # the reservation went through; the settle will not
            return Result(body=b"{}")

        await Pipeline([stage]).run(agent_call(AGENT, "job"), redis_dies_during_the_call)
        assert len(stage.pending) == 1
        proxy.hold()  # Redis is back, but slow: the retry task's settle stays in flight
        with anyio.fail_after(20):
            await proxy.holding.wait()
            async with anyio.create_task_group() as tg:
                tg.start_soon(stage.flush, 30.0)  # shutdown begins while the retry is in flight
                await anyio.wait_all_tasks_blocked()
                proxy.release()
            retry = stage.retries.task
            assert retry is not None
            await asyncio.wait([retry])
        assert retry.exception() is None
        assert not stage.pending
        st = await ledger.state("tester/job")
        assert st is not None and (st.spent, st.reserved) == ({"agent_calls": 1}, {"agent_calls": 0})


async def test_a_settle_retried_after_a_redis_outage_is_recorded_with_what_it_charged(tmp_path: Path) -> None:
    async with proxied_ledger() as (proxy, probe):

        async def chat(request: Request) -> JSONResponse:
            proxy.refuse()  # Redis goes down while the upstream answers: the reservation is in, the settle fails
            usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
            message = {"role": "assistant", "content": "hello"}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            return JSONResponse({"id": "c", "object": "chat.completion", "choices": [choice], "usage": usage})

        upstream = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        async with serve(upstream) as up:
            registry = {
                "llm": {
                    "providers": [{"name": "up", "kind": "openai", "base_url": f"{up}/v1"}],
                    "models": [{"name": "echo", "targets": [{"provider": "up", "model": "m"}]}],
                }
            }
            cfg = budgets({"tokens": 1000}, ledger="redis", redis_url=proxy.url(), key_prefix=probe.prefix)
            app = create_app(load_settings(write_config(tmp_path, registry, cfg)))
            async with inproc(app) as c:
                r = await c.post("/v1/chat/completions", json=body(max_tokens=20), headers=auth(task="job"))
                assert r.status_code == 200
                assert app.budget is not None and len(app.budget.pending) == 1
                proxy.release()  # Redis is back: the retry lands
                with anyio.fail_after(20):
                    while app.budget.pending:
                        await anyio.lowlevel.checkpoint()
            st = await probe.state("tester/job")
    record = audit_records(tmp_path)[-1]
    assert record["status"] == "ok"
    assert record["charged"] == {"tokens": 13}
    deferred = [d for d in record["decisions"] if d["outcome"] == "deferred"]
    assert [(d["stage"], d["rule"]) for d in deferred] == [("budget", "settle retried: ledger unavailable")]
    assert st is not None and (st.spent, st.reserved) == ({"tokens": 13}, {"tokens": 0})
