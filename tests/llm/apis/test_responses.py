"""The Responses API (`client.responses.*` of the real `openai` SDK) through the gateway, served as chat
completions by the mock provider: text, streaming events with usage, function tools and their results, a
conversation carried on by `previous_response_id` (bound to the principal that made it), stored responses read and
deleted, and bad requests answered with OpenAI errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import openai
import pytest

from tests.budget.test_budgets import REDIS_URL
from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, audit_records, drop_redis_keys, gateway

SETTINGS = {"audit": {"writer": "inline"}}


def client(url: str, key: str = TEST_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


async def test_a_response_answers_with_the_models_text_and_usage(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), client(url) as c:
        r = await c.responses.create(model="mock-fast", input="hello there", instructions="Be brief.")
    assert r.id.startswith("resp_") and r.status == "completed" and r.model == "mock-fast"
    assert r.output_text == "hello there"  # the mock echoes the last user message
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    [record] = [x for x in audit_records(tmp_path) if x["operation"] == "chat"]
    assert record["endpoint"] == "/v1/responses" and record["target"] == "llm:mock-fast"
    assert record["request"]["messages"] == 2  # the instructions as a system message, then the input


async def test_a_streamed_response_sends_the_typed_events_in_order_and_ends_with_usage(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), client(url) as c:
        stream = await c.responses.create(model="mock-fast", input="stream this sentence please", stream=True)
        events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "stream this sentence please"
    done = events[-1].response
    assert done.output_text == deltas and done.usage is not None and done.usage.output_tokens > 0
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"):  # fmt: skip
        assert kinds.count(kind) == 1, kind


@pytest.mark.parametrize("stream", [False, True])
async def test_a_function_call_and_its_output_carry_on_through_previous_response_id(
    tmp_path: Path, stream: bool
) -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), client(url) as c:
        if stream:
            events = [
                e
                async for e in await c.responses.create(
                    model="mock-fast", input="Paris", tools=tools, stream=True
                )
            ]
            first = events[-1].response
            assert any(e.type == "response.function_call_arguments.delta" for e in events)
        else:
            first = await c.responses.create(model="mock-fast", input="Paris", tools=tools)
        [call] = first.output
        assert call.type == "function_call" and call.name == "get_weather"
        second = await c.responses.create(
            model="mock-fast",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
            tools=tools,
        )
    assert second.output_text == "Tool result: sunny, 21 C"
    sent = [x for x in audit_records(tmp_path) if x["operation"] == "chat"][-1]
    assert sent["request"]["messages"] == 3  # the user's input, the model's call, the call's output


async def test_a_stored_response_is_read_and_deleted_only_by_its_principal(tmp_path: Path) -> None:
    async with (
        gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _),
        client(url) as mine,
        client(url, OTHER_KEY) as theirs,
    ):
        r = await mine.responses.create(model="mock-fast", input="remember me")
        again = await mine.responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.create(model="mock-fast", input="and me?", previous_response_id=r.id)
        await mine.responses.delete(r.id)
        with pytest.raises(openai.NotFoundError):
            await mine.responses.retrieve(r.id)
        unstored = await mine.responses.create(model="mock-fast", input="forget me", store=False)
        with pytest.raises(openai.NotFoundError):
            await mine.responses.retrieve(unstored.id)
    assert again.id == r.id and again.output_text == "remember me"


async def test_bad_responses_requests_get_openai_errors_and_reach_no_provider(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), client(url) as c:
        with pytest.raises(openai.BadRequestError) as no_input:
            await c.responses.create(model="mock-fast")  # type: ignore[call-overload]
        with pytest.raises(openai.BadRequestError) as web:
            await c.responses.create(model="mock-fast", input="hi", tools=[{"type": "web_search"}])
        with pytest.raises(openai.NotFoundError):
            await c.responses.create(model="no-such-model", input="hi")
        with pytest.raises(openai.NotFoundError):
            await c.responses.create(model="mock-fast", input="hi", previous_response_id="resp_nope")
    assert no_input.value.code == "missing_input"
    assert web.value.code == "unsupported_tool"
    calls = [x for x in audit_records(tmp_path) if x["operation"] == "chat"]
    assert all(not x["attempts"] for x in calls)  # refused before any upstream was tried


async def test_the_openai_agents_sdk_runs_a_tool_using_agent_in_its_default_responses_mode(
    tmp_path: Path,
) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # the SDK would upload traces to OpenAI: offline here
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny in {city}"

    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), client(url) as c:
        agent = Agent(
            name="forecaster",
            instructions="Answer with the weather.",
            tools=[get_weather],
            model=OpenAIResponsesModel(model="mock-fast", openai_client=c),
        )
        result = await Runner.run(agent, "Paris")
    assert asked == ["Paris"]
    assert result.final_output == "Tool result: sunny in Paris"
    calls = [x for x in audit_records(tmp_path) if x["operation"] == "chat"]
    assert [x["endpoint"] for x in calls] == ["/v1/responses", "/v1/responses"]


async def test_with_a_redis_store_a_response_made_on_one_gateway_is_continued_and_read_on_another(
    tmp_path: Path,
) -> None:
    prefix = f"agw-test-{uuid.uuid4().hex[:8]}"
    settings = {
        **SETTINGS,
        "llm": {"responses": {"store": "redis", "redis_url": REDIS_URL}},
        "budgets": {"key_prefix": prefix},
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        async with (
            gateway(tmp_path / "a", MOCK_REGISTRY, settings) as (url_a, _),
            gateway(tmp_path / "b", MOCK_REGISTRY, settings) as (url_b, _),
            client(url_a) as on_a,
            client(url_b) as on_b,
            client(url_b, OTHER_KEY) as theirs_on_b,
        ):
            first = await on_a.responses.create(model="mock-fast", input="remember me", stream=False)
            streamed = await on_a.responses.create(model="mock-fast", input="and me", stream=True)
            last = [e async for e in streamed][-1].response
            read = await on_b.responses.retrieve(first.id)
            later = await on_b.responses.create(model="mock-fast", input="next", previous_response_id=last.id)
            with pytest.raises(openai.NotFoundError):
                await theirs_on_b.responses.retrieve(first.id)
            await on_b.responses.delete(first.id)
            with pytest.raises(openai.NotFoundError):
                await on_a.responses.retrieve(first.id)
    finally:
        await drop_redis_keys(REDIS_URL, prefix)
    assert read.output_text == "remember me"
    assert later.status == "completed"
    sent = [x for x in audit_records(tmp_path / "b") if x["operation"] == "chat"][-1]
    assert sent["request"]["messages"] == 3  # "and me", its answer (kept on gateway a), then "next"
