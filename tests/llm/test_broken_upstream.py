"""An LLM upstream that answers 200 with something that is not the API's answer (HTML, bad JSON, the wrong
content type on a stream, frames that are not JSON): a 502 `upstream_invalid_response`, nothing charged, an error
on the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.budget.test_budgets import auth, budgets, chat, spent
from tests.support import TEST_KEY, audit_records, gateway, serve

HTML = b"<html><body>502 Bad Gateway (nginx)</body></html>"
CASES = {
    "html body": (False, "text/html", HTML),
    "bad json": (False, "application/json", b'{"id": "chatcmpl-1", "choices": ['),
    "json that is no object": (False, "application/json", b'"ok"'),
    "stream answered as json": (True, "application/json", b'{"id": "x", "choices": []}'),
    "stream answered as html": (True, "text/html", HTML),
    "stream of non-json frames": (True, "text/event-stream", b"data: <html>oops</html>\n\n"),
}


def broken(content_type: str, body: bytes) -> Starlette:
    async def answer(request: Request) -> Response:
        await request.body()
        return Response(body, status_code=200, media_type=content_type)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", answer, methods=["POST"]),
            Route("/v1/messages", answer, methods=["POST"]),
        ]
    )


def registry(url: str, kind: str = "openai") -> dict[str, Any]:
    provider = {"name": "up", "kind": kind, "base_url": f"{url}/v1", "api_key": "sk-test"}
    return {
        "llm": {
            "providers": [provider],
            "models": [{"name": "m", "targets": [{"provider": "up", "model": "real"}]}],
        }
    }


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("case", list(CASES))
async def test_a_broken_200_from_an_llm_upstream_is_a_502_that_charges_nothing(
    tmp_path: Path, case: str, kind: str
) -> None:
    stream, content_type, body = CASES[case]
    settings = {**budgets({"tokens": 1000}), "upstream": {"retry": {"attempts": 1}}}
    async with serve(broken(content_type, body)) as up:
        async with gateway(tmp_path, registry(up, kind), settings) as (url, app), httpx.AsyncClient() as c:
            resp = await c.post(
                f"{url}/v1/chat/completions", json=chat(model="m", stream=stream), headers=auth(task="job")
            )
            left = await spent(app, "tester/job")
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["code"] == "upstream_invalid_response"
    assert left == (0, 0)  # nothing spent, the reservation released
    record = next(r for r in audit_records(tmp_path) if r["target"] == "llm:m")
    assert record["status"] == "error" and record["error_code"] == "upstream_invalid_response"


def sse_upstream(eol: bytes) -> Starlette:
    """An OpenAI-compatible stream with `eol` line endings, a comment, and a priming-style event (an id and
    empty data) before the chunks."""

    async def answer(request: Request) -> Response:
        await request.body()
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "real"}
        frames = [b": keep-alive", b"id: 1" + eol + b"data:", b"retry: 500"]
        for word in ("Hello", " there"):
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            frames.append(b"data: " + orjson.dumps(chunk))
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        frames.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}))
        frames.append(b"data: [DONE]")
        return Response(b"".join(f + eol + eol for f in frames), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", answer, methods=["POST"])])


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
async def test_an_llm_stream_is_read_by_the_sse_rules_whatever_its_line_endings(
    tmp_path: Path, eol: bytes
) -> None:
    settings = budgets({"tokens": 1000})
    async with serve(sse_upstream(eol)) as up:
        async with (
            gateway(tmp_path, registry(up), settings) as (url, app),
            openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key=TEST_KEY, default_headers={"x-agentgw-task": "job"}
            ) as client,
        ):
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            left = await spent(app, "tester/job")
    assert text == "Hello there"
    assert left == (7, 0)  # the upstream's own usage, read from its usage chunk


async def test_a_stream_that_turns_to_garbage_midway_ends_with_an_error_on_the_record(tmp_path: Path) -> None:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "real"}
    first = {**base, "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]}
    body = b"data: " + orjson.dumps(first) + b"\n\ndata: <html>proxy error</html>\n\n"
    async with serve(broken("text/event-stream", body)) as up:
        async with gateway(tmp_path, registry(up), budgets({"tokens": 1000})) as (url, _):
            async with httpx.AsyncClient() as c:
                resp = await c.post(
                    f"{url}/v1/chat/completions", json=chat(model="m", stream=True), headers=auth(task="job")
                )
    assert resp.status_code == 200  # committed with the first chunk
    last = [line for line in resp.text.splitlines() if line.startswith("data: ")][-1]
    assert orjson.loads(last[6:])["error"]["code"] == "upstream_invalid_response"
    record = next(r for r in audit_records(tmp_path) if r["target"] == "llm:m")
    assert record["status"] == "error" and record["error_code"] == "upstream_invalid_response"
