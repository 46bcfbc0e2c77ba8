"""The Anthropic provider: the unchanged `openai` SDK talks to a Claude model through agentgw, which speaks the
Messages API to a real (fake) Anthropic upstream on loopback; plus the pure translation functions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import openai
import orjson
import pytest

from agentgw.llm.providers.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    StreamTranslator,
    finish_reason,
    message_to_completion,
    request_to_messages,
    usage_to_openai,
)
from agentgw.llm.providers.base import ProviderError
from tests.anthropic_upstream import FakeAnthropic, events_for, message, text, tool_use
from tests.llm.providers.support import PNG, WEATHER_TOOL, chunks_of, user
from tests.support import TEST_KEY, audit_bytes, audit_records, gateway, serve

SECRET = "sk-ant-test-secret"
UPSTREAM_MODEL = "claude-sonnet-4-5"


def registry(url: str, retry: int = 3, **provider: Any) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [
                {"name": "claude", "kind": "anthropic", "base_url": url, "api_key": SECRET, **provider}
            ],
            "models": [
                {
                    "name": "claude-fast",
                    "targets": [{"provider": "claude", "model": UPSTREAM_MODEL}],
                    "retry": {"attempts": retry, "backoff_ms": 0},
                }
            ],
        }
    }


@contextlib.asynccontextmanager
async def claude(
    tmp_path: Path, fake: FakeAnthropic, *, suffix: str = "", retry: int = 3, **provider: Any
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The fake Anthropic upstream, the gateway in front of it, and an SDK client of the gateway."""
    with anyio.fail_after(30):
        async with serve(fake.app()) as up, gateway(tmp_path, registry(up + suffix, retry, **provider)) as gw:
            url = gw[0]
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as client:
                yield client


# -- through the gateway, with the openai SDK ---------------------------------------------------------------


async def test_system_and_multi_turn_messages_reach_anthropic_as_system_and_alternating_turns(
    tmp_path: Path,
) -> None:
    fake = FakeAnthropic(replies=[message(text("Il fait beau."))])
    async with claude(tmp_path, fake) as client:
        completion = await client.chat.completions.create(
            model="claude-fast",
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
            stop="END",
        )
    assert completion.choices[0].message.content == "Il fait beau."
    assert completion.choices[0].finish_reason == "stop"
    [req] = fake.requests
    assert req["path"] == "/v1/messages"
    assert req["headers"]["x-api-key"] == SECRET
    assert req["headers"]["anthropic-version"] == "2023-06-01"
    assert req["headers"]["content-type"] == "application/json"
    assert "authorization" not in req["headers"]  # the caller's gateway key never goes upstream
    assert req["body"] == {
        "model": UPSTREAM_MODEL,
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            },
        ],
        "max_tokens": DEFAULT_MAX_TOKENS,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
    }


async def test_configured_version_and_headers_are_sent_and_a_v1_base_url_is_not_doubled(
    tmp_path: Path,
) -> None:
    fake = FakeAnthropic()
    async with claude(
        tmp_path, fake, suffix="/v1", api_version="2099-01-01", headers={"anthropic-beta": "beta-1"}
    ) as client:
        await client.chat.completions.create(model="claude-fast", messages=[user("hi")], max_tokens=50)
    [req] = fake.requests
    assert req["path"] == "/v1/messages"
    assert req["headers"]["anthropic-version"] == "2099-01-01"
    assert req["headers"]["anthropic-beta"] == "beta-1"
    assert req["body"]["max_tokens"] == 50


