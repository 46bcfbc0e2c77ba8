"""Passthrough of the Responses and Messages APIs to providers that serve them themselves: the client's request
reaches the provider as sent but for the model (Anthropic's thinking, cache_control and server tools; OpenAI's
built-in tools and stored conversations), the answer comes back as the provider sent it, metered from its own
usage, a budget still cuts a stream the API's own way; and whenever the gateway must read or change the call (a
guardrail on the answer, the tool policy) it is translated instead."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import anyio
import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.anthropic_upstream import FakeAnthropic, events_for, message, text
from tests.llm.mediation.test_guardrails import mask
from tests.support import OTHER_KEY, TEST_KEY, audit_records, gateway, serve

SETTINGS: dict[str, Any] = {"audit": {"writer": "inline"}}
THINKING = {"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"}
SERVER_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}


def claude_registry(url: str) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [
                {"name": "claude", "kind": "anthropic", "base_url": url, "api_key": "sk-ant-secret"}
            ],
            "models": [
                {
                    "name": "claude",
                    "targets": [{"provider": "claude", "model": "claude-sonnet-4-5"}],
                    "pricing": {"input_per_mtok": 3, "output_per_mtok": 15},
                }
            ],
        }
    }


@contextlib.asynccontextmanager
async def claude(
    tmp: Path, fake: FakeAnthropic, settings: dict[str, Any] | None = None
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    with anyio.fail_after(30):
        async with (
            serve(fake.app()) as up,
            gateway(tmp, claude_registry(up), {**SETTINGS, **(settings or {})}) as gw,
        ):
            async with anthropic.AsyncAnthropic(base_url=gw[0], api_key=TEST_KEY, max_retries=0) as c:
                yield c


# -- Anthropic Messages ---------------------------------------------------------------------------------------


async def test_a_messages_request_reaches_anthropic_as_sent_and_its_answer_comes_back_as_anthropic_sent_it(
    tmp_path: Path,
) -> None:
    usage = {"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 100}
    fake = FakeAnthropic(replies=[message(THINKING, text("Paris."), usage=usage)])
    ask = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Capital?", "cache_control": {"type": "ephemeral"}}],
        }
    ]
    async with claude(tmp_path, fake) as c:
        m = await c.messages.create(
            model="claude",
            max_tokens=2000,
            messages=ask,  # type: ignore[arg-type]
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[SERVER_TOOL],  # type: ignore[list-item]
            extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
        )
    sent = fake.requests[0]
    assert sent["body"] == {
        "model": "claude-sonnet-4-5",  # the only change: the alias became the upstream's model
        "max_tokens": 2000,
        "messages": ask,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [SERVER_TOOL],
    }
    assert sent["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent["headers"]["x-api-key"] == "sk-ant-secret" and "authorization" not in sent["headers"]
    assert [b.type for b in m.content] == ["thinking", "text"]  # what a translation would have dropped
    assert m.id == "msg_01test" and m.usage.cache_read_input_tokens == 100
    [rec] = [r for r in audit_records(tmp_path) if r["operation"] == "chat"]
    assert rec["passthrough"] == "messages" and rec["endpoint"] == "/v1/messages"
    assert rec["usage"]["input_tokens"] == 120 and rec["usage"]["cached_tokens"] == 100  # cache reads count
    assert rec["usage"]["output_tokens"] == 7 and not rec["usage"]["estimated"]


async def test_a_streamed_message_is_relayed_event_for_event_and_metered_from_its_usage(
    tmp_path: Path,
) -> None:
    reply = message(text("The capital of France is Paris."), usage={"input_tokens": 11, "output_tokens": 9})
    fake = FakeAnthropic(replies=[reply])
    async with claude(tmp_path, fake) as c:
        async with c.messages.stream(
            model="claude", max_tokens=100, messages=[{"role": "user", "content": "Capital?"}]
        ) as stream:
            kinds = [e.type async for e in stream]
            final = await stream.get_final_message()
    expected = [e["type"] for e in events_for(reply)]
    assert [k for k in kinds if k in expected] == [k for k in expected if k != "ping"]
    assert final.content[0].text == "The capital of France is Paris."  # type: ignore[union-attr]
    assert fake.requests[0]["body"]["stream"] is True
    [rec] = [r for r in audit_records(tmp_path) if r["operation"] == "chat"]
    assert rec["passthrough"] == "messages"
    assert (rec["usage"]["input_tokens"], rec["usage"]["output_tokens"]) == (11, 9)


async def test_a_budget_cuts_a_passed_through_stream_with_anthropics_own_ending(tmp_path: Path) -> None:
    long = " ".join(f"word{i}" for i in range(400))
    fake = FakeAnthropic(replies=[message(text(long), usage={"input_tokens": 10, "output_tokens": 400})])
    budgets = {"budgets": {"rules": [{"match": {"roles": ["agents"]}, "task": {"tokens": 60}}]}}
    async with claude(tmp_path, fake, budgets) as c:
        async with c.messages.stream(
            model="claude", max_tokens=40, messages=[{"role": "user", "content": "Talk."}],
            extra_headers={"x-agentgw-task": "cut-me"},
        ) as stream:  # fmt: skip
            final = await stream.get_final_message()
    # the upstream went on past max_tokens: the reservation ran out, the stream was cut, the SDK saw a whole message
    assert final.stop_reason == "max_tokens"
    assert 0 < len(final.content[0].text) < len(long)  # type: ignore[union-attr]
    [rec] = [r for r in audit_records(tmp_path) if r["operation"] == "chat"]
    assert rec["stream_cut"] == "budget_exhausted"


async def test_with_a_guardrail_on_answers_a_messages_call_is_translated_and_a_server_tool_refused(
    tmp_path: Path,
) -> None:
    fake = FakeAnthropic(replies=[message(text("Mail me at ann@example.com"))])
    async with claude(tmp_path, fake, mask("response")) as c:
        m = await c.messages.create(
            model="claude", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
        )
        with pytest.raises(anthropic.BadRequestError) as refused:
            await c.messages.create(
                model="claude", max_tokens=50, messages=[{"role": "user", "content": "Hi"}],
                tools=[SERVER_TOOL],  # type: ignore[list-item]
            )  # fmt: skip
    assert m.content[0].text == "Mail me at <EMAIL_1>"  # type: ignore[union-attr]
    assert m.id != "msg_01test"  # the gateway's own Message, made from the chat answer
    assert refused.value.body["error"]["code"] == "unsupported_tool"  # type: ignore[index]
    assert len(fake.requests) == 1  # the refused call reached no provider


async def test_with_request_guardrails_a_part_they_cannot_read_is_refused_not_passed_through_unseen(
    tmp_path: Path,
) -> None:
    pdf = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "AKIA… a secret"},
    }
    ask = [{"role": "user", "content": [pdf, {"type": "text", "text": "Summarise."}]}]
    fake = FakeAnthropic()
    async with claude(tmp_path, fake, mask("request")) as c:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await c.messages.create(model="claude", max_tokens=50, messages=ask)  # type: ignore[arg-type]
        plain = await c.messages.create(
            model="claude", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
        )
    assert "document" in refused.value.message
    assert plain.id == "msg_01test"  # what the guardrails can read is still passed through
    assert len(fake.requests) == 1


# -- OpenAI Responses -----------------------------------------------------------------------------------------


def _response(rid: str, said: str, previous: str | None = None) -> dict[str, Any]:
    return {
        "id": rid, "object": "response", "created_at": 1, "status": "completed", "model": "gpt-5-2025",
        "output": [
            {"id": "ws_1", "type": "web_search_call", "status": "completed"},
            {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": said, "annotations": []}]},
        ],
        "previous_response_id": previous, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 10}, "output_tokens": 5,
                  "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 35},
    }  # fmt: skip


@dataclass
class FakeResponses:
    """An OpenAI upstream that serves the Responses API itself (ids resp_up_1, resp_up_2, …)."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/responses", self.create, methods=["POST"])])

    async def create(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append({"headers": dict(request.headers), "body": body})
        r = _response(f"resp_up_{len(self.requests)}", "It is sunny.", body.get("previous_response_id"))
        if not body.get("stream"):
            return JSONResponse(r)
        events = [
            {"type": "response.created", "response": {**r, "status": "in_progress", "output": [], "usage": None}},
            {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0,
             "delta": "It is sunny.", "logprobs": []},
            {"type": "response.completed", "response": r},
        ]  # fmt: skip
        frames = [
            f"event: {e['type']}\n".encode() + b"data: " + orjson.dumps({**e, "sequence_number": i}) + b"\n\n"
            for i, e in enumerate(events, 1)
        ]

        async def relay() -> AsyncIterator[bytes]:
            for f in frames:
                yield f

        return StreamingResponse(relay(), media_type="text/event-stream")


def responses_registry(url: str) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [
                {"name": "openai", "kind": "openai", "base_url": f"{url}/v1", "api_key": "sk-up-secret",
                 "responses_api": True},
                {"name": "mock", "kind": "mock"},
            ],
            "models": [
                {"name": "gpt", "targets": [{"provider": "openai", "model": "gpt-5"}]},
                {"name": "local", "targets": [{"provider": "mock", "model": "local-1"}]},
            ],
        }
    }  # fmt: skip


