"""The Bedrock provider: the unchanged `openai` SDK talks to a Bedrock model through agentgw, which speaks
Converse and ConverseStream (SigV4-signed, binary event streams) to a fake Bedrock runtime on loopback that
verifies every signature; a real botocore client holds that fake to the real wire format. Plus the pure
translation functions."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import botocore.session
import openai
import pytest
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError, ProfileNotFound
from botocore.session import Session

from agentgw.exchange import Exchange
from agentgw.llm.providers import bedrock
from agentgw.llm.providers.base import Call, ProviderError
from agentgw.llm.providers.bedrock_stream import StreamTranslator
from agentgw.llm.providers.bedrock_translate import (
    bedrock_error,
    converse_to_completion,
    finish_reason,
    request_to_converse,
    usage_to_openai,
)
from agentgw.registry import Provider as ProviderConfig
from agentgw.settings import Upstream
from agentgw.upstream import UpstreamPool
from tests.bedrock_upstream import (
    KEY_ID,
    REGION,
    SECRET,
    SESSION_TOKEN,
    FakeBedrock,
    answer,
    event,
    events_for,
    exception,
    text,
    titan_vector,
    tool_use,
)
from tests.llm.providers.support import PNG, WEATHER_TOOL, chunks_of, user
from tests.support import TEST_KEY, audit_bytes, audit_records, gateway, serve

# the colon is percent-encoded by botocore, and sent (and signed) in yarl's form by the gateway
UPSTREAM_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
SECOND_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ENV_KEY_ID = "AKIDEXAMPLE0ENVCHAIN2"
ENV_SECRET = "envChainSecretKey/0123456789abcdefEXAMPLE"
BAD_SECRET = "wrongSecretKey/0123456789abcdefEXAMPLEwrong"
SIGNATURE = re.compile(r"Signature=([0-9a-f]{64})")


def fake_bedrock(**script: Any) -> FakeBedrock:
    """The fake, accepting the configured keys (with their session token) and the environment's keys."""
    return FakeBedrock(
        credentials={KEY_ID: (SECRET, SESSION_TOKEN), ENV_KEY_ID: (ENV_SECRET, None)}, **script
    )


def registry(url: str) -> dict[str, Any]:
    common = {"kind": "bedrock", "region": REGION, "base_url": url}
    keys = {"aws_access_key_id": KEY_ID, "aws_session_token": SESSION_TOKEN}
    retry = {"attempts": 2, "backoff_ms": 0}
    return {
        "llm": {
            "providers": [
                {"name": "bedrock", **common, **keys, "aws_secret_access_key": SECRET},
                {"name": "bedrock-env", **common},  # botocore's default chain: the environment below
                {"name": "bedrock-bad", **common, **keys, "aws_secret_access_key": BAD_SECRET},
            ],
            "models": [
                {
                    "name": "claude",
                    "targets": [{"provider": "bedrock", "model": UPSTREAM_MODEL}],
                    "retry": retry,
                },
                {
                    "name": "claude-failover",
                    "targets": [
                        {"provider": "bedrock", "model": UPSTREAM_MODEL},
                        {"provider": "bedrock-env", "model": SECOND_MODEL},
                    ],
                    "retry": retry,
                },
                {"name": "claude-bad", "targets": [{"provider": "bedrock-bad", "model": UPSTREAM_MODEL}]},
                {
                    "name": "titan",
                    "targets": [{"provider": "bedrock-env", "model": "amazon.titan-embed-text-v2:0"}],
                },
            ],
        }
    }