async def test_tool_use_comes_back_as_tool_calls_and_tool_results_go_up_as_one_user_message(
    tmp_path: Path,
) -> None:
    fake = FakeAnthropic(
        replies=[
            message(
                text("Checking both."),
                tool_use("toolu_1", "get_weather", {"city": "Paris"}),
                tool_use("toolu_2", "get_weather", {"city": "Lyon"}),
                stop_reason="tool_use",
            ),
            message(text("Sunny in Paris, cloudy in Lyon.")),
        ]
    )
    async with claude(tmp_path, fake) as client:
        messages: list[Any] = [user("Weather in Paris and Lyon?")]
        first = await client.chat.completions.create(
            model="claude-fast", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Checking both."
        calls = choice.message.tool_calls or []
        assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
            ("toolu_1", "get_weather", {"city": "Paris"}),
            ("toolu_2", "get_weather", {"city": "Lyon"}),
        ]
        messages += [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "cloudy"},
        ]
        second = await client.chat.completions.create(
            model="claude-fast", messages=messages, tools=[WEATHER_TOOL]
        )
    assert second.choices[0].message.content == "Sunny in Paris, cloudy in Lyon."
    up_first, up_second = (r["body"] for r in fake.requests)
    assert up_first["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert up_first["tool_choice"] == {"type": "any"}
    assert "tool_choice" not in up_second  # Anthropic's default (auto) when the client named none
    assert up_second["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "cloudy"},
            ],
        },
    ]


async def test_streamed_text_arrives_as_content_deltas_and_ends_with_stop(tmp_path: Path) -> None:
    fake = FakeAnthropic(replies=[message(text("The quick brown fox jumps."), usage={"output_tokens": 6})])
    async with claude(tmp_path, fake) as client:
        stream = await client.chat.completions.create(
            model="claude-fast", messages=[user("Tell me about foxes")], stream=True
        )
        chunks = [c async for c in stream]
    assert fake.requests[0]["body"]["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) > 4  # relayed as deltas, not gathered
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The quick brown fox jumps."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    usage = audit_records(tmp_path)[-1]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["estimated"]) == (12, 6, False)


async def test_streamed_tool_call_arguments_concatenate_in_the_sdk(tmp_path: Path) -> None:
    fake = FakeAnthropic(
        replies=[
            message(
                text("Let me look."),
                tool_use("toolu_a", "get_weather", {"city": "Saint-Étienne", "days": [1, 2, 3]}),
                tool_use("toolu_b", "get_time", {}),
                stop_reason="tool_use",
            )
        ]
    )
    async with claude(tmp_path, fake) as client:
        async with client.chat.completions.stream(
            model="claude-fast", messages=[user("weather and time")], tools=[WEATHER_TOOL]
        ) as stream:
            final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look."
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []
    ]  # type: ignore[union-attr]
    assert calls == [
        ("toolu_a", "get_weather", {"city": "Saint-Étienne", "days": [1, 2, 3]}),
        ("toolu_b", "get_time", {}),
    ]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
async def test_stop_reasons_map_to_finish_reasons_streaming_or_not(
    tmp_path: Path, stop_reason: str, finish: str
) -> None:
    fake = FakeAnthropic(replies=[message(text("x"), stop_reason=stop_reason)])
    async with claude(tmp_path, fake) as client:
        whole = await client.chat.completions.create(model="claude-fast", messages=[user("hi")])
        stream = await client.chat.completions.create(model="claude-fast", messages=[user("hi")], stream=True)
        finishes = [c.choices[0].finish_reason async for c in stream if c.choices]
    assert whole.choices[0].finish_reason == finish
    assert [f for f in finishes if f] == [finish]


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_counts_cache_tokens_as_prompt_tokens_and_the_audit_records_them(
    tmp_path: Path, stream: bool
) -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "output_tokens": 7,
    }
    fake = FakeAnthropic(replies=[message(text("cached answer"), usage=usage)])
    async with claude(tmp_path, fake) as client:
        if stream:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="claude-fast",
                    messages=[user("hi")],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            ]
            assert chunks[-1].choices == []
            got = chunks[-1].usage
        else:
            got = (await client.chat.completions.create(model="claude-fast", messages=[user("hi")])).usage
    assert got is not None
    assert (got.prompt_tokens, got.completion_tokens, got.total_tokens) == (130, 7, 137)
    assert got.prompt_tokens_details is not None and got.prompt_tokens_details.cached_tokens == 100
    record = audit_records(tmp_path)[-1]
    assert record["status"] == "ok"
    assert {
        k: record["usage"][k] for k in ("input_tokens", "output_tokens", "cached_tokens", "estimated")
    } == {
        "input_tokens": 130,
        "output_tokens": 7,
        "cached_tokens": 100,
        "estimated": False,
    }


