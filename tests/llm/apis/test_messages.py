"""The Anthropic Messages API (the real `anthropic` SDK, unchanged but for `base_url` and the key) through the
gateway, served as chat completions by the mock provider: text, streaming events, tool_use and tool_result, token
counting, and errors in Anthropic's envelope."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest

from tests.support import MOCK_REGISTRY, TEST_KEY, audit_records, gateway

SETTINGS = {"audit": {"writer": "inline"}}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def client(url: str, key: str = TEST_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0)


async def test_a_message_answers_with_the_models_text_stop_reason_and_usage(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), client(url) as c:
        m = await c.messages.create(
            model="mock-fast",
            max_tokens=100,
            system="Be brief.",
            messages=[{"role": "user", "content": "hello there"}],
        )
    assert m.id.startswith("msg_") and m.role == "assistant" and m.model == "mock-fast"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == "hello there"  # type: ignore[union-attr]
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    [record] = [x for x in audit_records(tmp_path) if x["operation"] == "chat"]
    assert record["endpoint"] == "/v1/messages" and record["request"]["messages"] == 2


async def test_a_streamed_message_sends_anthropics_events_and_the_sdk_assembles_it(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), client(url) as c:
        async with c.messages.stream(
            model="mock-fast", max_tokens=100, messages=[{"role": "user", "content": "stream this sentence"}]
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert final.content[0].text == "stream this sentence"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_use_and_its_tool_result_round_trip(tmp_path: Path, stream: bool) -> None:
    ask = [{"role": "user", "content": "Paris"}]
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), client(url) as c:
        if stream:
            async with c.messages.stream(
                model="mock-fast", max_tokens=100, messages=ask, tools=[WEATHER]
            ) as s:
                first = await s.get_final_message()
        else:
            first = await c.messages.create(model="mock-fast", max_tokens=100, messages=ask, tools=[WEATHER])
        [use] = first.content
        assert use.type == "tool_use" and use.name == "get_weather" and isinstance(use.input, dict)
        assert first.stop_reason == "tool_use"
        second = await c.messages.create(
            model="mock-fast",
            max_tokens=100,
            tools=[WEATHER],
            messages=[
                *ask,
                {"role": "assistant", "content": [use.model_dump()]},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
                },
            ],
        )
    assert second.content[0].text == "Tool result: sunny"  # type: ignore[union-attr]


async def test_tokens_are_counted_and_errors_come_in_anthropics_envelope(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), client(url) as c:
        counted = await c.messages.count_tokens(
            model="mock-fast", messages=[{"role": "user", "content": "hello"}]
        )
        with pytest.raises(anthropic.NotFoundError) as unknown:
            await c.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.BadRequestError) as empty:
            await c.messages.create(model="mock-fast", max_tokens=10, messages=[])
        with pytest.raises(anthropic.AuthenticationError):
            async with client(url, "agw-wrong-key-0123456789") as stranger:
                await stranger.messages.create(
                    model="mock-fast", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
                )
    assert counted.input_tokens > 0
    assert unknown.value.body["type"] == "error" and unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert empty.value.body["error"]["code"] == "missing_messages"  # type: ignore[index]