def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only ENV_KEY_ID for botocore's default chain: no profile files, no instance metadata lookups."""
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ENV_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@contextlib.asynccontextmanager
async def bedrock_gateway(
    tmp_path: Path, fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The fake Bedrock runtime, the gateway in front of it, and an SDK client of the gateway."""
    aws_environment(monkeypatch, tmp_path)
    with anyio.fail_after(30):
        async with serve(fake.app()) as up, gateway(tmp_path, registry(up)) as gw:
            async with openai.AsyncOpenAI(base_url=f"{gw[0]}/v1", api_key=TEST_KEY, max_retries=0) as client:
                yield client


async def drain(stream: AsyncIterator[Any], into: list[Any]) -> None:
    async for chunk in stream:
        into.append(chunk)


def usage_of(record: dict[str, Any]) -> tuple[Any, ...]:
    u = record["usage"]
    return u["input_tokens"], u["output_tokens"], u["cached_tokens"], u["estimated"]


# -- the fake speaks Bedrock's wire format: a real botocore client reads it ----------------------------------

_BOTOCORE: list[Session] = []


def boto_client(url: str, secret: str = SECRET, token: str | None = SESSION_TOKEN, key: str = KEY_ID) -> Any:
    if not _BOTOCORE:  # one session: its loaded service model serves every client
        _BOTOCORE.append(botocore.session.get_session())
    return _BOTOCORE[0].create_client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1}),
    )


async def test_a_botocore_client_reads_the_fakes_converse_json_event_streams_and_errors() -> None:
    reply = answer(
        text("Hi there"), tool_use("tooluse_1", "get_weather", {"city": "Paris"}), stop_reason="tool_use"
    )
    partial = [*events_for(answer(text("cut")))[:2], exception("throttlingException", "Too many tokens")]
    fake = FakeBedrock(replies=[reply], streams=[events_for(reply, piece=3), partial], failures=[])
    hi = [{"role": "user", "content": [{"text": "hi"}]}]
    async with serve(fake.app()) as url:

        def run() -> dict[str, Any]:
            client = boto_client(url)
            out: dict[str, Any] = {"converse": client.converse(modelId=UPSTREAM_MODEL, messages=hi)}
            out["events"] = list(client.converse_stream(modelId=UPSTREAM_MODEL, messages=hi)["stream"])
            with pytest.raises(EventStreamError) as streamed:
                list(client.converse_stream(modelId=UPSTREAM_MODEL, messages=hi)["stream"])
            out["stream_error"] = streamed.value.response["Error"]
            fake.failures.append(400)
            with pytest.raises(ClientError) as refused:
                client.converse(modelId=UPSTREAM_MODEL, messages=hi)
            out["error"] = refused.value.response
            return out

        with anyio.fail_after(20):
            got = await anyio.to_thread.run_sync(run)
    assert got["converse"]["output"] == reply["output"]
    assert (got["converse"]["stopReason"], got["converse"]["usage"]) == ("tool_use", reply["usage"])
    events = got["events"]
    assert events[0] == {"messageStart": {"role": "assistant"}}
    deltas = [e["contentBlockDelta"]["delta"] for e in events if "contentBlockDelta" in e]
    assert "".join(d.get("text", "") for d in deltas) == "Hi there"
    assert "".join(d["toolUse"]["input"] for d in deltas if "toolUse" in d) == '{"city":"Paris"}'
    opened = {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}}
    assert {"contentBlockStart": {"start": opened, "contentBlockIndex": 1}} in events
    assert events[-2:] == [
        {"messageStop": {"stopReason": "tool_use"}},
        {"metadata": {"usage": reply["usage"], "metrics": {"latencyMs": 42}}},
    ]
    assert got["stream_error"] == {"Code": "throttlingException", "Message": "Too many tokens"}
    assert got["error"]["Error"]["Code"] == "ValidationException"
    assert got["error"]["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert [r["path"] for r in fake.requests][:2] == [
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",  # botocore's encoding of the id
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
    ]


async def test_the_fake_refuses_requests_not_signed_with_the_right_secret_and_session_token() -> None:
    fake = FakeBedrock()
    hi = [{"role": "user", "content": [{"text": "hi"}]}]
    async with serve(fake.app()) as url:

        def run() -> list[str]:
            codes = []
            for client in (
                boto_client(url, secret=BAD_SECRET),
                boto_client(url, token=None),
                boto_client(url, key="AKIDUNKNOWN000000000"),
                boto_client(url),
            ):
                try:
                    client.converse(modelId=UPSTREAM_MODEL, messages=hi)
                    codes.append("ok")
                except ClientError as err:
                    meta, error = err.response["ResponseMetadata"], err.response["Error"]
                    codes.append(f"{meta['HTTPStatusCode']} {error['Code']}")
            return codes

        with anyio.fail_after(20):
            codes = await anyio.to_thread.run_sync(run)
    assert codes == [
        "403 InvalidSignatureException",
        "403 UnrecognizedClientException",
        "403 UnrecognizedClientException",
        "ok",
    ]
    assert len(fake.requests) == 1 and len(fake.rejected) == 3


# -- through the gateway, with the openai SDK ---------------------------------------------------------------


async def test_system_images_and_a_tool_round_trip_reach_converse_signed_with_the_session_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = {"inputTokens": 10, "cacheReadInputTokens": 100, "outputTokens": 7, "totalTokens": 117}
    fake = fake_bedrock(
        replies=[
            answer(
                text("Checking both."),
                tool_use("tooluse_1", "get_weather", {"city": "Paris"}),
                tool_use("tooluse_2", "get_weather", {"city": "Lyon"}),
                stop_reason="tool_use",
                usage=cached,
            ),
            answer(text("Sunny in Paris, cloudy in Lyon.")),
        ]
    )
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        user("Hi"),
        {"role": "assistant", "content": "Bonjour"},
        user(
            [
                {"type": "text", "text": "Weather in Paris and Lyon?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ]
        ),
    ]
    async with bedrock_gateway(tmp_path, fake, monkeypatch) as client:
        first = await client.chat.completions.create(
            model="claude",
            messages=messages,
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice="required",
            temperature=0.2,
            top_p=0.9,
            stop="END",
            max_tokens=300,
        )
        choice = first.choices[0]
        messages += [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "tooluse_2", "content": "cloudy"},
        ]
        tools: Any = [WEATHER_TOOL]
        second = await client.chat.completions.create(model="claude", messages=messages, tools=tools)
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", "Checking both.")
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []
    ]  # type: ignore[union-attr]
    assert calls == [
        ("tooluse_1", "get_weather", {"city": "Paris"}),
        ("tooluse_2", "get_weather", {"city": "Lyon"}),
    ]
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens) == (
        110,
        7,
        117,
    )
    assert first.usage.prompt_tokens_details.cached_tokens == 100
    assert second.choices[0].message.content == "Sunny in Paris, cloudy in Lyon."
    assert second.choices[0].finish_reason == "stop"

    up_first, up_second = fake.requests
    assert (up_first["model"], up_first["action"]) == (UPSTREAM_MODEL, "converse")
    assert up_first["headers"]["x-amz-security-token"] == SESSION_TOKEN
    assert up_first["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert TEST_KEY not in json.dumps(up_first["headers"])  # the caller's gateway key never goes upstream
    assert up_first["body"] == {
        "system": [{"text": "Be brief."}, {"text": "Answer in French."}],
        "messages": [
            {"role": "user", "content": [{"text": "Hi"}]},
            {"role": "assistant", "content": [{"text": "Bonjour"}]},
            {
                "role": "user",
                "content": [
                    {"text": "Weather in Paris and Lyon?"},
                    {"image": {"format": "png", "source": {"bytes": PNG}}},
                ],
            },
        ],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},
                    }
                }
            ],
            "toolChoice": {"any": {}},
        },
    }
    assert "toolChoice" not in up_second["body"]["toolConfig"]  # Bedrock's default (auto) when none was named
    assert up_second["body"]["messages"][3:] == [
        {
            "role": "assistant",
            "content": [
                {"text": "Checking both."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "tooluse_2", "name": "get_weather", "input": {"city": "Lyon"}}},
            ],
        },
        {
            "role": "user",  # the results of parallel tool calls: one user turn
            "content": [
                {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "cloudy"}]}},
            ],
        },
    ]
    records = audit_records(tmp_path)
    assert [usage_of(r) for r in records] == [(110, 7, 100, False), (12, 5, 0, False)]
    assert [r["status"] for r in records] == ["ok", "ok"]


async def test_streamed_text_and_tool_calls_arrive_as_openai_chunks_with_usage_and_are_metered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_bedrock(
        replies=[
            answer(
                text("The quick brown fox jumps."),
                usage={"inputTokens": 9, "outputTokens": 6, "totalTokens": 15},
            ),
            answer(
                text("Let me look."),
                tool_use("tooluse_a", "get_weather", {"city": "Saint-Étienne", "days": [1, 2, 3]}),
                tool_use("tooluse_b", "get_time", {}),
                stop_reason="tool_use",
            ),
        ]
    )
    async with bedrock_gateway(tmp_path, fake, monkeypatch) as client:
        stream = await client.chat.completions.create(
            model="claude",
            messages=[user("Tell me about foxes")],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        async with client.chat.completions.stream(
            model="claude",
            messages=[user("weather and time")],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        ) as tool_stream:
            final = await tool_stream.get_final_completion()
    assert [r["action"] for r in fake.requests] == ["converse-stream", "converse-stream"]
    assert "stream" not in fake.requests[0]["body"]  # ConverseStream is chosen by the URL
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) > 6  # relayed as deltas, not gathered
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The quick brown fox jumps."
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 6)
    choice = final.choices[0]
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", "Let me look.")
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []
    ]  # type: ignore[union-attr]
    assert calls == [
        ("tooluse_a", "get_weather", {"city": "Saint-Étienne", "days": [1, 2, 3]}),
        ("tooluse_b", "get_time", {}),
    ]
    assert [usage_of(r) for r in audit_records(tmp_path)] == [(9, 6, 0, False), (12, 5, 0, False)]


async def test_bedrock_errors_reach_the_client_as_openai_errors_without_any_credential_or_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    partial = events_for(answer(text("partial answer")))[:-2]  # up to messageStop, which never comes
    fake = fake_bedrock(
        failures=[400],
        error_message=f"messages.0.content: blank text (key {SECRET}, token {SESSION_TOKEN}, {'ab' * 32})",
        streams=[[*partial, exception("modelStreamErrorException", "The model crashed")], partial],
    )
    async with bedrock_gateway(tmp_path, fake, monkeypatch) as client:
        with pytest.raises(openai.BadRequestError) as invalid:
            await client.chat.completions.create(model="claude", messages=[user("hi")])
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(model="claude-bad", messages=[user("hi")])
        cut: list[tuple[str, list[Any]]] = []
        for _ in fake.streams[:]:
            chunks: list[Any] = []
            stream = await client.chat.completions.create(model="claude", messages=[user("hi")], stream=True)
            with pytest.raises(openai.APIError) as broken:  # the gateway ends the stream with an error frame
                await drain(stream, chunks)
            cut.append((broken.value.message, chunks))
        with pytest.raises(openai.BadRequestError) as no_embeddings:
            await client.embeddings.create(model="claude", input="hello")
    assert (invalid.value.status_code, invalid.value.code) == (400, "upstream_validation_error")
    assert "blank text" in invalid.value.message
    assert (refused.value.status_code, refused.value.code) == (502, "upstream_auth_failed")
    assert fake.rejected[0]["reason"].startswith("The request signature we calculated does not match")
    assert ["The model crashed" in m for m, _ in cut] == [True, False]
    assert "ended before messageStop" in cut[1][0]
    for _, chunks in cut:  # output had reached the client: an error frame, never a retry
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "partial answer"
        assert not any(c.choices[0].finish_reason for c in chunks if c.choices)
    assert "Titan" in no_embeddings.value.message
    # the 400 and the two streams, each tried once (the refused request is in fake.rejected)
    assert len(fake.requests) == 3
    records = audit_records(tmp_path)
    assert [r["status"] for r in records if r["stream_cut"] == "upstream_error"] == ["error", "error"]
    signatures = [
        SIGNATURE.findall(r["headers"]["authorization"])[0] for r in [*fake.requests, *fake.rejected]
    ]
    shown = [
        invalid.value.response.text,
        refused.value.response.text,
        *(m for m, _ in cut),
        audit_bytes(tmp_path).decode("utf-8", "replace"),
        caplog.text,
    ]
    for secret in [SECRET, SESSION_TOKEN, BAD_SECRET, "ab" * 32, *signatures]:
        assert not any(secret in s for s in shown)


async def test_throttling_is_retried_then_failed_over_to_a_target_signed_by_the_default_credential_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    throttled = [
        event("messageStart", {"role": "assistant"}),
        exception("throttlingException", "Too many tokens"),
    ]
    fake = fake_bedrock(failures=[429, 503], streams=[throttled])
    async with bedrock_gateway(tmp_path, fake, monkeypatch) as client:
        completion = await client.chat.completions.create(model="claude-failover", messages=[user("hi")])
        stream = await client.chat.completions.create(model="claude", messages=[user("hi")], stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        vectors = await client.embeddings.create(
            model="titan", input=["hello world", "good bye now"], dimensions=4
        )
    assert completion.choices[0].message.content == "hello from bedrock"
    assert streamed == "hello from bedrock"  # the throttled stream had sent nothing: retried
    sent = [
        (r["key_id"], r["model"], r["action"], "x-amz-security-token" in r["headers"]) for r in fake.requests
    ]
    assert sent == [
        (KEY_ID, UPSTREAM_MODEL, "converse", True),
        (KEY_ID, UPSTREAM_MODEL, "converse", True),
        (ENV_KEY_ID, SECOND_MODEL, "converse", False),  # the environment's keys, no session token
        (KEY_ID, UPSTREAM_MODEL, "converse-stream", True),
        (KEY_ID, UPSTREAM_MODEL, "converse-stream", True),
        (ENV_KEY_ID, "amazon.titan-embed-text-v2:0", "invoke", False),
        (ENV_KEY_ID, "amazon.titan-embed-text-v2:0", "invoke", False),
    ]
    assert sorted(r["body"]["inputText"] for r in fake.requests[5:]) == ["good bye now", "hello world"]
    assert [len(d.embedding) for d in vectors.data] == [4, 4]
    assert vectors.data[0].embedding == pytest.approx(titan_vector("hello world", 4), rel=1e-6)
    assert vectors.usage.prompt_tokens == 5
    tried = [
        [(a["target"], a["outcome"], a["status"]) for a in r["attempts"]] for r in audit_records(tmp_path)
    ]
    assert [(f"bedrock/{UPSTREAM_MODEL}", "error", 429), (f"bedrock/{UPSTREAM_MODEL}", "ok", 200)] in tried
    assert [
        (f"bedrock/{UPSTREAM_MODEL}", "error", 429),
        (f"bedrock/{UPSTREAM_MODEL}", "error", 503),
        (f"bedrock-env/{SECOND_MODEL}", "ok", 200),
    ] in tried


# -- the provider's credentials, without the gateway -------------------------------------------------------


def chat_call(payload: dict[str, Any]) -> Call:
    exchange = Exchange(plane="llm", operation="chat", target="llm:claude", headers={})
    return Call(exchange, "chat", payload, b"", UPSTREAM_MODEL, stream=bool(payload.get("stream")))


def provider(url: str) -> ProviderConfig:
    return ProviderConfig(name="bedrock", kind="bedrock", region=REGION, base_url=url)


async def test_default_chain_credentials_are_resolved_once_and_refreshed_in_a_thread_near_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def metadata(secret: str, expires_in: timedelta) -> dict[str, str]:
        expiry = (datetime.now(UTC) + expires_in).isoformat()
        return {"access_key": KEY_ID, "secret_key": secret, "token": SESSION_TOKEN, "expiry_time": expiry}

    refreshed: list[str] = []

    def refresh() -> dict[str, str]:
        refreshed.append("refresh")
        return metadata(SECRET, timedelta(hours=1))

    resolved: list[str] = []

    def chain(region: str) -> RefreshableCredentials:
        resolved.append(region)  # expired: signing with them as they are would be refused
        return RefreshableCredentials.create_from_metadata(
            metadata(BAD_SECRET, timedelta(minutes=-1)), refresh, "test"
        )

    monkeypatch.setattr(bedrock, "default_credentials", chain)
    fake = FakeBedrock()
    pool = UpstreamPool(Upstream())
    await pool.start()
    try:
        async with serve(fake.app()) as url:
            p = bedrock.BedrockProvider(provider(url), pool)
            assert resolved == []  # nothing is looked up before the first call
            with anyio.fail_after(10):
                results = [await p.chat(chat_call({"messages": [user("hi")]})) for _ in range(2)]
    finally:
        await pool.aclose()
    assert [json.loads(r.body or b"")["choices"][0]["message"]["content"] for r in results] == [
        "hello from bedrock"
    ] * 2
    assert (resolved, refreshed, fake.rejected) == ([REGION], ["refresh"], [])


@pytest.mark.parametrize("fails", [False, True], ids=["finds_none", "raises"])
async def test_without_any_credentials_calls_fail_retryably_and_the_chain_is_not_asked_per_request(
    monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    asked: list[str] = []

    def chain(region: str) -> None:
        asked.append(region)
        if fails:
            raise ProfileNotFound(profile="missing")

    monkeypatch.setattr(bedrock, "default_credentials", chain)
    p = bedrock.BedrockProvider(provider("http://127.0.0.1:9"), UpstreamPool(Upstream()))
    errors = []
    for _ in range(2):
        with pytest.raises(ProviderError) as err:
            await p.chat(chat_call({"messages": [user("hi")]}))
        errors.append(err.value)
    assert asked == [REGION]
    assert all(e.retryable and "no AWS credentials" in e.message for e in errors)
    assert ("ProfileNotFound" in errors[0].message) is fails


def test_a_key_id_without_its_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="together"):  # refused when the registry loads (agentgw check too)
        ProviderConfig(name="b", kind="bedrock", region=REGION, aws_access_key_id=KEY_ID)


# -- request translation ------------------------------------------------------------------------------------


def translate(**payload: Any) -> dict[str, Any]:
    return request_to_converse({"model": "alias", **payload})


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize(
    ("messages", "system", "turns"),
    [
        ([user("hi")], None, [{"role": "user", "content": [{"text": "hi"}]}]),
        (
            [{"role": "system", "content": "A"}, {"role": "developer", "content": "B"}, user("hi")],
            [{"text": "A"}, {"text": "B"}],
            [{"role": "user", "content": [{"text": "hi"}]}],
        ),
        ([user("one"), user("two")], None, [{"role": "user", "content": [{"text": "one"}, {"text": "two"}]}]),
        (
            [
                user("q"),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call("c1", "f", ""), call("c2", "g", '{"x":1}')],
                },
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "r1"}]},
                {"role": "tool", "tool_call_id": "c2", "content": "r2"},
                user("and?"),
            ],
            None,
            [
                {"role": "user", "content": [{"text": "q"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"toolUse": {"toolUseId": "c1", "name": "f", "input": {}}},
                        {"toolUse": {"toolUseId": "c2", "name": "g", "input": {"x": 1}}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"toolResult": {"toolUseId": "c1", "content": [{"text": "r1"}]}},
                        {"toolResult": {"toolUseId": "c2", "content": [{"text": "r2"}]}},
                        {"text": "and?"},
                    ],
                },
            ],
        ),
        (
            [user("q"), {"role": "tool", "tool_call_id": "c", "content": {"temp": 21}}],
            None,
            [
                {
                    "role": "user",
                    "content": [
                        {"text": "q"},
                        {"toolResult": {"toolUseId": "c", "content": [{"json": {"temp": 21}}]}},
                    ],
                }
            ],
        ),
        (
            [user([{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}}])],
            None,
            [{"role": "user", "content": [{"image": {"format": "jpeg", "source": {"bytes": PNG}}}]}],
        ),
        (
            [user("hi"), {"role": "assistant", "content": ""}, user(""), user("again")],
            None,
            [{"role": "user", "content": [{"text": "hi"}, {"text": "again"}]}],
        ),
    ],
    ids=[
        "plain",
        "system_blocks",
        "same_role_merged",
        "tool_results_one_turn",
        "json_result",
        "image",
        "blanks_dropped",
    ],
)
def test_messages_become_system_blocks_and_alternating_turns(
    messages: list[dict[str, Any]], system: list[dict[str, str]] | None, turns: list[dict[str, Any]]
) -> None:
    out = translate(messages=messages)
    assert out.get("system") == system
    assert out["messages"] == turns


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, {"tools": "spec"}),
        ("auto", {"tools": "spec", "toolChoice": {"auto": {}}}),
        ("required", {"tools": "spec", "toolChoice": {"any": {}}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"tools": "spec", "toolChoice": {"tool": {"name": "get_weather"}}},
        ),
        ("none", None),
    ],
)
def test_tool_choice_maps_to_converse_tool_choice_and_none_leaves_the_tools_out(
    choice: Any, expected: dict[str, Any] | None
) -> None:
    payload: dict[str, Any] = {"messages": [user("hi")], "tools": [WEATHER_TOOL]}
    if choice is not None:
        payload["tool_choice"] = choice
    config = translate(**payload).get("toolConfig")
    if expected is None:
        assert config is None
    else:
        spec = {"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                             "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]}}}  # fmt: skip
        assert config == {**expected, "tools": [spec]}


def test_a_tool_without_parameters_or_description_gets_an_empty_object_schema() -> None:
    out = translate(messages=[user("hi")], tools=[{"type": "function", "function": {"name": "now"}}])
    assert out["toolConfig"] == {
        "tools": [
            {"toolSpec": {"name": "now", "inputSchema": {"json": {"type": "object", "properties": {}}}}}
        ]
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, None),
        ({"max_tokens": 100}, {"maxTokens": 100}),
        ({"max_tokens": 100, "max_completion_tokens": 50}, {"maxTokens": 50}),
        ({"temperature": 0, "top_p": 0.5}, {"temperature": 0, "topP": 0.5}),
        ({"stop": "END"}, {"stopSequences": ["END"]}),
        ({"stop": ["a", "", "b"]}, {"stopSequences": ["a", "b"]}),
        ({"stream": True, "stream_options": {"include_usage": True}, "seed": 3, "user": "u"}, None),
    ],
)
def test_sampling_parameters_go_to_inference_config_and_the_rest_is_dropped(
    params: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    out = translate(messages=[user("hi")], **params)
    assert out.get("inferenceConfig") == expected
    assert set(out) <= {"messages", "inferenceConfig"}  # no model, no stream flag: both are in the URL


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"messages": [user("hi")], "n": 2}, "n must be 1"),
        ({"messages": [user([{"type": "input_audio", "input_audio": {}}])]}, "'input_audio'"),
        (
            {"messages": [user([{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}])]},
            "base64 data URLs",
        ),
        (
            {
                "messages": [
                    user([{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AA=="}}])
                ]
            },
            "webp",
        ),
        (
            {"messages": [user("hi")], "tools": [{"type": "custom", "custom": {"name": "x"}}]},
            "function tools",
        ),
        (
            {"messages": [user("hi")], "tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}},
            "tool_choice",
        ),
        ({"messages": [{"role": "tool", "content": "r"}]}, "tool_call_id"),
        ({"messages": [{"role": "assistant", "tool_calls": [call("c", "f", "{oops")]}]}, "JSON object"),
        ({"messages": [{"role": "function", "name": "f", "content": "r"}]}, "'function'"),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "text parts",
        ),
    ],
)
def test_requests_converse_cannot_express_are_refused_as_a_400_without_retry(
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
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("malformed_tool_use", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reason_maps_to_finish_reason(stop_reason: str | None, finish: str) -> None:
    assert finish_reason(stop_reason) == finish


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}, (5, 2, 7, 0)),
        ({"inputTokens": 5, "cacheReadInputTokens": 40, "outputTokens": 2}, (45, 2, 47, 40)),
        ({"inputTokens": 5, "cacheWriteInputTokens": 30, "outputTokens": 2}, (35, 2, 37, 0)),
        ({"inputTokens": 1, "outputTokens": None}, (1, 0, 1, 0)),
    ],
)
def test_usage_counts_cache_reads_and_writes_as_prompt_tokens(
    usage: dict[str, Any], expected: tuple[int, int, int, int]
) -> None:
    out = usage_to_openai(usage)
    got = (out["prompt_tokens"], out["completion_tokens"], out["total_tokens"])
    assert (*got, out["prompt_tokens_details"]["cached_tokens"]) == expected


def test_a_converse_answer_becomes_a_chat_completion() -> None:
    reply = answer(
        text("a"),
        {"reasoningContent": {"reasoningText": {"text": "hm"}}},
        text("b"),
        tool_use("tooluse_9", "f", {"x": [1]}),
        stop_reason="tool_use",
    )
    assert converse_to_completion(reply, UPSTREAM_MODEL, "chatcmpl-req", created=7) == {
        "id": "chatcmpl-req",
        "object": "chat.completion",
        "created": 7,
        "model": UPSTREAM_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "ab",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "tooluse_9",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x":[1]}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": usage_to_openai(reply["usage"]),
    }


@pytest.mark.parametrize(
    ("blocks", "content"), [([], ""), ([tool_use("t", "f", {})], None), ([text("x")], "x")]
)
def test_completion_content_is_text_or_null_beside_tool_calls(
    blocks: list[dict[str, Any]], content: str | None
) -> None:
    assert converse_to_completion(answer(*blocks), "m")["choices"][0]["message"]["content"] == content


def test_an_answer_without_output_content_is_an_invalid_response() -> None:
    with pytest.raises(ProviderError) as err:
        converse_to_completion({"stopReason": "end_turn"}, "m")
    assert (err.value.invalid, err.value.retryable) == (True, True)


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "upstream_validation_error", False),
        (403, "upstream_access_denied", False),
        (404, "upstream_model_not_found", False),
        (424, "upstream_model_error", True),
        (429, "upstream_throttled", True),
        (500, "upstream_internal_error", True),
        (503, "upstream_unavailable", True),
        (418, "upstream_rejected", False),
    ],
)
def test_bedrock_errors_get_a_stable_code_and_lose_secrets_and_signatures(
    status: int, code: str, retryable: bool
) -> None:
    err = bedrock_error(status, f"bad {SECRET} Signature={'0f' * 32}", None, [SECRET])
    assert (err.status, err.retryable, err.body["code"]) == (status, retryable, code)
    assert err.message.startswith(f"upstream answered {status}: bad [redacted]")
    assert SECRET not in json.dumps(err.body) and "0f" * 32 not in err.message + json.dumps(err.body)


# -- stream translation -------------------------------------------------------------------------------------


def decode(frames: list[bytes]) -> list[tuple[dict[str, Any], bytes]]:
    """The (headers, payload) of each encoded event-stream message, as botocore's decoder reads them."""
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(frames))
    return [(m.headers, m.payload) for m in buffer]


