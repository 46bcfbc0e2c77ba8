"""A chat call without max_tokens reserves a bounded estimate of its output (the model's `max_output_tokens`, else
`budgets.default_max_tokens`), not everything the task has left: parallel calls on one task all go through when
they fit, each is settled with its real usage, and a stream that reaches its reservation is topped up from the task
(cut only when the task, or an ancestor, cannot afford more)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentgw import create_app, load_settings
from agentgw.budget.ledger import TaskState
from agentgw.tokens import count_tokens
from tests.budget.test_budgets import LONG, REDIS_URL, REGISTRY, auth, budgets, chat, inproc, spent
from tests.support import TEST_KEY, audit_records, drop_redis_keys, gateway, serve, write_config

CALLS = 5
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


class HeldUpstream:
    """Answers small, but only once all CALLS calls are in (or were refused by the gateway): every call's
    reservation is held at the same time, whatever the scheduling."""

    def __init__(self) -> None:
        self.arrived = self.refused = 0
        self.all_in = anyio.Event()

    def check(self) -> None:
        if self.arrived + self.refused >= CALLS:
            self.all_in.set()

    async def chat(self, request: Request) -> JSONResponse:
        self.arrived += 1
        self.check()
        await self.all_in.wait()
        message = {"role": "assistant", "content": "ok"}
        choice = {"index": 0, "finish_reason": "stop", "message": message}
        return JSONResponse({"id": "c", "object": "chat.completion", "choices": [choice], "usage": USAGE})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])


async def parallel_calls(tmp_path: Path, task_tokens: int, model: dict[str, Any], **extra: Any) -> list[int]:
    up = HeldUpstream()
    statuses: list[int] = []
    async with serve(up.app()) as url:
        registry = {
            "llm": {
                "providers": [{"name": "up", "kind": "openai", "base_url": f"{url}/v1"}],
                "models": [{"name": "echo", "targets": [{"provider": "up", "model": "m"}], **model}],
            }
        }
        app = create_app(
            load_settings(write_config(tmp_path, registry, budgets({"tokens": task_tokens}, **extra)))
        )
        async with inproc(app) as c:

            async def call(i: int) -> None:
                r = await c.post("/v1/chat/completions", json=chat(f"call {i}"), headers=auth(task="job"))
                statuses.append(r.status_code)
                if r.status_code != 200:
                    up.refused += 1
                    up.check()

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for i in range(CALLS):
                        tg.start_soon(call, i)
            used, reserved = await spent(app, "tester/job")
    assert (used, reserved) == (statuses.count(200) * USAGE["total_tokens"], 0)  # settled with the truth
    return statuses


async def test_parallel_calls_without_max_tokens_all_fit_a_task_with_the_models_max_output(
    tmp_path: Path,
) -> None:
    statuses = await parallel_calls(tmp_path, 3000, {"max_output_tokens": 200})
    assert statuses == [200] * CALLS


async def test_parallel_calls_without_max_tokens_all_fit_a_task_with_the_default_estimate(
    tmp_path: Path,
) -> None:
    statuses = await parallel_calls(
        tmp_path, 6000, {}
    )  # 5 × (prompt + 1,024) fit; "all that is left" did not
    assert statuses == [200] * CALLS


async def test_the_default_estimate_is_configurable(tmp_path: Path) -> None:
    statuses = await parallel_calls(tmp_path, 3000, {}, default_max_tokens=500)
    assert statuses == [200] * CALLS


async def test_a_call_without_max_tokens_still_gets_what_is_left_when_that_is_less_than_the_estimate(
    tmp_path: Path,
) -> None:
    app_cfg = budgets({"tokens": 60})
    async with gateway(tmp_path, REGISTRY, app_cfg) as (url, _), httpx.AsyncClient() as c:
        r = await c.post(f"{url}/v1/chat/completions", json=chat(), headers=auth(task="small"))
    assert r.status_code == 200
    assert r.headers["x-agentgw-budget-remaining-tokens"] == "0"  # it reserved the 60 that were left


async def test_the_issues_five_parallel_calls_without_max_tokens_all_fit_a_3000_token_task_by_default(
    tmp_path: Path,
) -> None:
    # Issue #10: five parallel small calls without max_tokens on a 3,000-token task, no max_output_tokens on the
    # model and no budgets setting: each reserves its prompt + 512, so all five are in at once.
    statuses = await parallel_calls(tmp_path, 3000, {})
    assert statuses == [200] * CALLS


@contextlib.asynccontextmanager
async def ledger_config(kind: str) -> AsyncIterator[dict[str, Any]]:
    """The budgets settings of a memory or a real Redis ledger (a private key prefix, dropped afterwards)."""
    if kind == "memory":
        yield {}
        return
    prefix = f"agwtest-{uuid.uuid4().hex[:8]}"
    try:
        yield {"ledger": "redis", "redis_url": REDIS_URL, "key_prefix": prefix}
    finally:
        await drop_redis_keys(REDIS_URL, prefix)


def talker(**model: Any) -> dict[str, Any]:
    """The registry with one model, `talk`, answering the long reply, with these settings."""
    talk = {"name": "talk", "targets": [{"provider": "talker", "model": "talk-1"}], **model}
    return {"llm": {"providers": REGISTRY["llm"]["providers"], "models": [talk]}}


async def stream_story(
    tmp_path: Path, registry: dict[str, Any], settings: dict[str, Any]
) -> tuple[list[Any], TaskState]:
    """Stream the talker's long reply without max_tokens: the chunks, then the task's state."""
    async with gateway(tmp_path, registry, settings) as (url, app):
        async with openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0, default_headers={"x-agentgw-task": "story"}
        ) as client:
            stream = await client.chat.completions.create(
                model="talk",
                messages=[{"role": "user", "content": "go"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            with anyio.fail_after(30):
                chunks = [c async for c in stream]
        assert app.ledger is not None
        st = await app.ledger.state("tester/story")
    assert st is not None
    return chunks, st


def story(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish(chunks: list[Any]) -> str | None:
    return next(c.choices[0].finish_reason for c in reversed(chunks) if c.choices)


def cut_by(tmp_path: Path) -> str:
    """The budget's reason for cutting the last call's stream, from its audit record."""
    record = audit_records(tmp_path)[-1]
    assert record["stream_cut"] == "budget_exhausted"
    cut = [d for d in record["decisions"] if d["stage"] == "budget" and d["outcome"] == "deny"]
    assert len(cut) == 1
    return str(cut[0]["rule"])


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_stream_without_max_tokens_runs_past_its_estimate_to_its_end_when_the_task_affords_it(
    tmp_path: Path, kind: str
) -> None:
    # The estimate is 50 output tokens; the reply is 400: the reservation is topped up from the task (eight
    # times), and the stream ends where the model ends it.
    async with ledger_config(kind) as ledger:
        settings = budgets({"tokens": 100_000}, default_max_tokens=50, **ledger)
        chunks, st = await stream_story(tmp_path, REGISTRY, settings)
    assert (finish(chunks), story(chunks)) == ("stop", LONG)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == count_tokens(LONG)
    assert (st.spent["tokens"], st.reserved["tokens"]) == (
        usage.total_tokens,
        0,
    )  # the truth, charged once; nothing left reserved
    record = audit_records(tmp_path)[-1]
    assert record["stream_cut"] is None and record["status"] == "ok"


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_stream_without_max_tokens_on_a_task_that_runs_out_is_cut_cleanly(
    tmp_path: Path, kind: str
) -> None:
    # 100 tokens: the prompt (7) and the 20-token estimate, then top-ups of 20 until the task has nothing left.
    async with ledger_config(kind) as ledger:
        settings = budgets({"tokens": 100}, default_max_tokens=20, **ledger)
        chunks, st = await stream_story(tmp_path, REGISTRY, settings)
    text = story(chunks)
    assert finish(chunks) == "length" and LONG.startswith(text)
    assert 93 <= count_tokens(text) <= 94  # all the task could afford, at most one chunk past it
    assert st.reserved["tokens"] == 0 and 100 <= st.spent["tokens"] <= 101
    assert cut_by(tmp_path) == "stream cut: task tester/story: tokens limit 100"


async def test_a_stream_without_max_tokens_is_not_cut_by_the_gateway_at_the_models_max_output(
    tmp_path: Path,
) -> None:
    # max_output_tokens sizes the reservation; the model itself stops there. One that goes on (the setting is
    # wrong) is topped up like any stream, and cut only if the task runs out.
    chunks, st = await stream_story(tmp_path, talker(max_output_tokens=20), budgets({"tokens": 100_000}))
    assert (finish(chunks), story(chunks)) == ("stop", LONG)
    usage = chunks[-1].usage
    assert usage is not None and (st.spent["tokens"], st.reserved["tokens"]) == (usage.total_tokens, 0)
    assert audit_records(tmp_path)[-1]["stream_cut"] is None


async def test_a_stream_without_max_tokens_tops_up_its_usd_too_and_is_cut_when_the_usd_runs_out(
    tmp_path: Path,
) -> None:
    # 0.001 USD per output token, 0.1 USD: the estimate's 20 tokens, then top-ups of 20 (priced) until 100.
    settings = budgets({"tokens": 100_000, "usd": 0.1}, default_max_tokens=20)
    chunks, st = await stream_story(tmp_path, talker(pricing={"output_per_mtok": 1000}), settings)
    assert finish(chunks) == "length" and 100 <= count_tokens(story(chunks)) <= 101
    assert st.reserved == {"tokens": 0, "usd_micros": 0} and st.spent["usd_micros"] <= 101_000
    assert cut_by(tmp_path) == "stream cut: task tester/story: usd_micros limit 100000"