async def test_upstream_400_is_relayed_as_an_openai_400_and_never_shows_the_api_key(tmp_path: Path) -> None:
    fake = FakeAnthropic(failures=[400], error_message=f"max_tokens: too large (key {SECRET})")
    async with claude(tmp_path, fake) as client:
        with pytest.raises(openai.BadRequestError) as err:
            await client.chat.completions.create(model="claude-fast", messages=[user("hi")])
    assert err.value.status_code == 400
    assert "max_tokens: too large" in err.value.message
    assert err.value.type == "invalid_request_error"
    assert SECRET not in err.value.response.text
    assert len(fake.requests) == 1  # a 400 is the request's fault: not retried
    assert SECRET.encode() not in audit_bytes(tmp_path)


@pytest.mark.parametrize("failures", [[529], [500], [529, 500]])
async def test_overloaded_and_server_errors_are_retried(tmp_path: Path, failures: list[int]) -> None:
    fake = FakeAnthropic(failures=list(failures))
    async with claude(tmp_path, fake) as client:
        completion = await client.chat.completions.create(model="claude-fast", messages=[user("hi")])
    assert completion.choices[0].message.content == "hello from claude"
    assert len(fake.requests) == len(failures) + 1
    attempts = audit_records(tmp_path)[-1]["attempts"]
    assert [(a["outcome"], a["status"]) for a in attempts] == [("error", s) for s in failures] + [("ok", 200)]


async def test_overload_that_outlasts_the_retries_ends_as_a_502(tmp_path: Path) -> None:
    fake = FakeAnthropic(failures=[529, 529])
    async with claude(tmp_path, fake, retry=2) as client:
        with pytest.raises(openai.InternalServerError) as err:
            await client.chat.completions.create(model="claude-fast", messages=[user("hi")])
    assert err.value.status_code == 502
    assert "scripted failure" in err.value.message


async def test_an_upstream_that_does_not_answer_in_time_is_a_504(tmp_path: Path) -> None:
    release = anyio.Event()
    fake = FakeAnthropic(hang=release)
    async with claude(tmp_path, fake, retry=1, timeout_s=0.3) as client:
        try:
            with pytest.raises(openai.APIStatusError) as err:
                await client.chat.completions.create(model="claude-fast", messages=[user("hi")])
        finally:
            release.set()  # let the held request finish, so the upstream shuts down at once
    assert err.value.status_code == 504
    assert audit_records(tmp_path)[-1]["attempts"][0]["outcome"] == "timeout"


def _partial_stream(tail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    head = events_for(message(text("partial answer"), usage={"output_tokens": 2}))
    return [e for e in head if e["type"] not in ("message_delta", "message_stop")] + tail


@pytest.mark.parametrize(
    "tail",
    [
        [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}],
        [],  # the connection ends without message_stop
    ],
    ids=["error_event", "no_message_stop"],
)
async def test_a_stream_that_fails_midway_ends_with_an_error_frame_and_is_audited(
    tmp_path: Path, tail: list[dict[str, Any]]
) -> None:
    fake = FakeAnthropic(streams=[_partial_stream(tail)])
    async with claude(tmp_path, fake) as client:
        stream = await client.chat.completions.create(model="claude-fast", messages=[user("hi")], stream=True)
        chunks: list[Any] = []

        async def drain() -> None:
            async for c in stream:
                chunks.append(c)

        with pytest.raises(openai.APIError) as err:  # the gateway ends the stream with an error frame
            await drain()
    assert "upstream" in err.value.message
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "partial answer"
    assert not any(c.choices[0].finish_reason for c in chunks if c.choices)
    assert len(fake.requests) == 1  # output had reached the client: never retried
    record = audit_records(tmp_path)[-1]
    assert (record["status"], record["stream_cut"]) == ("error", "upstream_error")


