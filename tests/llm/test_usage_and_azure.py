"""Usage on every Exchange: provider-reported when given (incl. cached and reasoning tokens), else a tiktoken
estimate marked as such; and the Azure URL scheme and credential header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support import TEST_KEY, audit_records, gateway, serve
from tests.upstreams import FakeOpenAI

AUTH = {"authorization": f"Bearer {TEST_KEY}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


def reg(url: str, kind: str = "openai", **extra: Any) -> dict[str, Any]:
    provider = {"name": "up", "kind": kind, "base_url": url, "api_key": "sk-upstream-secret", **extra}
    return {
        "llm": {
            "providers": [provider],
            "models": [{"name": "m", "targets": [{"provider": "up", "model": "dep-1"}]}],
        }
    }


async def test_provider_usage_with_cached_and_reasoning_tokens_is_recorded(tmp_path: Path) -> None:
    up = FakeOpenAI()
    async with serve(up.app()) as u, gateway(tmp_path, reg(f"{u}/v1")) as (url, _):
        async with httpx.AsyncClient() as c:
            await c.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    usage = audit_records(tmp_path)[-1]["usage"]
    assert usage == {
        "input_tokens": 11,
        "output_tokens": 7,
        "cached_tokens": 3,
        "reasoning_tokens": 2,
        "total_tokens": 18,
        "estimated": False,
    }


async def test_a_provider_without_usage_gets_a_tiktoken_estimate_marked_estimated(tmp_path: Path) -> None:
    up = FakeOpenAI(usage=None, reply="four words right here")
    async with serve(up.app()) as u, gateway(tmp_path, reg(f"{u}/v1")) as (url, _):
        async with httpx.AsyncClient() as c:
            await c.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    usage = audit_records(tmp_path)[-1]["usage"]
    assert usage["estimated"] is True
    assert usage["output_tokens"] == 4
    assert usage["input_tokens"] > 0


async def test_a_stream_without_usage_is_estimated_from_the_relayed_text(tmp_path: Path) -> None:
    up = FakeOpenAI(usage=None, chunks=3)  # streams "w0 w1 w2 "
    async with serve(up.app()) as u, gateway(tmp_path, reg(f"{u}/v1")) as (url, _):
        async with httpx.AsyncClient() as c:
            r = await c.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)
    assert r.text.endswith("data: [DONE]\n\n")
    assert up.requests[0]["body"]["stream_options"] == {"include_usage": True}  # the gateway asked for it
    usage = audit_records(tmp_path)[-1]["usage"]
    assert usage["estimated"] is True
    assert usage["output_tokens"] >= 3


async def test_the_usage_chunk_the_gateway_asked_for_is_stripped_for_the_client(tmp_path: Path) -> None:
    up = FakeOpenAI(chunks=2)
    async with serve(up.app()) as u, gateway(tmp_path, reg(f"{u}/v1")) as (url, _):
        async with httpx.AsyncClient() as c:
            r = await c.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)
    assert '"usage":{' not in r.text.replace(" ", "")
    assert audit_records(tmp_path)[-1]["usage"]["output_tokens"] == 7


async def test_azure_uses_deployment_urls_the_api_version_and_the_api_key_header(tmp_path: Path) -> None:
    up = FakeOpenAI()
    async with serve(up.app()) as u, gateway(tmp_path, reg(u, "azure", api_version="2024-10-21")) as (url, _):
        async with httpx.AsyncClient() as c:
            r = await c.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200
    seen = up.requests[0]
    assert seen["path"] == "/openai/deployments/dep-1/chat/completions"
    assert seen["query"] == "api-version=2024-10-21"
    assert seen["headers"]["api-key"] == "sk-upstream-secret"
    assert "authorization" not in seen["headers"]


async def test_every_response_carries_the_task_id_the_client_chose(tmp_path: Path) -> None:
    up = FakeOpenAI()
    async with serve(up.app()) as u, gateway(tmp_path, reg(f"{u}/v1")) as (url, _):
        async with httpx.AsyncClient() as c:
            ok = await c.post(
                f"{url}/v1/chat/completions", json=CHAT, headers={**AUTH, "x-agentgw-task": "job-7"}
            )
            denied = await c.post(
                f"{url}/v1/chat/completions", json=CHAT, headers={"x-agentgw-task": "job-7"}
            )
    assert ok.headers["x-agentgw-task"] == "job-7"
    assert denied.headers["x-agentgw-task"] == "job-7"
    records = audit_records(tmp_path)
    assert {r["task_id"] for r in records if not r.get("refused")} == {"job-7"}
    # the anonymous refusal is in its source's tally, which names no task (anyone can claim one)
    assert [r["refused"]["count"] for r in records if r.get("refused")] == [1]