async def test_a_responses_request_with_a_built_in_tool_is_passed_through_and_continued_by_its_owner_only(
    tmp_path: Path,
) -> None:
    fake = FakeResponses()
    with anyio.fail_after(30):
        async with (
            serve(fake.app()) as up,
            gateway(tmp_path, responses_registry(up), SETTINGS) as (url, _),
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as mine,
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=OTHER_KEY, max_retries=0) as theirs,
        ):
            first = await mine.responses.create(
                model="gpt",
                input="Weather in Paris?",
                tools=[{"type": "web_search"}],
                reasoning={"effort": "low"},
            )
            stream = await mine.responses.create(
                model="gpt", input="And tomorrow?", previous_response_id=first.id, stream=True
            )
            events = [e async for e in stream]
            read = await mine.responses.retrieve(first.id)
            with pytest.raises(openai.NotFoundError):
                await theirs.responses.create(model="gpt", input="Mine now?", previous_response_id=first.id)
            with pytest.raises(openai.BadRequestError) as elsewhere:
                await mine.responses.create(model="local", input="Go on", previous_response_id=first.id)
            with pytest.raises(openai.BadRequestError) as built_in:
                await mine.responses.create(model="local", input="Search", tools=[{"type": "web_search"}])
    assert first.id == "resp_up_1" and first.output[0].type == "web_search_call"
    assert fake.requests[0]["body"] == {
        "model": "gpt-5", "input": "Weather in Paris?", "tools": [{"type": "web_search"}],
        "reasoning": {"effort": "low"},
    }  # fmt: skip
    assert fake.requests[0]["headers"]["authorization"] == "Bearer sk-up-secret"
    assert (
        fake.requests[1]["body"]["previous_response_id"] == "resp_up_1"
    )  # the provider holds the conversation
    assert [e.type for e in events][-1] == "response.completed" and events[-1].response.id == "resp_up_2"
    assert read.id == "resp_up_1" and read.output_text == "It is sunny."
    assert elsewhere.value.code == "previous_response_not_portable"
    assert built_in.value.code == "unsupported_tool"
    assert len(fake.requests) == 2  # the foreign and the unportable continuations reached no provider
    recs = [r for r in audit_records(tmp_path) if r["operation"] == "chat" and r["http_status"] == 200]
    assert [r["passthrough"] for r in recs] == ["responses", "responses"]
    assert recs[0]["usage"]["input_tokens"] == 30 and recs[0]["usage"]["cached_tokens"] == 10
    assert recs[1]["usage"]["output_tokens"] == 5 and not recs[1]["usage"]["estimated"]