async def test_an_overloaded_error_before_any_output_is_retried(tmp_path: Path) -> None:
    overloaded = [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    fake = FakeAnthropic(streams=[overloaded])
    async with claude(tmp_path, fake) as client:
        stream = await client.chat.completions.create(model="claude-fast", messages=[user("hi")], stream=True)
        content = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert content == "hello from claude"
    assert len(fake.requests) == 2


async def test_embeddings_on_an_anthropic_model_are_a_clear_400_without_an_upstream_call(
    tmp_path: Path,
) -> None:
    fake = FakeAnthropic()
    async with claude(tmp_path, fake) as client:
        with pytest.raises(openai.BadRequestError) as err:
            await client.embeddings.create(model="claude-fast", input="hello")
    assert "no embeddings API" in err.value.message
    assert fake.requests == []


async def test_a_request_anthropic_cannot_express_is_a_400_without_an_upstream_call(tmp_path: Path) -> None:
    fake = FakeAnthropic()
    async with claude(tmp_path, fake) as client:
        with pytest.raises(openai.BadRequestError) as err:
            await client.chat.completions.create(model="claude-fast", messages=[user("hi")], n=2)
    assert "n must be 1" in err.value.message
    assert fake.requests == []


# -- request translation ------------------------------------------------------------------------------------


def translate(**payload: Any) -> dict[str, Any]:
    return request_to_messages({"model": "alias", **payload}, UPSTREAM_MODEL)


@pytest.mark.parametrize(
    ("messages", "system", "turns"),
    [
        ([user("hi")], None, [{"role": "user", "content": "hi"}]),
        (
            [{"role": "system", "content": "A"}, {"role": "system", "content": "B"}, user("hi")],
            "A\n\nB",
            [{"role": "user", "content": "hi"}],
        ),
        (
            [user("one"), user("two")],
            None,
            [{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}],
        ),
        (
            [
                user("q"),
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "r"}]},
                user("and?"),
            ],
            None,
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "c1",
                            "content": [{"type": "text", "text": "r"}],
                        },
                        {"type": "text", "text": "and?"},
                    ],
                },
            ],
        ),
        (
            [user([{"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}}])],
            None,
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://example.org/cat.png"}}
                    ],
                }
            ],
        ),
        (
            [user([{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}])],
            None,
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}],
                }
            ],
        ),
        (
            [user("hi"), {"role": "assistant", "content": ""}, user("again")],
            None,
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}],
                }
            ],
        ),
    ],
    ids=[
        "plain",
        "systems_joined",
        "same_role_merged",
        "tool_result_then_user",
        "image_url",
        "cache_control",
        "empty_assistant_dropped",
    ],
)
def test_messages_become_a_system_prompt_and_alternating_turns(
    messages: list[dict[str, Any]], system: str | None, turns: list[dict[str, Any]]
) -> None:
    out = translate(messages=messages)
    assert out.get("system") == system
    assert out["messages"] == turns


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_and_parallel_tool_calls_map_to_anthropic_tool_choice(
    choice: Any, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    payload: dict[str, Any] = {"messages": [user("hi")], "tools": [WEATHER_TOOL]}
    if choice is not None:
        payload["tool_choice"] = choice
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    assert translate(**payload).get("tool_choice") == expected


def test_tool_choice_is_left_out_when_no_tools_are_offered() -> None:
    out = translate(messages=[user("hi")], tool_choice="required")
    assert "tools" not in out and "tool_choice" not in out


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, DEFAULT_MAX_TOKENS),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 50}, 50),
        ({"max_tokens": 100, "max_completion_tokens": 50}, 50),
        ({"max_tokens": None}, DEFAULT_MAX_TOKENS),
    ],
)
def test_max_tokens_is_always_set(limits: dict[str, Any], expected: int) -> None:
    assert translate(messages=[user("hi")], **limits)["max_tokens"] == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
        ({"stop": None}, {}),
        ({"temperature": 0.5, "top_p": 0.8}, {"temperature": 0.5, "top_p": 0.8}),
        ({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
        ({"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
        ({"frequency_penalty": 0.5, "seed": 3}, {}),  # no Anthropic counterpart: dropped
    ],
)
def test_sampling_and_stop_parameters_carry_over(params: dict[str, Any], expected: dict[str, Any]) -> None:
    out = translate(messages=[user("hi")], **params)
    base = {"model", "messages", "max_tokens"}
    assert {k: v for k, v in out.items() if k not in base} == expected
    assert out["model"] == UPSTREAM_MODEL


def test_a_tool_without_parameters_gets_an_empty_object_schema() -> None:
    tool = {"type": "function", "function": {"name": "now"}}
    assert translate(messages=[user("hi")], tools=[tool])["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"messages": [user("hi")], "n": 3}, "n must be 1"),
        ({"messages": [user([{"type": "input_audio", "input_audio": {}}])]}, "'input_audio'"),
        ({"messages": [user([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}])]}, "Image URLs"),
        (
            {"messages": [user("hi")], "tools": [{"type": "custom", "custom": {"name": "x"}}]},
            "function tools",
        ),
        (
            {"messages": [user("hi")], "tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}},
            "tool_choice",
        ),
        ({"messages": [{"role": "tool", "content": "r"}]}, "tool_call_id"),
        ({"messages": [{"role": "assistant", "tool_calls": 5}]}, "must be an array"),
        ({"messages": [{"role": "function", "name": "f", "content": "r"}]}, "'function'"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ]
            },
            "JSON object",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "text parts",
        ),
    ],
)
def test_requests_anthropic_cannot_express_are_refused_as_a_400_without_retry(
    payload: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ProviderError) as err:
        translate(**payload)
    assert (err.value.status, err.value.retryable) == (400, False)
    assert fragment in err.value.message


