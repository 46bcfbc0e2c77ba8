"""A chat call without max_tokens reserves a bounded estimate of its output (the model's `max_output_tokens`, else
`budgets.default_max_tokens`), not everything the task has left: parallel calls on one task all go through when
they fit, each is settled with its real usage, and a stream is still cut where its reservation ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentgw import create_app, load_settings
from tests.budget.test_budgets import LONG, REGISTRY, auth, budgets, chat, inproc, spent
from tests.support import TEST_KEY, audit_records, gateway, serve, write_config

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


async def test_a_stream_without_max_tokens_is_cut_at_the_models_max_output(tmp_path: Path) -> None:
    registry: dict[str, Any] = {
        "llm": {
            "providers": REGISTRY["llm"]["providers"],
            "models": [
                {
                    "name": "talk",
                    "targets": [{"provider": "talker", "model": "talk-1"}],
                    "max_output_tokens": 20,
                }
            ],
        }
    }
    async with gateway(tmp_path, registry, budgets({"tokens": 100_000})) as (url, app):
        async with openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0, default_headers={"x-agentgw-task": "story"}
        ) as client:
            stream = await client.chat.completions.create(
                model="talk", messages=[{"role": "user", "content": "go"}], stream=True
            )
            chunks = [c async for c in stream]
        used, reserved = await spent(app, "tester/story")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    from agentgw.tokens import count_tokens

    assert chunks[-1].choices[0].finish_reason == "length"
    assert text in LONG and 20 <= count_tokens(text) <= 21  # at most one chunk past the estimate
    assert reserved == 0 and used <= 7 + 21
    assert audit_records(tmp_path)[-1]["stream_cut"] == "budget_exhausted"
