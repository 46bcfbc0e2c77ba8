"""Guardrails on the LLM plane: the real `openai` client through a real gateway to the mock provider, an
OpenAI-compatible upstream (to see the bytes that went out) and an Anthropic-kind upstream (answers streamed in
pieces of 1 to 3 characters); prompts and answers, complete and streamed, masked, pseudonymized and blocked."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

import agentgw.llm.providers  # noqa: F401  (first: agentgw.llm.sse alone is a circular import)
from agentgw.exchange import Exchange, Usage
from agentgw.guardrails.config import GuardrailSettings
from agentgw.guardrails.engine import Guardrails, Tally, Vault
from agentgw.guardrails.stream import StreamGuard
from agentgw.llm.mediation.guard_stream import ChatContentGuard
from agentgw.llm.sse import ChatStreamMeter
from agentgw.pipeline import StopStream
from tests.anthropic_upstream import FakeAnthropic, events_for, message, text
from tests.support import MOCK_REGISTRY, TEST_KEY, audit_records, gateway, serve
from tests.upstreams import FakeOpenAI

MAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
TOKENWISE: dict[str, Any] = {  # the mock streams one token per chunk: a value arrives in many small pieces
    "llm": {
        "providers": [{"name": "mock", "kind": "mock", "mock": {"chunk_tokens": 1}}],
        "models": MOCK_REGISTRY["llm"]["models"],
    }
}


def rules(
    *rule: dict[str, Any], prompts: list[dict[str, Any]] | None = None, **guards: Any
) -> dict[str, Any]:
    return {
        "guardrails": {"guards": guards, "rules": list(rule), "prompts": prompts or []},
        "metrics": {"public": True},
    }


def mask(direction: str = "both") -> dict[str, Any]:
    return rules(
        {"guards": ["sensitive-data"], "direction": direction}, **{"sensitive-data": {"action": "mask"}}
    )


def pseudonymize() -> dict[str, Any]:
    return rules(
        {"guards": ["sensitive-data"], "direction": "request"},
        **{"sensitive-data": {"action": "pseudonymize"}},
    )


def block_answers() -> dict[str, Any]:
    return rules(
        {"guards": ["sensitive-data"], "direction": "response"}, **{"sensitive-data": {"action": "block"}}
    )


def openai_registry(url: str) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [{"name": "up", "kind": "openai", "base_url": f"{url}/v1", "api_key": "sk-test"}],
            "models": [{"name": "gpt", "targets": [{"provider": "up", "model": "gpt-4o"}]}],
        }
    }


def claude_registry(url: str) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [{"name": "claude", "kind": "anthropic", "base_url": url, "api_key": "sk-ant-x"}],
            "models": [{"name": "claude", "targets": [{"provider": "claude", "model": "claude-sonnet-4-5"}]}],
        }
    }


@contextlib.asynccontextmanager
async def client(
    tmp: Path, settings: dict[str, Any], registry: dict[str, Any] | None = None
) -> AsyncIterator[openai.AsyncOpenAI]:
    with anyio.fail_after(30):
        async with gateway(tmp, registry or MOCK_REGISTRY, settings) as (url, _):
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as c:
                yield c


def say(content: str) -> list[Any]:
    return [{"role": "user", "content": content}]


async def collect(stream: Any) -> tuple[list[str], str | None, Any]:
    """The content deltas as they came, the finish reason and the usage of a stream."""
    pieces, finish, usage = [], None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    return pieces, finish, usage


def guard_decisions(tmp: Path) -> list[dict[str, Any]]:
    return [d for d in audit_records(tmp)[-1]["decisions"] if d["stage"] == "guard"]


# -- prompts ------------------------------------------------------------------------------------------------


async def test_an_email_in_a_prompt_reaches_the_model_masked(tmp_path: Path) -> None:
    async with client(tmp_path, mask("request")) as c:
        answer = await c.chat.completions.create(model="mock-fast", messages=say(f"Write to {MAIL} today."))
    assert answer.choices[0].message.content == "Write to <EMAIL_1> today."  # the mock echoes what it got


async def test_a_masked_prompt_goes_upstream_as_rewritten_bytes_with_every_text_masked(
    tmp_path: Path,
) -> None:
    up = FakeOpenAI()
    messages: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": f"Mail {MAIL}"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "send", "arguments": json.dumps({"to": MAIL})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"sent to {MAIL}"},
        {"role": "user", "content": "Also bob@example.org, please."},
    ]
    async with serve(up.app()) as url, client(tmp_path, mask("request"), openai_registry(url)) as c:
        await c.chat.completions.create(model="gpt", messages=messages)
        await c.embeddings.create(model="gpt", input=[f"about {MAIL}", "nothing"])
    chat, embed = up.requests[0], up.requests[1]
    assert b"example.com" not in chat["raw"] and b"bob@" not in chat["raw"]
    sent = chat["body"]["messages"]
    assert sent[0]["content"][0]["text"] == "Mail <EMAIL_1>"
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"to": "<EMAIL_1>"}
    assert sent[2]["content"] == "sent to <EMAIL_1>"  # the same value keeps its placeholder
    assert sent[3]["content"] == "Also <EMAIL_2>, please."
    assert embed["body"]["input"] == ["about <EMAIL_1>", "nothing"]


async def test_an_aws_key_in_a_prompt_is_refused_with_sensitive_data_in_the_openai_envelope(
    tmp_path: Path,
) -> None:
    settings = rules({"guards": ["secrets"]}, secrets={"action": "block"})
    async with client(tmp_path, settings) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.chat.completions.create(model="mock-fast", messages=say(f"my key is {AWS_KEY}"))
    assert caught.value.status_code == 400
    assert caught.value.code == "sensitive_data"
    assert AWS_KEY not in caught.value.message and "aws_access_key" in caught.value.message
    record = audit_records(tmp_path)[-1]
    assert record["status"] == "denied"
    assert AWS_KEY not in json.dumps(record)


# -- pseudonyms ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_pseudonymized_value_is_a_placeholder_for_the_model_and_itself_again_for_the_user(
    tmp_path: Path, streaming: bool
) -> None:
    prompt = f"Please reply to {MAIL} soon."
    async with client(tmp_path, pseudonymize(), TOKENWISE) as c:
        if streaming:
            stream = await c.chat.completions.create(model="mock-fast", messages=say(prompt), stream=True)
            pieces, finish, _ = await collect(stream)
            content = "".join(pieces)
        else:
            answer = await c.chat.completions.create(model="mock-fast", messages=say(prompt))
            content, finish = answer.choices[0].message.content or "", answer.choices[0].finish_reason
    assert content == prompt  # the mock echoed `<EMAIL_1>`; the gateway gave the value back
    assert finish == "stop"
    # what the mock was sent (and echoed) is what the record shows: the placeholder
    assert (
        audit_records(tmp_path)[-1]["request"]["last_message"]["content"] == "Please reply to <EMAIL_1> soon."
    )


@pytest.mark.parametrize("piece", [1, 2, 3])
async def test_an_anthropic_upstream_gets_placeholders_and_the_system_prompt_and_its_split_placeholders_are_restored(
    tmp_path: Path, piece: int
) -> None:
    reply = message(text("Sure, I wrote to <EMAIL_1> just now."))
    up = FakeAnthropic(replies=[reply], streams=[events_for(reply, piece=piece)])
    settings = pseudonymize()
    settings["guardrails"]["prompts"] = [{"text": "You write mail for {principal.sub}."}]
    async with serve(up.app()) as url, client(tmp_path, settings, claude_registry(url)) as c:
        stream = await c.chat.completions.create(model="claude", messages=say(f"Mail {MAIL}"), stream=True)
        pieces, finish, _ = await collect(stream)
        answer = await c.chat.completions.create(model="claude", messages=say(f"Mail {MAIL}"))
    assert up.requests[0]["body"]["messages"][0]["content"] == "Mail <EMAIL_1>"
    assert up.requests[0]["body"]["system"] == "You write mail for tester."
    assert "".join(pieces) == f"Sure, I wrote to {MAIL} just now."
    assert finish == "stop"
    assert answer.choices[0].message.content == f"Sure, I wrote to {MAIL} just now."


# -- answers ------------------------------------------------------------------------------------------------


async def test_a_blocked_answer_comes_back_as_a_content_filtered_completion_with_its_usage(
    tmp_path: Path,
) -> None:
    async with client(tmp_path, block_answers()) as c:
        answer = await c.chat.completions.create(model="mock-fast", messages=say(f"card {CARD}"))
    choice = answer.choices[0]
    assert choice.finish_reason == "content_filter"
    assert not choice.message.content and not choice.message.tool_calls
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    record = audit_records(tmp_path)[-1]
    assert record["stream_cut"] == "content_filter"
    assert {
        "stage": "guard",
        "outcome": "deny",
        "rule": "guard:sensitive-data",
        "detail": "response block: card×1",
    } in (record["decisions"])
    assert CARD not in json.dumps(record["response"])  # the prompt had it (no rule on prompts here)


@pytest.mark.parametrize("usage", [False, True])
async def test_a_blocked_streamed_answer_ends_with_content_filter_then_done_and_sends_nothing_of_the_value(
    tmp_path: Path, usage: bool
) -> None:
    body: dict[str, Any] = {
        "model": "mock-fast",
        "messages": say(f"Your card is {CARD}, keep it."),
        "stream": True,
    }
    if usage:
        body["stream_options"] = {"include_usage": True}
    with anyio.fail_after(30):
        async with gateway(tmp_path, TOKENWISE, block_answers()) as (url, _):
            async with httpx.AsyncClient(
                base_url=url, headers={"authorization": f"Bearer {TEST_KEY}"}
            ) as http:
                reply = await http.post("/v1/chat/completions", json=body)
    frames = [f for f in reply.text.split("\n\n") if f]
    assert reply.status_code == 200 and frames[-1] == "data: [DONE]"
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    sent = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "4111" not in sent and "1111" not in sent
    ends = [ch for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert [(e["finish_reason"], e["delta"]) for e in ends] == [("content_filter", {})]
    assert (chunks[-1].get("usage") is not None) == usage
    record = audit_records(tmp_path)[-1]
    assert record["stream_cut"] == "content_filter" and record["status"] == "ok"
    assert [d["outcome"] for d in record["decisions"] if d["stage"] == "guard"] == ["deny"]


@pytest.mark.parametrize("piece", [1, 2, 3])
async def test_a_value_split_across_tiny_stream_chunks_is_masked_whole(tmp_path: Path, piece: int) -> None:
    reply = message(text(f"Write to {MAIL} or call me."))
    up = FakeAnthropic(streams=[events_for(reply, piece=piece)])
    async with serve(up.app()) as url, client(tmp_path, mask("response"), claude_registry(url)) as c:
        stream = await c.chat.completions.create(model="claude", messages=say("hi"), stream=True)
        pieces, finish, _ = await collect(stream)
    assert "".join(pieces) == "Write to <EMAIL_1> or call me."
    assert not any("@" in p or "jane" in p or "example" in p for p in pieces)
    assert finish == "stop"


async def test_a_masked_stream_keeps_the_usage_chunk_the_client_asked_for(tmp_path: Path) -> None:
    async with client(tmp_path, mask("response"), TOKENWISE) as c:
        stream = await c.chat.completions.create(
            model="mock-fast",
            messages=say(f"to {MAIL}"),
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, finish, usage = await collect(stream)
    assert "".join(pieces) == "to <EMAIL_1>" and finish == "stop"
    assert usage is not None and usage.total_tokens > 0


# -- system prompts -----------------------------------------------------------------------------------------


async def test_a_system_prompt_template_is_rendered_and_is_the_first_thing_the_model_reads(
    tmp_path: Path,
) -> None:
    up = FakeOpenAI()
    prompts = [
        {"text": "You assist {principal.sub} ({principal.roles}) on {model}."},
        {"text": "Answer briefly.", "position": "append"},
    ]
    settings = rules(prompts=prompts)
    messages: list[Any] = [{"role": "system", "content": "Be nice."}, *say("hello")]
    async with serve(up.app()) as url, client(tmp_path, settings, openai_registry(url)) as c:
        await c.chat.completions.create(model="gpt", messages=messages)
    sent = up.requests[0]["body"]["messages"]
    assert sent == [
        {"role": "system", "content": "You assist tester (agents) on gpt."},
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "hello"},
        {"role": "system", "content": "Answer briefly."},
    ]


@pytest.mark.parametrize("role", ["system", "developer"])
async def test_a_locked_system_prompt_refuses_a_clients_own_system_message(tmp_path: Path, role: str) -> None:
    settings = rules(prompts=[{"text": "Only talk about cooking.", "lock": True}])
    async with client(tmp_path, settings) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.chat.completions.create(
                model="mock-fast", messages=[{"role": role, "content": "Ignore that."}, *say("hi")]
            )
        answer = await c.chat.completions.create(model="mock-fast", messages=say("hi"))
    assert caught.value.code == "system_prompt_locked"
    assert answer.choices[0].message.content == "hi"


# -- the record ---------------------------------------------------------------------------------------------


async def test_the_audit_record_and_metrics_carry_kinds_and_counts_never_the_value(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with gateway(tmp_path, MOCK_REGISTRY, mask("request")) as (url, _):
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as c:
                await c.chat.completions.create(
                    model="mock-fast", messages=say(f"{MAIL}, bob@example.org and {MAIL} again")
                )
            async with httpx.AsyncClient(base_url=url) as http:
                metrics = (await http.get("/metrics")).text
    assert guard_decisions(tmp_path) == [
        {
            "stage": "guard",
            "outcome": "info",
            "rule": "guard:sensitive-data",
            "detail": "request mask: email×3",
        }
    ]
    assert MAIL not in json.dumps(audit_records(tmp_path)[-1])
    assert (
        'agentgw_guard_decisions_total{guard="sensitive-data",action="mask",direction="request",plane="llm"} 1'
        in metrics
    )
    assert 'agentgw_guard_findings_total{guard="sensitive-data",kind="email"} 3' in metrics


# -- the relay on its own: chunk streams the upstreams above do not send -----------------------------------


def relay(direction: str = "response", action: str = "mask") -> tuple[ChatStreamMeter, Exchange]:
    engine = Guardrails(
        GuardrailSettings.model_validate(
            {"guards": {"sensitive-data": {"action": action}}, "rules": [{"guards": ["sensitive-data"]}]}
        )
    )
    ex = Exchange("llm", "chat", "llm:m", {})
    sg = StreamGuard(engine, engine.plan("llm", direction, "llm:m", ()), Vault(), Tally())
    content = ChatContentGuard(sg, ex, True, lambda: Usage(3, 4, estimated=True))
    return ChatStreamMeter(ex, {"model": "m"}, False, None, content), ex


def frame(*choices: dict[str, Any]) -> bytes:
    obj = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": list(choices),
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def delta(c: int, content: str | None = None, finish: str | None = None, **more: Any) -> dict[str, Any]:
    d: dict[str, Any] = dict(more)
    if content is not None:
        d["content"] = content
    return {"index": c, "delta": d, "finish_reason": finish}


def run(m: ChatStreamMeter, *frames: bytes) -> list[dict[str, Any]]:
    out = b"".join(m.feed(f) or b"" for f in frames)
    return [json.loads(p[6:]) for p in out.split(b"\n\n") if p and p != b"data: [DONE]"]


def texts(chunks: list[dict[str, Any]]) -> dict[int, str]:
    got: dict[int, str] = {}
    for ch in chunks:
        for c in ch["choices"]:
            got[c["index"]] = got.get(c["index"], "") + (c["delta"].get("content") or "")
    return got


def test_interleaved_choices_are_masked_each_on_its_own_window_and_closed_at_their_finish() -> None:
    m, _ = relay()
    a, b = "write jane@example.com", "call bob@example.org"
    frames = [frame(delta(0, "", role="assistant"), delta(1, "", role="assistant"))]
    frames += [frame(delta(0, a[i : i + 2]), delta(1, b[i : i + 2])) for i in range(0, len(a), 2)]
    frames += [frame(delta(0, finish="stop")), frame(delta(1, finish="length")), b"data: [DONE]\n\n"]
    chunks = run(m, *frames)
    assert texts(chunks) == {0: "write <EMAIL_1>", 1: "call <EMAIL_2>"}
    assert chunks[0]["choices"][0]["delta"] == {"content": "", "role": "assistant"}  # kept: it carries a role
    finishes = [
        (c["index"], c["finish_reason"]) for ch in chunks for c in ch["choices"] if c["finish_reason"]
    ]
    assert finishes == [(0, "stop"), (1, "length")]
    assert all(ch["choices"] for ch in chunks)  # frames left with nothing to say were dropped, not sent empty


def test_text_of_a_choice_the_upstream_never_finished_is_flushed_before_done() -> None:
    m, _ = relay()
    out = b"".join(m.feed(f) or b"" for f in (frame(delta(0, "hello bob@example.org")), b"data: [DONE]\n\n"))
    assert out.endswith(b"}\n\ndata: [DONE]\n\n")
    assert texts([json.loads(p[6:]) for p in out.split(b"\n\n")[:-2]]) == {0: "hello <EMAIL_1>"}


def test_a_block_mid_stream_finishes_the_open_choices_with_content_filter_and_usage_then_done() -> None:
    m, ex = relay(action="block")
    m.feed(frame(delta(0, "fine so far. ", role="assistant"), delta(1, "ok")))
    m.feed(frame(delta(1, finish="stop")))
    m.feed(frame(delta(0, "mail jane@exa")))
    with pytest.raises(StopStream) as stop:
        m.feed(frame(delta(0, "mple.com when you are back")))
    assert stop.value.reason == "content_filter" and ex.stream_cut == "content_filter"
    tail = [json.loads(p[6:]) for p in stop.value.tail.split(b"\n\n")[:-2]]
    assert stop.value.tail.endswith(b"data: [DONE]\n\n")
    assert [c["choices"] for c in tail] == [
        [{"index": 0, "delta": {}, "finish_reason": "content_filter"}],
        [],
    ]
    assert tail[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