# -- response translation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reason_maps_to_finish_reason(stop_reason: str | None, finish: str) -> None:
    assert finish_reason(stop_reason) == finish


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 5, "output_tokens": 2}, (5, 2, 7, 0)),
        ({"input_tokens": 5, "cache_read_input_tokens": 40, "output_tokens": 2}, (45, 2, 47, 40)),
        ({"input_tokens": 5, "cache_creation_input_tokens": 30, "output_tokens": 2}, (35, 2, 37, 0)),
        (
            {"input_tokens": 1, "cache_read_input_tokens": None, "cache_creation_input_tokens": None},
            (1, 0, 1, 0),
        ),
    ],
)
def test_usage_adds_cache_reads_and_writes_to_prompt_tokens(
    usage: dict[str, Any], expected: tuple[int, int, int, int]
) -> None:
    out = usage_to_openai(usage)
    got = (out["prompt_tokens"], out["completion_tokens"], out["total_tokens"])
    assert (*got, out["prompt_tokens_details"]["cached_tokens"]) == expected


def test_a_complete_message_becomes_a_chat_completion() -> None:
    msg = message(
        text("a"),
        text("b"),
        tool_use("toolu_9", "f", {"x": [1]}),
        stop_reason="tool_use",
        usage={"output_tokens": 3},
    )
    out = message_to_completion(msg, UPSTREAM_MODEL, created=7)
    assert out == {
        "id": "msg_01test",
        "object": "chat.completion",
        "created": 7,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "ab",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "toolu_9",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x":[1]}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": usage_to_openai(msg["usage"]),
    }


@pytest.mark.parametrize(
    ("blocks", "content"),
    [([], ""), ([tool_use("t", "f", {})], None), ([{"type": "thinking", "thinking": "hm"}, text("x")], "x")],
)
def test_completion_content_is_text_or_null_beside_tool_calls(
    blocks: list[dict[str, Any]], content: str | None
) -> None:
    assert message_to_completion(message(*blocks), "m")["choices"][0]["message"]["content"] == content


def test_a_message_without_usage_yields_a_completion_without_usage() -> None:
    msg = {k: v for k, v in message(text("x")).items() if k != "usage"}
    assert "usage" not in message_to_completion(msg, "m")


# -- stream translation -------------------------------------------------------------------------------------


