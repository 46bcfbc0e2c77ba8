"""An OpenAI-compatible provider with an `identity:` block gets the gateway's assertion about the caller beside
the registry's own credential, and never the caller's key; when its credentials cannot be had, it is not called."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.identity.support import Verifier
from tests.support import TEST_KEY, gateway, serve
from tests.upstreams import FakeOpenAI


@contextlib.asynccontextmanager
async def chat_through(
    tmp_path: Path, up: FakeOpenAI, identity: dict[str, Any], headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[httpx.Response, str]]:
    """One chat completion as TEST_KEY through a gateway whose only provider (`up`, with `identity`) serves
    model `m`; yields the answer and the gateway's URL (still serving)."""
    async with serve(up.app()) as base:
        provider = {
            "name": "up",
            "kind": "openai",
            "base_url": f"{base}/v1",
            "api_key": "sk-upstream-secret-0",
            "identity": identity,
        }
        model = {"name": "m", "targets": [{"provider": "up", "model": "x"}]}
        reg = {"llm": {"providers": [provider], "models": [model]}}
        async with gateway(tmp_path, reg) as (url, _), httpx.AsyncClient() as client:
            r = await client.post(
                f"{url}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {TEST_KEY}", **(headers or {})},
            )
            yield r, url


async def test_an_openai_provider_gets_an_assertion_about_the_caller_beside_the_registry_key(
    tmp_path: Path,
) -> None:
    up = FakeOpenAI()
    identity = {"assertion": {"header": "X-Caller", "ttl_s": 30, "audience": "llm-gateway-users"}}
    async with chat_through(tmp_path, up, identity, {"x-agentgw-task": "llm-task"}) as (r, url):
        claims = await Verifier(url).verify(up.requests[0]["headers"]["x-caller"], "llm-gateway-users")
    assert r.status_code == 200
    seen = up.requests[0]["headers"]
    assert seen["authorization"] == "Bearer sk-upstream-secret-0"
    assert claims["sub"] == "tester" and claims["roles"] == ["agents"] and claims["task"] == "llm-task"
    assert claims["exp"] - claims["iat"] == 30
    assert TEST_KEY not in str(up.requests[0])


async def test_a_provider_whose_token_exchange_fails_answers_a_clear_502_and_is_never_called(
    tmp_path: Path,
) -> None:
    up = FakeOpenAI()
    exchange = {"token_url": "http://127.0.0.1:9/token", "client_id": "gw", "client_secret": "s3cret-value"}
    async with chat_through(tmp_path, up, {"token_exchange": exchange}) as (r, _):
        pass
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "upstream_credentials_unavailable" and "'up'" in error["message"]
    assert "s3cret-value" not in r.text
    assert up.requests == []