def run_stream(frames: list[bytes], include_usage: bool = True) -> tuple[list[Any], StreamTranslator]:
    tr = StreamTranslator(UPSTREAM_MODEL, include_usage, created=1)
    out = [f for headers, payload in decode(frames) for f in tr.feed(headers, payload)]
    return chunks_of(out + tr.close()), tr


def test_a_converse_stream_becomes_openai_chunks_with_tool_calls_numbered_from_zero() -> None:
    cached = {"inputTokens": 3, "cacheReadInputTokens": 4, "outputTokens": 9, "totalTokens": 16}
    reply = answer(
        text("Hi "),
        tool_use("tooluse_1", "f", {"a": "b" * 10}),
        tool_use("tooluse_2", "g", {}),
        stop_reason="tool_use",
        usage=cached,
    )
    chunks, tr = run_stream(events_for(reply, piece=3))
    assert tr.done and chunks[-1] == b"[DONE]"
    *body, usage_chunk, _ = chunks
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in body)
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in body]
    assert "".join(d.get("content") or "" for d in deltas) == "Hi "
    heads, args = [], {}
    for d in deltas:
        for tc in d.get("tool_calls") or []:
            if "id" in tc:
                heads.append((tc["index"], tc["id"], tc["function"]["name"], tc["function"]["arguments"]))
            args[tc["index"]] = args.get(tc["index"], "") + tc["function"]["arguments"]
    assert heads == [(0, "tooluse_1", "f", ""), (1, "tooluse_2", "g", "")]
    assert {i: json.loads(a) for i, a in args.items()} == {0: {"a": "b" * 10}, 1: {}}
    assert body[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert usage_chunk == {**usage_chunk, "choices": [], "usage": usage_to_openai(cached)}


def test_without_include_usage_there_is_no_usage_chunk_and_no_usage_field() -> None:
    chunks, _ = run_stream(events_for(answer(text("hey"))), include_usage=False)
    assert chunks[-1] == b"[DONE]"
    assert all("usage" not in c and c["choices"] for c in chunks[:-1])


def test_a_stream_that_ends_after_message_stop_without_metadata_still_finishes_without_usage() -> None:
    chunks, tr = run_stream(events_for(answer(text("hey")), metadata=False))
    assert tr.done and chunks[-1] == b"[DONE]"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_a_stream_that_ends_before_message_stop_is_a_retryable_error() -> None:
    tr = StreamTranslator("m", False)
    for headers, payload in decode(events_for(answer(text("hey")))[:-2]):
        tr.feed(headers, payload)
    with pytest.raises(ProviderError) as err:
        tr.close()
    assert err.value.retryable and not tr.done


def test_the_role_chunk_waits_for_content_and_nothing_follows_done() -> None:
    tr = StreamTranslator("m", False)
    [(start_headers, start_payload)] = decode([event("messageStart", {"role": "assistant"})])
    assert tr.feed(start_headers, start_payload) == []  # an exception now is still retryable elsewhere
    for headers, payload in decode(events_for(answer(text("x")))[1:]):
        tr.feed(headers, payload)
    [(late_headers, late_payload)] = decode(
        [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "late"}})]
    )
    assert tr.done and tr.feed(late_headers, late_payload) == []


@pytest.mark.parametrize(
    ("kind", "status", "retryable"),
    [
        ("throttlingException", 429, True),
        ("serviceUnavailableException", 503, True),
        ("modelStreamErrorException", 424, True),
        ("internalServerException", 500, True),
        ("validationException", 400, False),
        ("someFutureException", 502, True),
    ],
)
def test_an_exception_message_raises_a_provider_error_with_its_status(
    kind: str, status: int, retryable: bool
) -> None:
    tr = StreamTranslator("m", False, secrets=[SECRET])
    [(headers, payload)] = decode([exception(kind, f"bad things {SECRET}")])
    with pytest.raises(ProviderError) as err:
        tr.feed(headers, payload)
    assert (err.value.status, err.value.retryable) == (status, retryable)
    assert f"({kind})" in err.value.message and "bad things" in err.value.message
    assert SECRET not in err.value.message + json.dumps(err.value.body)
