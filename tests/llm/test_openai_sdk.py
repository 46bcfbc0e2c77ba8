"""The unchanged `openai` SDK works against agentgw by changing only base_url and api_key: sync, async,
streaming and tool calls, against the in-process mock provider."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import openai
import pytest

from tests.support import MOCK_REGISTRY, TEST_KEY, audit_records, gateway

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def test_sync_client_gets_a_chat_completion_with_usage(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _):

        def call() -> openai.types.chat.ChatCompletion:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0)
            return client.chat.completions.create(
                model="mock-fast", messages=[{"role": "user", "content": "ping pong"}]
            )

        completion = await anyio.to_thread.run_sync(call)
    assert completion.choices[0].message.content == "ping pong"
    assert completion.usage is not None and completion.usage.completion_tokens == 2


async def test_async_client_streams_and_gets_no_usage_chunk_it_did_not_ask_for(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _):
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="mock-fast", messages=[{"role": "user", "content": "one two three four"}], stream=True
            )
            chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    record = audit_records(tmp_path)[-1]
    assert record["usage"]["output_tokens"] == 4
    assert record["usage"]["estimated"] is False  # the gateway asked upstream for usage and stripped it


async def test_streaming_client_that_asks_for_usage_gets_the_usage_chunk(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _):
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="mock-fast",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 1


async def test_tool_calls_round_trip_through_the_sdk(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _):
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as client:
            messages: list[dict[str, object]] = [{"role": "user", "content": "Paris"}]
            first = await client.chat.completions.create(
                model="mock-fast", messages=messages, tools=[WEATHER_TOOL]
            )
            call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
            assert first.choices[0].finish_reason == "tool_calls"
            assert call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris"}
            messages += [
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            ]
            second = await client.chat.completions.create(
                model="mock-fast", messages=messages, tools=[WEATHER_TOOL]
            )
    assert second.choices[0].message.content == "Tool result: sunny"


async def test_streamed_tool_call_arguments_concatenate_by_index(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _):
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="mock-fast",
                messages=[{"role": "user", "content": "Lyon"}],
                tools=[WEATHER_TOOL],
                stream=True,
            )
            name, args = "", ""
            async for chunk in stream:
                for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    name += tc.function.name or "" if tc.function else ""
                    args += tc.function.arguments or "" if tc.function else ""
    assert name == "get_weather"
    assert json.loads(args) == {"city": "Lyon"}


async def test_embeddings_and_model_listing_work_through_the_sdk(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _):
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as client:
            emb = await client.embeddings.create(model="mock-embed", input=["a", "b"])
            models = [m.id async for m in client.models.list()]
            one = await client.models.retrieve("mock-fast")
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    assert models == ["mock-embed", "mock-fast"]
    assert one.id == "mock-fast"


async def test_unknown_model_is_a_404_model_not_found_in_the_sdk(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _):
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as client:
            with pytest.raises(openai.NotFoundError) as err:
                await client.chat.completions.create(
                    model="nope", messages=[{"role": "user", "content": "x"}]
                )
    assert err.value.code == "model_not_found"


async def test_wrong_key_is_rejected_with_401_in_the_sdk(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _):
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="agw-wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError) as err:
                await client.models.list()
    assert err.value.status_code == 401
