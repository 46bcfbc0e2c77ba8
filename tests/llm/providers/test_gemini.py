"""The Gemini provider: the google-genai SDK reads the fake Gemini upstream (so the fake speaks the real wire
format); the unchanged `openai` SDK talks to a Gemini model through agentgw, which speaks Gemini's native API to
that fake on loopback; plus the pure translation functions."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from agentgw.llm.providers.base import ProviderError, upstream_error
from agentgw.llm.providers.gemini import version_root
from agentgw.llm.providers.gemini_response import (
    StreamTranslator,
    embeddings_to_openai,
    finish_reason,
    gemini_error,
    response_to_completion,
    usage_to_openai,
)
from agentgw.llm.providers.gemini_translate import (
    SKIP_SIGNATURE,
    embeddings_request,
    gemini_schema,
    request_to_gemini,
)
from tests.gemini_upstream import (
    API_KEY,
    MODEL_VERSION,
    FakeGemini,
    blocked,
    chunks_for,
    function_call,
    response,
    text,
)
from tests.llm.providers.support import PNG, chunks_of, user
from tests.support import TEST_KEY, audit_bytes, audit_records, gateway, serve

UPSTREAM_MODEL = "gemini-2.5-flash"
SETTINGS = {"audit": {"writer": "inline"}}
# google-genai subclasses aiohttp.ClientSession, which aiohttp discourages; not ours to fix
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)  # records written in-process: a fast, complete shutdown

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def provider(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "kind": "gemini", "base_url": url, "api_key": API_KEY}


def registry(*urls: str, retry: int = 2) -> dict[str, Any]:
    """One gemini provider per URL; model `gemini-fast` tries them in order (`gemini-2.5-flash`, then `-2`, …)."""
    names = [f"gemini{i}" for i in range(len(urls))]
    return {
        "llm": {
            "providers": [provider(n, u) for n, u in zip(names, urls, strict=True)],
            "models": [
                {
                    "name": "gemini-fast",
                    "targets": [
                        {"provider": n, "model": UPSTREAM_MODEL if i == 0 else f"{UPSTREAM_MODEL}-{i + 1}"}
                        for i, n in enumerate(names)
                    ],
                    "retry": {"attempts": retry, "backoff_ms": 0},
                }
            ],
        }
    }


@contextlib.asynccontextmanager
async def through_gateway(tmp_path: Path, *fakes: FakeGemini) -> AsyncIterator[openai.AsyncOpenAI]:
    """The fake Gemini upstreams, the gateway in front of them, and an `openai` SDK client of the gateway."""
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serve(f.app())) for f in fakes]
        url, _ = await stack.enter_async_context(gateway(tmp_path, registry(*urls), SETTINGS))
        yield await stack.enter_async_context(
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0)
        )


# -- the google-genai SDK against the fake: the fake speaks Gemini's wire format ---------------------------


@contextlib.asynccontextmanager
async def sdk(fake: FakeGemini) -> AsyncIterator[genai.Client]:
    async with serve(fake.app()) as url:
        # api_version pinned to what the gateway uses (google-genai 3.x itself defaults to v1)
        options = types.HttpOptions(base_url=url, api_version="v1beta")
        yield genai.Client(api_key=API_KEY, http_options=options)


async def test_the_google_genai_sdk_reads_the_fakes_complete_answers_with_function_calls_and_usage() -> None:
    fake = FakeGemini(
        replies=[
            response(text("Checking."), function_call("get_weather", {"city": "Paris"}, signature="c2ln"))
        ]
    )
    with anyio.fail_after(10):
        async with sdk(fake) as client:
            answer = await client.aio.models.generate_content(
                model=UPSTREAM_MODEL,
                contents="Weather in Paris?",
                config=types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.1),
            )
    assert answer.text == "Checking."
    [call] = answer.function_calls or []
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
    assert answer.candidates and answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.usage_metadata and answer.usage_metadata.total_token_count == 17
    [req] = fake.requests
    assert (req["path"], req["headers"]["x-goog-api-key"]) == (
        f"/v1beta/models/{UPSTREAM_MODEL}:generateContent",
        API_KEY,
    )
    assert req["body"]["systemInstruction"]["parts"] == [
        {"text": "Be brief."}
    ]  # what our translation sends too
    assert req["body"]["contents"] == [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}]


async def test_the_google_genai_sdk_reads_the_fakes_sse_stream_chunk_by_chunk() -> None:
    fake = FakeGemini(
        replies=[response(text("The quick brown fox jumps."), usage={"candidatesTokenCount": 7})]
    )
    with anyio.fail_after(10):
        async with sdk(fake) as client:
            chunks = [
                c
                async for c in await client.aio.models.generate_content_stream(
                    model=UPSTREAM_MODEL, contents="hi"
                )
            ]
    assert len(chunks) > 3
    assert "".join(c.text or "" for c in chunks) == "The quick brown fox jumps."
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata and last.usage_metadata.candidates_token_count == 7
    assert (fake.requests[0]["method"], fake.requests[0]["query"]) == ("streamGenerateContent", "alt=sse")


async def test_the_google_genai_sdk_reads_the_fakes_embeddings_and_errors() -> None:
    fake = FakeGemini(failures=[400], error_message="Invalid JSON payload")
    with anyio.fail_after(10):
        async with sdk(fake) as client:
            with pytest.raises(genai_errors.ClientError) as err:
                await client.aio.models.generate_content(model=UPSTREAM_MODEL, contents="hi")
            embedded = await client.aio.models.embed_content(
                model="gemini-embedding-001",
                contents=["abc", "hello"],
                config=types.EmbedContentConfig(output_dimensionality=3),
            )
    assert (err.value.code, err.value.status, err.value.message) == (
        400,
        "INVALID_ARGUMENT",
        "Invalid JSON payload",
    )
    assert [e.values for e in embedded.embeddings or []] == [[3.0, 0.5, 0.25], [5.0, 0.5, 0.25]]
    assert fake.requests[1]["body"]["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "abc"}], "role": "user"},
        "outputDimensionality": 3,
    }


# -- through the gateway, with the openai SDK ---------------------------------------------------------------


async def test_system_and_multi_turn_chat_reaches_gemini_as_system_instruction_and_user_model_turns(
    tmp_path: Path,
) -> None:
    fake = FakeGemini(
        replies=[response(text("Il fait "), text("beau."), usage={"cachedContentTokenCount": 4})]
    )
    with anyio.fail_after(20):
        async with through_gateway(tmp_path, fake) as client:
            completion = await client.chat.completions.create(
                model="gemini-fast",
                messages=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                    user("Hi"),
                    {"role": "assistant", "content": "Bonjour"},
                    user(
                        [
                            {"type": "text", "text": "Weather here?"},
                            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        ]
                    ),
                ],
                temperature=0.2,
                top_p=0.9,
                max_tokens=64,
                stop="END",
            )
    assert completion.choices[0].message.content == "Il fait beau."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL_VERSION
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 5)
    [req] = fake.requests
    assert req["path"] == f"/v1beta/models/{UPSTREAM_MODEL}:generateContent"
    assert req["headers"]["x-goog-api-key"] == API_KEY
    assert "authorization" not in req["headers"]  # the caller's gateway key never goes upstream
    assert API_KEY not in req["path"] + req["query"]  # never in the URL
    assert req["body"] == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Bonjour"}]},
            {
                "role": "user",
                "parts": [
                    {"text": "Weather here?"},
                    {"inlineData": {"mimeType": "image/png", "data": PNG}},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 64,
            "stopSequences": ["END"],
        },
    }
    record = audit_records(tmp_path)[-1]
    assert record["status"] == "ok"
    usage = record["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["cached_tokens"], usage["estimated"]) == (
        12,
        5,
        4,
        False,
    )


async def test_a_streamed_answer_arrives_as_deltas_and_a_final_usage_chunk_and_is_metered(
    tmp_path: Path,
) -> None:
    answer = response(
        text("The quick brown fox jumps."), usage={"candidatesTokenCount": 6, "thoughtsTokenCount": 3}
    )
    fake = FakeGemini(replies=[answer])
    with anyio.fail_after(20):
        async with through_gateway(tmp_path, fake) as client:
            stream = await client.chat.completions.create(
                model="gemini-fast",
                messages=[user("Tell me about foxes")],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
    req = fake.requests[0]
    assert (req["method"], req["query"]) == ("streamGenerateContent", "alt=sse")
    assert "stream" not in req["body"] and "stream_options" not in req["body"]
    *body, last = chunks
    assert body[0].choices[0].delta.role == "assistant"
    assert len(body) > 4  # relayed as deltas, not gathered
    assert "".join(c.choices[0].delta.content or "" for c in body) == "The quick brown fox jumps."
    assert [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason] == ["stop"]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (12, 9, 17)
    usage = audit_records(tmp_path)[-1]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["estimated"]) == (12, 9, False)


async def test_a_function_call_comes_back_as_tool_calls_and_the_tool_result_goes_up_as_a_function_response(
    tmp_path: Path,
) -> None:
    fake = FakeGemini(
        replies=[
            response(
                function_call("get_weather", {"city": "Paris"}, signature="c2lnLTE="),
                function_call("get_weather", {"city": "Lyon"}),
            ),
            response(text("Sunny in Paris, cloudy in Lyon.")),
            response(function_call("get_weather", {"city": "Saint-Étienne", "days": [1, 2]})),
        ]
    )
    with anyio.fail_after(20):
        async with through_gateway(tmp_path, fake) as client:
            messages: list[Any] = [user("Weather in Paris and Lyon?")]
            first = await client.chat.completions.create(
                model="gemini-fast", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
            )
            choice = first.choices[0]
            calls = choice.message.tool_calls or []
            messages += [
                choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
                {"role": "tool", "tool_call_id": calls[1].id, "content": '{"sky": "cloudy"}'},
            ]
            second = await client.chat.completions.create(
                model="gemini-fast", messages=messages, tools=[WEATHER_TOOL]
            )
            async with client.chat.completions.stream(
                model="gemini-fast", messages=[user("and Saint-Étienne?")], tools=[WEATHER_TOOL]
            ) as stream:
                streamed = await stream.get_final_completion()
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Lyon"}),
    ]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id
    assert second.choices[0].message.content == "Sunny in Paris, cloudy in Lyon."
    up_first, up_second, _ = (r["body"] for r in fake.requests)
    assert up_first["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}},
                        "required": ["city"],
                    },
                }
            ]
        }
    ]
    assert up_first["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert "toolConfig" not in up_second  # Gemini's default (AUTO) when the client named none
    assert up_second["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                # the thought signature went out in extra_content and came back with the client's history
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": "c2lnLTE=",
                },
                {"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                {"functionResponse": {"name": "get_weather", "response": {"sky": "cloudy"}}},
            ],
        },
    ]
    [streamed_call] = streamed.choices[0].message.tool_calls or []
    assert streamed.choices[0].finish_reason == "tool_calls"
    assert json.loads(streamed_call.function.arguments) == {"city": "Saint-Étienne", "days": [1, 2]}


async def test_an_upstream_400_is_relayed_with_a_stable_code_and_the_api_key_never_shows(
    tmp_path: Path,
) -> None:
    fake = FakeGemini(
        failures=[400],
        error_message=f"Invalid value at 'generation_config.temperature' (key {API_KEY})",
        replies=[blocked("PROHIBITED_CONTENT")],
    )
    with anyio.fail_after(20):
        async with through_gateway(tmp_path, fake) as client:
            with pytest.raises(openai.BadRequestError) as err:
                await client.chat.completions.create(
                    model="gemini-fast", messages=[user("hi")], temperature=9
                )
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(model="gemini-fast", messages=[user("something bad")])
    assert (err.value.status_code, err.value.code, err.value.type) == (
        400,
        "invalid_argument",
        "invalid_request_error",
    )
    assert "generation_config.temperature" in err.value.message
    assert API_KEY not in err.value.response.text
    assert len(fake.requests) == 2  # a 400 is the request's fault: not retried
    assert refused.value.code == "content_filter"
    assert "Gemini blocked the prompt (PROHIBITED_CONTENT)." in refused.value.message
    assert [r["status"] for r in audit_records(tmp_path)] == ["error", "error"]
    assert API_KEY.encode() not in audit_bytes(tmp_path)


async def test_server_errors_are_retried_then_failed_over_to_the_next_target(tmp_path: Path) -> None:
    failing = FakeGemini(failures=[500, 503])
    healthy = FakeGemini(replies=[response(text("from the second target"))])
    with anyio.fail_after(20):
        async with through_gateway(tmp_path, failing, healthy) as client:
            completion = await client.chat.completions.create(model="gemini-fast", messages=[user("hi")])
    assert completion.choices[0].message.content == "from the second target"
    assert [r["model"] for r in failing.requests] == [UPSTREAM_MODEL, UPSTREAM_MODEL]
    assert [r["model"] for r in healthy.requests] == [f"{UPSTREAM_MODEL}-2"]
    attempts = audit_records(tmp_path)[-1]["attempts"]
    assert [(a["outcome"], a["status"]) for a in attempts] == [("error", 500), ("error", 503), ("ok", 200)]


async def test_a_stream_that_ends_without_a_finish_reason_ends_with_an_error_or_is_retried_if_nothing_was_sent(
    tmp_path: Path,
) -> None:
    partial = chunks_for(response(text("partial answer")))[:-1]  # the connection ends before the last chunk
    fake = FakeGemini(streams=[partial, []])
    with anyio.fail_after(20):
        async with through_gateway(tmp_path, fake) as client:
            stream = await client.chat.completions.create(
                model="gemini-fast", messages=[user("hi")], stream=True
            )
            chunks: list[Any] = []

            async def drain() -> None:
                async for c in stream:
                    chunks.append(c)

            with pytest.raises(openai.APIError) as err:  # the gateway ends the stream with an error frame
                await drain()
            assert len(fake.requests) == 1  # output had reached the client: never retried
            retried = await client.chat.completions.create(
                model="gemini-fast", messages=[user("hi")], stream=True
            )
            content = "".join([c.choices[0].delta.content or "" async for c in retried if c.choices])
    assert "finishReason" in err.value.message
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "partial an"
    assert not any(c.choices[0].finish_reason for c in chunks if c.choices)
    assert content == "hello from gemini"  # the empty stream was retried: nothing had been sent
    assert len(fake.requests) == 3
    first = audit_records(tmp_path)[0]
    assert (first["status"], first["stream_cut"]) == ("error", "upstream_error")


async def test_embeddings_reach_batch_embed_contents_and_come_back_in_the_openai_shape(
    tmp_path: Path,
) -> None:
    fake = FakeGemini()
    with anyio.fail_after(20):
        async with through_gateway(tmp_path, fake) as client:
            default = await client.embeddings.create(
                model="gemini-fast", input="hello"
            )  # the SDK asks base64
            floats = await client.embeddings.create(
                model="gemini-fast", input=["abc", "hello world"], dimensions=2, encoding_format="float"
            )
    assert default.data[0].embedding == [5.0, 0.5, 0.25, 0.125]
    assert [d.embedding for d in floats.data] == [[3.0, 0.5], [11.0, 0.5]]
    assert floats.usage.prompt_tokens > 0
    req = fake.requests[1]
    assert req["path"] == f"/v1beta/models/{UPSTREAM_MODEL}:batchEmbedContents"
    assert req["body"]["requests"][1] == {
        "model": f"models/{UPSTREAM_MODEL}",
        "outputDimensionality": 2,
        "content": {"parts": [{"text": "hello world"}]},
    }
    assert audit_records(tmp_path)[-1]["usage"]["input_tokens"] == floats.usage.prompt_tokens


# -- request translation ------------------------------------------------------------------------------------


def translate(model: str = UPSTREAM_MODEL, **payload: Any) -> dict[str, Any]:
    return request_to_gemini({"model": "alias", **payload}, model)


def assistant_calls(*calls: tuple[str, str, str], **extra: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}, **extra}
            for i, n, a in calls
        ],
    }


@pytest.mark.parametrize(
    ("messages", "system", "turns"),
    [
        ([user("hi")], None, [{"role": "user", "parts": [{"text": "hi"}]}]),
        (
            [{"role": "system", "content": "A"}, user("hi"), {"role": "system", "content": "B"}],
            [{"text": "A"}, {"text": "B"}],
            [{"role": "user", "parts": [{"text": "hi"}]}],
        ),
        (
            [user("one"), user("two")],
            None,
            [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}],
        ),
        (
            [
                user("q"),
                assistant_calls(("c1", "f", "")),
                {"role": "tool", "tool_call_id": "c1", "content": "r"},
            ],
            None,
            [
                {"role": "user", "parts": [{"text": "q"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": "r"}}}]},
            ],
        ),
        (
            [{"role": "function", "name": "lookup", "content": "[1, 2]"}],
            None,
            [
                {
                    "role": "user",
                    "parts": [{"functionResponse": {"name": "lookup", "response": {"result": "[1, 2]"}}}],
                }
            ],
        ),
        (
            [
                user(
                    [
                        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
                    ]
                )
            ],
            None,
            [
                {
                    "role": "user",
                    "parts": [
                        {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
                        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
                    ],
                }
            ],
        ),
        (
            [user("hi"), {"role": "assistant", "content": ""}, user("again")],
            None,
            [{"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}],
        ),
    ],
    ids=[
        "plain",
        "systems_hoisted",
        "same_role_merged",
        "tool_round",
        "legacy_function",
        "audio_and_file",
        "empty_assistant",
    ],
)
def test_messages_become_a_system_instruction_and_user_model_turns(
    messages: list[dict[str, Any]], system: list[dict[str, Any]] | None, turns: list[dict[str, Any]]
) -> None:
    out = translate(messages=messages)
    assert out.get("systemInstruction", {}).get("parts") == system
    assert out["contents"] == turns


@pytest.mark.parametrize(
    ("model", "extra", "signatures"),
    [
        ("gemini-2.5-pro", {}, [None, None]),
        ("gemini-3-pro-preview", {}, [SKIP_SIGNATURE, None]),  # Gemini 3 refuses a call without one
        (
            "gemini-3-pro-preview",
            {"extra_content": {"google": {"thought_signature": "real"}}},
            ["real", "real"],
        ),
    ],
)
def test_thought_signatures_come_back_from_extra_content_or_the_documented_bypass_on_gemini_3(
    model: str, extra: dict[str, Any], signatures: list[str | None]
) -> None:
    messages = [user("q"), assistant_calls(("a", "f", "{}"), ("b", "g", '{"x": 1}'), **extra)]
    parts = translate(model, messages=messages)["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in parts] == signatures


@pytest.mark.parametrize(
    ("choice", "expected", "declared"),
    [
        (None, None, ["get_weather", "now"]),
        ("auto", {"mode": "AUTO"}, ["get_weather", "now"]),
        ("none", {"mode": "NONE"}, ["get_weather", "now"]),
        ("required", {"mode": "ANY"}, ["get_weather", "now"]),
        (
            {"type": "function", "function": {"name": "now"}},
            {"mode": "ANY", "allowedFunctionNames": ["now"]},
            ["get_weather", "now"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "now"}}],
                },
            },
            {"mode": "ANY"},
            ["now"],
        ),
    ],
)
def test_tool_choice_maps_to_function_calling_config(
    choice: Any, expected: dict[str, Any] | None, declared: list[str]
) -> None:
    tools = [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}]
    out = translate(messages=[user("hi")], tools=tools, tool_choice=choice)
    assert out.get("toolConfig", {}).get("functionCallingConfig") == expected
    declarations = out["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == declared
    assert all("parameters" not in d for d in declarations if d["name"] == "now")  # no arguments: no schema


def test_tool_choice_is_left_out_when_no_tools_are_offered() -> None:
    out = translate(messages=[user("hi")], tool_choice="required")
    assert "tools" not in out and "toolConfig" not in out


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"max_tokens": 100}, {"maxOutputTokens": 100}),
        ({"max_tokens": 100, "max_completion_tokens": 50}, {"maxOutputTokens": 50}),
        ({"stop": ["a", "b"]}, {"stopSequences": ["a", "b"]}),
        ({"n": 3}, {"candidateCount": 3}),
        ({"n": 1, "stop": None}, None),
        (
            {"presence_penalty": 0.1, "frequency_penalty": 0.2, "seed": 7},
            {"presencePenalty": 0.1, "frequencyPenalty": 0.2, "seed": 7},
        ),
        ({"response_format": {"type": "json_object"}}, {"responseMimeType": "application/json"}),
        ({"response_format": {"type": "text"}}, None),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "strict": True,
                        "schema": {
                            "type": "object",
                            "properties": {"a": {"type": "integer"}},
                            "additionalProperties": False,
                        },
                    },
                }
            },
            {
                "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}},
            },
        ),
        (
            {"user": "u-1", "logit_bias": {"1": 2}, "parallel_tool_calls": False},
            None,
        ),  # no counterpart: dropped
    ],
)
def test_sampling_length_stop_and_output_format_go_into_generation_config(
    params: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    out = translate(messages=[user("hi")], **params)
    assert out.get("generationConfig") == expected
    assert set(out) <= {"contents", "generationConfig"}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {
                "$schema": "x",
                "type": "object",
                "additionalProperties": False,
                "properties": {"a": {"type": "string", "format": "email"}},
            },
            {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
        ),
        (
            {"type": ["string", "null"], "format": "date-time"},
            {"nullable": True, "type": "STRING", "format": "date-time"},
        ),
        ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, {"nullable": True, "type": "INTEGER"}),
        (
            {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]},
        ),
        ({"type": ["integer", "string"]}, {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]}),
        ({"const": "on"}, {"type": "STRING", "enum": ["on"]}),
        ({"type": "integer", "enum": [1, 2]}, {"type": "INTEGER"}),  # Gemini enums are strings only
        ({"enum": ["a", None]}, {"nullable": True, "type": "STRING", "enum": ["a"]}),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "ghost"]},
            {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a"]},
        ),
        (
            {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "number"}}},
            {
                "type": "OBJECT",
                "properties": {"b": {"type": "STRING"}, "a": {"type": "NUMBER"}},
                "propertyOrdering": ["b", "a"],
            },
        ),
        (
            {
                "type": "object",
                "properties": {"p": {"$ref": "#/$defs/P", "description": "who"}},
                "$defs": {"P": {"type": "object", "properties": {"name": {"type": "string"}}}},
            },
            {
                "type": "OBJECT",
                "properties": {
                    "p": {"type": "OBJECT", "properties": {"name": {"type": "STRING"}}, "description": "who"}
                },
            },
        ),
        (
            {
                "$ref": "#/definitions/Node",
                "definitions": {
                    "Node": {"type": "object", "properties": {"next": {"$ref": "#/definitions/Node"}}}
                },
            },
            {"type": "OBJECT", "properties": {"next": {"type": "OBJECT"}}},  # recursion stops at one level
        ),
        (
            {
                "allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}],
                "properties": {"b": {"type": "boolean"}},
            },
            {
                "type": "OBJECT",
                "properties": {"a": {"type": "STRING"}, "b": {"type": "BOOLEAN"}},
                "required": ["a"],
                "propertyOrdering": ["a", "b"],
            },
        ),
        (
            {"type": "array", "items": {"type": "string", "minLength": 1, "examples": ["x"]}, "maxItems": 3},
            {"type": "ARRAY", "items": {"type": "STRING", "minLength": 1}, "maxItems": 3},
        ),
        ("not a schema", {}),
        (
            {"properties": {"a": {"items": {"type": "string"}}}},
            {"type": "OBJECT", "properties": {"a": {"type": "ARRAY", "items": {"type": "STRING"}}}},
        ),
    ],
    ids=[
        "strip_unknown_keys",
        "type_list_nullable",
        "any_of_null",
        "one_of",
        "type_list_many",
        "const",
        "integer_enum_dropped",
        "enum_with_null",
        "required_declared_only",
        "property_order_kept",
        "ref_inlined",
        "recursive_ref",
        "all_of_merged",
        "array_items",
        "not_a_dict",
        "implicit_types",
    ],
)
def test_json_schemas_are_cut_to_the_openapi_subset_gemini_accepts(
    schema: Any, expected: dict[str, Any]
) -> None:
    assert gemini_schema(schema) == expected


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"messages": [user([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}])]}, "data URL"),
        ({"messages": [user([{"type": "video", "video": {}}])]}, "'video'"),
        (
            {"messages": [user("hi")], "tools": [{"type": "custom", "custom": {"name": "x"}}]},
            "function tools",
        ),
        ({"messages": [user("hi")], "tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": [{"role": "tool", "tool_call_id": "unknown", "content": "r"}]}, "tool_call_id"),
        ({"messages": [{"role": "assistant", "tool_calls": 5}]}, "must be an array"),
        ({"messages": [{"role": "critic", "content": "r"}]}, "'critic'"),
        ({"messages": [assistant_calls(("c", "f", "{oops"))]}, "JSON object"),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "text parts",
        ),
        ({"messages": [user("hi")], "n": 2, "stream": True}, "n must be 1"),
        ({"messages": [user("hi")], "response_format": {"type": "grammar"}}, "response_format"),
    ],
)
def test_requests_gemini_cannot_express_are_refused_as_a_400_without_retry(
    payload: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ProviderError) as err:
        translate(**payload)
    assert (err.value.status, err.value.retryable) == (400, False)
    assert fragment in err.value.message
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "unsupported"


@pytest.mark.parametrize(
    ("base", "version", "root"),
    [
        (None, None, "https://generativelanguage.googleapis.com/v1beta"),
        ("https://proxy.example/", None, "https://proxy.example/v1beta"),
        ("https://proxy.example/v1", None, "https://proxy.example/v1"),
        ("https://proxy.example/gemini/v1beta/", None, "https://proxy.example/gemini/v1beta"),
        ("https://proxy.example", "v1", "https://proxy.example/v1"),
    ],
)
def test_the_version_root_comes_from_base_url_or_api_version(
    base: str | None, version: str | None, root: str
) -> None:
    assert version_root(base, version) == root


@pytest.mark.parametrize(
    ("model", "payload", "requests"),
    [
        ("m", {"input": "a"}, [{"model": "models/m", "content": {"parts": [{"text": "a"}]}}]),
        (
            "m",
            {"input": ["a", "b"], "dimensions": 8},
            [
                {"model": "models/m", "outputDimensionality": 8, "content": {"parts": [{"text": "a"}]}},
                {"model": "models/m", "outputDimensionality": 8, "content": {"parts": [{"text": "b"}]}},
            ],
        ),
        (
            "tunedModels/t-1",
            {"input": "t"},
            [{"model": "tunedModels/t-1", "content": {"parts": [{"text": "t"}]}}],
        ),
        ("models/m", {"input": "t"}, [{"model": "models/m", "content": {"parts": [{"text": "t"}]}}]),
    ],
)
def test_embeddings_input_becomes_one_request_per_text_for_the_models_resource_name(
    model: str, payload: dict[str, Any], requests: list[Any]
) -> None:
    assert embeddings_request(payload, model) == {"requests": requests}


@pytest.mark.parametrize("raw", [[1, 2, 3], [[1, 2]], [], None])
def test_token_inputs_cannot_be_embedded_by_gemini(raw: Any) -> None:
    with pytest.raises(ProviderError) as err:
        embeddings_request({"input": raw}, "m")
    assert (err.value.status, err.value.retryable) == (400, False)


# -- response translation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "calls", "finish"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        (None, False, "stop"),
    ],
)
def test_finish_reasons_map_to_openai(reason: str | None, calls: bool, finish: str) -> None:
    assert finish_reason(reason, calls) == finish


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}, (5, 2, 7, 0, 0)),
        (
            {
                "promptTokenCount": 50,
                "candidatesTokenCount": 2,
                "thoughtsTokenCount": 9,
                "cachedContentTokenCount": 40,
                "totalTokenCount": 61,
            },
            (50, 11, 61, 40, 9),
        ),
        ({"promptTokenCount": 5, "toolUsePromptTokenCount": 3, "candidatesTokenCount": 1}, (8, 1, 9, 0, 0)),
        ({}, (0, 0, 0, 0, 0)),
    ],
)
def test_usage_metadata_maps_to_openai_usage(meta: dict[str, Any], expected: tuple[int, ...]) -> None:
    out = usage_to_openai(meta)
    got = (out["prompt_tokens"], out["completion_tokens"], out["total_tokens"])
    details = (
        out["prompt_tokens_details"]["cached_tokens"],
        out["completion_tokens_details"]["reasoning_tokens"],
    )
    assert (*got, *details) == expected


def test_a_complete_answer_becomes_a_chat_completion_with_one_choice_per_candidate() -> None:
    answer = response(
        {"text": "thinking…", "thought": True},
        text("a"),
        text("b"),
        function_call("f", {"x": [1]}, signature="sig"),
        candidates=2,
    )
    out = response_to_completion(answer, UPSTREAM_MODEL, created=7)
    assert (out["id"], out["object"], out["created"], out["model"]) == (
        "chatcmpl-resp-test-1",
        "chat.completion",
        7,
        MODEL_VERSION,
    )
    assert [c["index"] for c in out["choices"]] == [0, 1]
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "ab"  # thought summaries are not the answer
    [call] = message["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) == 29
    assert {k: v for k, v in call.items() if k != "id"} == {
        "type": "function",
        "function": {"name": "f", "arguments": '{"x":[1]}'},
        "extra_content": {"google": {"thought_signature": "sig"}},
    }
    assert out["usage"] == usage_to_openai(answer["usageMetadata"])


def test_a_function_call_id_from_gemini_is_kept_as_the_tool_call_id() -> None:
    answer = response({"functionCall": {"id": "fc-1", "name": "f", "args": {}}})
    assert response_to_completion(answer, "m")["choices"][0]["message"]["tool_calls"][0]["id"] == "fc-1"


def test_a_blocked_prompt_is_a_400_content_filter_and_an_empty_answer_is_invalid() -> None:
    with pytest.raises(ProviderError) as err:
        response_to_completion(blocked("SAFETY"), "m")
    assert (err.value.status, err.value.retryable, err.value.body["code"]) == (400, False, "content_filter")
    with pytest.raises(ProviderError) as empty:
        response_to_completion({"usageMetadata": {}}, "m")
    assert (empty.value.status, empty.value.retryable, empty.value.invalid) == (502, True, True)


def test_a_gemini_error_body_becomes_an_openai_error_with_its_status_as_code_and_no_key() -> None:
    raw = orjson.dumps(
        {"error": {"code": 429, "message": f"Quota exceeded for {API_KEY}", "status": "RESOURCE_EXHAUSTED"}}
    )
    err = gemini_error(upstream_error(429, raw, [API_KEY]))
    assert (err.status, err.retryable) == (429, True)
    assert err.body == {
        "message": "Quota exceeded for [redacted]",
        "type": "rate_limit_error",
        "param": None,
        "code": "resource_exhausted",
    }
    assert API_KEY not in err.message


def test_embeddings_answers_become_floats_or_base64_with_usage() -> None:
    answer = {"embeddings": [{"values": [0.5, -1.0]}], "usageMetadata": {"promptTokenCount": 3}}
    floats = embeddings_to_openai(answer, {"input": "hi"}, "m")
    assert floats == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}],
        "model": "m",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    packed = embeddings_to_openai(answer, {"input": "hi", "encoding_format": "base64"}, "m")
    assert struct.unpack("<2f", base64.b64decode(packed["data"][0]["embedding"])) == (0.5, -1.0)
    estimated = embeddings_to_openai({"embeddings": [{"values": [1.0]}]}, {"input": ["hello world"]}, "m")
    assert estimated["usage"]["prompt_tokens"] > 0


# -- stream translation -------------------------------------------------------------------------------------


def run_stream(
    chunks: list[dict[str, Any]], include_usage: bool = True
) -> tuple[list[Any], StreamTranslator]:
    tr = StreamTranslator(UPSTREAM_MODEL, include_usage, created=1)
    return chunks_of([f for c in chunks for f in tr.feed(orjson.dumps(c))] + tr.end()), tr


def test_a_streamed_answer_becomes_openai_chunks_with_tool_calls_numbered_from_zero() -> None:
    answer = response(
        text("Hi there"),
        function_call("f", {"a": "b" * 10}, signature="sig"),
        function_call("g", {}),
        usage={"promptTokenCount": 3, "candidatesTokenCount": 9, "totalTokenCount": 12},
    )
    chunks, tr = run_stream(chunks_for(answer, piece=3))
    assert tr.done and chunks[-1] == b"[DONE]"
    *body, usage_chunk, _ = chunks
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-resp-test-1" for c in body)
    assert all(c["model"] == MODEL_VERSION and c["usage"] is None for c in body)
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in body]
    assert "".join(d.get("content") or "" for d in deltas) == "Hi there"
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    assert [
        (tc["index"], tc["function"]["name"], json.loads(tc["function"]["arguments"])) for tc in calls
    ] == [
        (0, "f", {"a": "b" * 10}),
        (1, "g", {}),
    ]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "sig"}}
    assert body[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == usage_to_openai(answer["usageMetadata"])


def test_without_include_usage_there_is_no_usage_chunk_and_no_usage_field() -> None:
    chunks, _ = run_stream(chunks_for(response(text("hey"))), include_usage=False)
    assert chunks[-1] == b"[DONE]"
    assert all("usage" not in c and c["choices"] for c in chunks[:-1])


def test_a_stream_without_a_finish_reason_is_a_retryable_error_and_nothing_follows_the_end() -> None:
    tr = StreamTranslator("m", False)
    tr.feed(orjson.dumps(chunks_for(response(text("partial")))[0]))
    with pytest.raises(ProviderError) as err:
        tr.end()
    assert (err.value.status, err.value.retryable) == (502, True)
    done = StreamTranslator("m", False)
    for c in chunks_for(response(text("x"))):
        done.feed(orjson.dumps(c))
    assert done.end() == [b"data: [DONE]\n\n"]
    assert done.feed(orjson.dumps(chunks_for(response(text("late")))[0])) == []


@pytest.mark.parametrize(
    ("chunk", "status", "retryable", "code"),
    [
        (
            {"error": {"code": 503, "message": f"overloaded {API_KEY}", "status": "UNAVAILABLE"}},
            503,
            True,
            "unavailable",
        ),
        (
            {"error": {"code": 400, "message": f"bad {API_KEY}", "status": "INVALID_ARGUMENT"}},
            400,
            False,
            "invalid_argument",
        ),
        (blocked("SAFETY"), 400, False, "content_filter"),
    ],
)
def test_an_error_or_a_blocked_prompt_in_the_stream_raises_a_provider_error(
    chunk: dict[str, Any], status: int, retryable: bool, code: str
) -> None:
    tr = StreamTranslator("m", False, secrets=[API_KEY])
    with pytest.raises(ProviderError) as err:
        tr.feed(orjson.dumps(chunk))
    assert (err.value.status, err.value.retryable, err.value.body["code"]) == (status, retryable, code)
    assert API_KEY not in err.value.message + json.dumps(err.value.body)


def test_a_stream_chunk_that_is_not_a_json_object_is_an_invalid_response() -> None:
    with pytest.raises(ProviderError) as err:
        StreamTranslator("m", False).feed(b"[1, 2]")
    assert err.value.invalid and err.value.retryable
