"""The exact response cache (`llm.cache`): an identical request in the same scope is answered from the cache
(whole or as the same stream), costs no tokens and is on the audit record; another principal, another request,
`Cache-Control: no-cache` or `no-store` are not; with Redis two gateways share it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, audit_records, gateway

CHAT = {"model": "mock-fast", "messages": [{"role": "user", "content": "what is cached?"}]}


def settings(**cache: Any) -> dict[str, Any]:
    return {
        "audit": {"writer": "inline"},
        "llm": {"cache": {"mode": "exact", **cache}},
        "budgets": {"rules": [{"match": {"roles": ["agents"]}, "task": {"tokens": 100_000}}]},
    }


def bearer(key: str = TEST_KEY, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **extra}


async def test_an_identical_request_is_answered_from_the_cache_for_free_and_on_the_record(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, settings()) as (url, _), httpx.AsyncClient(base_url=url) as c:
        first = await c.post("/v1/chat/completions", json=CHAT, headers=bearer())
        second = await c.post("/v1/chat/completions", json=CHAT, headers=bearer())
        other = await c.post("/v1/chat/completions", json={**CHAT, "temperature": 0.5}, headers=bearer())
    assert (first.headers["x-agentgw-cache"], second.headers["x-agentgw-cache"]) == ("miss", "hit")
    assert other.headers["x-agentgw-cache"] == "miss"  # another request
    assert second.json() == first.json()
    records = [r for r in audit_records(tmp_path) if r["operation"] == "chat"]
    miss, hit = records[0], records[1]
    assert miss["attempts"] and not hit["attempts"]  # no provider was asked
    assert hit["usage"]["total_tokens"] == 0 and miss["usage"]["total_tokens"] > 0
    [decided] = [d for d in hit["decisions"] if d["stage"] == "cache"]
    assert (
        decided["rule"] == "cache:principal"
        and f"saved {miss['usage']['total_tokens']} tokens" in decided["detail"]
    )


async def test_the_cache_is_scoped_to_the_principal_and_obeys_cache_control(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, settings()) as (url, _), httpx.AsyncClient(base_url=url) as c:
        await c.post("/v1/chat/completions", json=CHAT, headers=bearer())
        theirs = await c.post("/v1/chat/completions", json=CHAT, headers=bearer(OTHER_KEY))
        fresh = await c.post(
            "/v1/chat/completions", json=CHAT, headers=bearer(**{"cache-control": "no-cache"})
        )
        unkept = {**CHAT, "messages": [{"role": "user", "content": "not to be kept"}]}
        nostore = await c.post(
            "/v1/chat/completions", json=unkept, headers=bearer(**{"cache-control": "no-store"})
        )
        after = await c.post("/v1/chat/completions", json=unkept, headers=bearer())
    assert theirs.status_code in (
        200,
        403,
        404,
    )  # whatever the other principal may do, it is never our answer
    assert theirs.headers.get("x-agentgw-cache") != "hit"
    assert fresh.headers["x-agentgw-cache"] == "miss"
    assert "x-agentgw-cache" not in nostore.headers and after.headers["x-agentgw-cache"] == "miss"


async def test_a_streamed_answer_is_replayed_as_the_same_stream(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, settings()) as (url, _):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0)
        texts, headers = [], []
        for _ in range(2):
            raw = await client.chat.completions.with_raw_response.create(**CHAT, stream=True)  # type: ignore[call-overload]
            headers.append(raw.headers.get("x-agentgw-cache"))
            texts.append("".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices]))
        await client.close()
    assert headers == ["miss", "hit"]
    assert texts[0] == texts[1] == "what is cached?"
    hit = [r for r in audit_records(tmp_path) if r["operation"] == "chat"][1]
    assert hit["usage"]["total_tokens"] == 0 and not hit["attempts"]


async def test_two_gateways_on_one_redis_share_the_cache(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    try:
        probe = aioredis.Redis()
        await probe.ping()
        await probe.aclose()
    except Exception:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"agentgw:test:{uuid.uuid4().hex}:"
    cfg = settings(store="redis", key_prefix=prefix, scope="global")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        gateway(tmp_path / "a", MOCK_REGISTRY, cfg) as (url_a, _),
        gateway(tmp_path / "b", MOCK_REGISTRY, cfg) as (url_b, _),
        httpx.AsyncClient() as c,
    ):
        first = await c.post(f"{url_a}/v1/chat/completions", json=CHAT, headers=bearer())
        second = await c.post(f"{url_b}/v1/chat/completions", json=CHAT, headers=bearer())
    redis = aioredis.Redis()
    keys = [k async for k in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    assert (first.headers["x-agentgw-cache"], second.headers["x-agentgw-cache"]) == ("miss", "hit")
    assert second.json() == first.json() and len(keys) == 1
