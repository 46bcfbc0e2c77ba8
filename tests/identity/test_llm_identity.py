"""An OpenAI-compatible provider with an `identity:` block gets the gateway's assertion about the caller beside
the registry's own credential, and never the caller's key."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.identity.support import Verifier
from tests.support import TEST_KEY, gateway, serve
from tests.upstreams import FakeOpenAI


async def test_an_openai_provider_gets_an_assertion_about_the_caller_beside_the_registry_key(
    tmp_path: Path,
) -> None:
    up = FakeOpenAI()
    async with serve(up.app()) as base:
        provider = {
            "name": "up",
            "kind": "openai",
            "base_url": f"{base}/v1",
            "api_key": "sk-upstream-secret-0",
            "identity": {"assertion": {"header": "X-Caller", "ttl_s": 30, "audience": "llm-gateway-users"}},
        }
        reg = {
            "llm": {
                "providers": [provider],
                "models": [{"name": "m", "targets": [{"provider": "up", "model": "x"}]}],
            }
        }
        async with gateway(tmp_path, reg) as (url, _), httpx.AsyncClient() as client:
            r = await client.post(
                f"{url}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {TEST_KEY}", "x-agentgw-task": "llm-task"},
            )
            claims = await Verifier(url).verify(up.requests[0]["headers"]["x-caller"], "llm-gateway-users")
    assert r.status_code == 200
    seen = up.requests[0]["headers"]
    assert seen["authorization"] == "Bearer sk-upstream-secret-0"
    assert claims["sub"] == "tester" and claims["roles"] == ["agents"] and claims["task"] == "llm-task"
    assert claims["exp"] - claims["iat"] == 30
    assert TEST_KEY not in str(up.requests[0])