def run_stream(
    events: list[dict[str, Any]], include_usage: bool = True
) -> tuple[list[Any], StreamTranslator]:
    tr = StreamTranslator(UPSTREAM_MODEL, include_usage, created=1)
    return chunks_of([f for e in events for f in tr.feed(orjson.dumps(e))]), tr


def test_a_streamed_answer_becomes_openai_chunks_with_tool_calls_numbered_from_zero() -> None:
    msg = message(
        text("Hi "),
        tool_use("toolu_1", "f", {"a": "b" * 10}),
        tool_use("toolu_2", "g", {}),
        stop_reason="tool_use",
        usage={"input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 9},
    )
    chunks, tr = run_stream(events_for(msg, piece=3))
    assert tr.done
    assert chunks[-1] == b"[DONE]"
    *body, usage_chunk, _ = chunks
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_01test" for c in body)
    assert all(c["usage"] is None for c in body)
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in body]
    assert "".join(d.get("content") or "" for d in deltas) == "Hi "
    args: dict[int, str] = {}
    heads = []
    for d in deltas:
        for tc in d.get("tool_calls") or []:
            if "id" in tc:
                heads.append(
                    (tc["index"], tc["id"], tc["type"], tc["function"]["name"], tc["function"]["arguments"])
                )
            args[tc["index"]] = args.get(tc["index"], "") + tc["function"]["arguments"]
    assert heads == [(0, "toolu_1", "function", "f", ""), (1, "toolu_2", "function", "g", "")]
    assert {i: json.loads(a) for i, a in args.items()} == {0: {"a": "b" * 10}, 1: {}}
    assert body[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == usage_to_openai(
        {"input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 9}
    )


def test_without_include_usage_there_is_no_usage_chunk_and_no_usage_field() -> None:
    chunks, _ = run_stream(events_for(message(text("hey"))), include_usage=False)
    assert chunks[-1] == b"[DONE]"
    assert all("usage" not in c and c["choices"] for c in chunks[:-1])


def test_output_tokens_come_from_the_last_message_delta_and_input_from_message_start() -> None:
    msg = message(text("x"), usage={"input_tokens": 50, "cache_creation_input_tokens": 5, "output_tokens": 1})
    events = events_for(msg)
    events.insert(-1, {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 42}})
    chunks, _ = run_stream(events)
    assert chunks[-2]["usage"]["prompt_tokens"] == 55
    assert chunks[-2]["usage"]["completion_tokens"] == 42


@pytest.mark.parametrize(
    "event",
    [
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}},
        {"type": "content_block_start", "index": 5, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "some_future_event"},
    ],
)
def test_events_without_a_chat_completions_counterpart_produce_nothing(event: dict[str, Any]) -> None:
    tr = StreamTranslator("m", False)
    tr.feed(orjson.dumps({"type": "message_start", "message": message()}))
    assert tr.feed(orjson.dumps(event)) == []


def test_nothing_is_emitted_after_message_stop() -> None:
    tr = StreamTranslator("m", False)
    for e in events_for(message(text("x"))):
        tr.feed(orjson.dumps(e))
    assert (
        tr.feed(
            orjson.dumps(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "late"}}
            )
        )
        == []
    )


@pytest.mark.parametrize(
    ("kind", "status", "retryable"),
    [
        ("overloaded_error", 529, True),
        ("api_error", 500, True),
        ("rate_limit_error", 429, True),
        ("invalid_request_error", 400, False),
        ("mystery_error", 502, True),
    ],
)
def test_an_error_event_raises_a_provider_error_with_its_status(
    kind: str, status: int, retryable: bool
) -> None:
    tr = StreamTranslator("m", False, secrets=[SECRET])
    event = {"type": "error", "error": {"type": kind, "message": f"bad things {SECRET}"}}
    with pytest.raises(ProviderError) as err:
        tr.feed(orjson.dumps(event))
    assert (err.value.status, err.value.retryable) == (status, retryable)
    assert "bad things" in err.value.message and SECRET not in err.value.message
    assert SECRET not in json.dumps(err.value.body)
