"""Real agent frameworks as callers through the gateway, the way a user meets the product: LangChain's
`ChatOpenAI` (in Responses mode, and once in chat completions mode) and a pydantic-ai `Agent` on its
`OpenAIResponsesModel`, each answering a question, streaming, and calling a tool then answering from its result,
against the in-process mock provider. The gateway's audit records show each call arrived at `/v1/responses`
with usage. Nothing reaches the internet: every client has an explicit loopback base URL, framework tracing is
off, and any non-loopback connection fails the test."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from tests.support import MOCK_REGISTRY, TEST_KEY, audit_records, gateway

SETTINGS = {"audit": {"writer": "inline"}}
QUIET_ENV = (  # tracing and telemetry the frameworks could send upstream if these were set
    "LANGSMITH_TRACING",
    "LANGCHAIN_TRACING_V2",
    "LANGSMITH_API_KEY",
    "LANGCHAIN_API_KEY",
    "LOGFIRE_TOKEN",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
)


def _loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    try:
        return bool(ipaddress.ip_address(host).is_loopback)
    except ValueError:
        return host == "localhost"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No framework telemetry, and any attempt to look up or connect to a host beyond loopback fails loudly."""
    for name in QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    real_getaddrinfo = socket.getaddrinfo
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        assert host is None or _loopback(host), f"a framework looked up {host!r}"
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        assert not isinstance(address, tuple) or _loopback(address[0]), f"a framework dialled {address!r}"
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        assert not isinstance(address, tuple) or _loopback(address[0]), f"a framework dialled {address!r}"
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def calls_seen(tmp: Path) -> list[dict[str, Any]]:
    """The gateway's chat call records (read after the gateway has shut down)."""
    calls = [x for x in audit_records(tmp) if x["operation"] == "chat"]
    for record in calls:
        assert record["usage"]["input_tokens"] > 0 and record["usage"]["output_tokens"] > 0, record
        assert record["target"] == "llm:mock-fast" and record["status"] == "ok", record
        assert record["stream_cut"] is None, record  # a stream read to its end is not a client gone
    return calls


# -- LangChain --------------------------------------------------------------------------------------------------


def chat_model(url: str, *, responses: bool = True) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model="mock-fast",
        base_url=f"{url}/v1",
        api_key=SecretStr(TEST_KEY),
        use_responses_api=responses,
        max_retries=0,
        timeout=5,
    )


async def test_langchain_in_responses_mode_answers_and_streams_a_question(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _):
        llm = chat_model(url)
        with anyio.fail_after(5):
            answer = await llm.ainvoke("What is the capital of France?")
            chunks = [chunk async for chunk in llm.astream("Stream this sentence please")]
    assert answer.text == "What is the capital of France?"  # the mock echoes the question
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == "Stream this sentence please"
    assert [x["endpoint"] for x in calls_seen(tmp_path)] == ["/v1/responses", "/v1/responses"]


async def test_langchain_in_responses_mode_calls_a_bound_tool_and_answers_from_its_result(
    tmp_path: Path,
) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    weather = tool(get_weather)
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _):
        llm = chat_model(url).bind_tools([weather])
        question = HumanMessage("Paris")
        with anyio.fail_after(5):
            asked = await llm.ainvoke([question])
            [call] = asked.tool_calls
            result = ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])
            final = await llm.ainvoke([question, asked, result])
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    assert final.text == "Tool result: sunny in Paris" and not final.tool_calls
    assert [x["endpoint"] for x in calls_seen(tmp_path)] == ["/v1/responses", "/v1/responses"]


async def test_langchain_in_chat_completions_mode_reaches_the_chat_endpoint_instead(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _):
        with anyio.fail_after(5):
            answer = await chat_model(url, responses=False).ainvoke("Plain chat, please")
    assert answer.text == "Plain chat, please"
    [record] = calls_seen(tmp_path)
    assert record["endpoint"] is None  # plain chat completions: no other API was translated


# -- pydantic-ai ------------------------------------------------------------------------------------------------


def agent(url: str, **kwargs: Any) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=f"{url}/v1", api_key=TEST_KEY)
    return Agent(OpenAIResponsesModel("mock-fast", provider=provider), **kwargs)


async def test_a_pydantic_ai_agent_on_the_responses_model_answers_a_question(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _):
        with anyio.fail_after(5):
            result = await agent(url, instructions="Be brief.").run("What is the capital of France?")
    assert result.output == "What is the capital of France?"
    assert result.usage.output_tokens > 0
    [record] = calls_seen(tmp_path)
    assert record["endpoint"] == "/v1/responses"
    assert record["request"]["messages"] == 2  # the instructions, then the question


async def test_a_pydantic_ai_agent_calls_its_tool_and_answers_from_the_result(tmp_path: Path) -> None:
    asked: list[str] = []
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _):
        forecaster = agent(url, instructions="Answer with the weather.")

        @forecaster.tool_plain
        def weather(city: str) -> str:
            """The weather in a city."""
            asked.append(city)
            return get_weather(city)

        with anyio.fail_after(5):
            result = await forecaster.run("Paris")
    assert asked == ["Paris"]
    assert result.output == "Tool result: sunny in Paris"
    assert [x["endpoint"] for x in calls_seen(tmp_path)] == ["/v1/responses", "/v1/responses"]


async def test_a_pydantic_ai_agent_streams_its_answer(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _):
        with anyio.fail_after(5):
            async with agent(url).run_stream("Stream this sentence please") as run:
                pieces = [piece async for piece in run.stream_text(delta=True, debounce_by=None)]
                usage = run.usage
    assert len(pieces) > 1 and "".join(pieces) == "Stream this sentence please"
    assert usage.output_tokens > 0
    [record] = calls_seen(tmp_path)
    assert record["endpoint"] == "/v1/responses" and record["request"]["stream"] is True
