"""The semantic response cache (`llm.cache.mode: semantic`): a question asked again in other words, in the same
scope and with every other field the same, is answered from the cache when its embedding is close enough for the
model's threshold; it is free (unless `charge`), streamed as a stream and on the audit record. A different question,
another principal, or an embedding model that is down are misses, never errors. With Redis, replicas share it.

The embeddings come from a small OpenAI-compatible upstream whose vectors the tests choose per text."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentgw import create_app, load_settings
from agentgw.configfile import ConfigError
from tests.budget.test_budgets import spent
from tests.support import (
    OTHER_KEY,
    TEST_KEY,
    audit_records,
    drop_redis_keys,
    free_port,
    gateway,
    serve,
    sha,
    write_config,
)

REDIS_URL = os.environ.get("AGENTGW_TEST_REDIS", "redis://127.0.0.1:6379/15")
PARIS = "What is the capital of France?"
REWORDED = "Which city is France's capital?"  # cosine 0.98 to PARIS
WEATHER = "Will it rain in Lisbon tomorrow?"  # cosine 0 to both
# The vector of every text that contains the phrase (the embedded text is the role-tagged conversation).
VECTORS = {
    "capital of France": [1.0, 0.0, 0.0, 0.0],
    "France's capital": [0.98, 0.2, 0.0, 0.0],
    "rain in Lisbon": [0.0, 0.0, 1.0, 0.0],
}


def vector_of(text: str) -> list[float]:
    for phrase, vector in VECTORS.items():
        if phrase in text:
            return vector
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return [0.0, 0.0, 0.0, 1.0, *np.random.default_rng(seed).normal(size=12).tolist()]


def embedder(seen: list[str]) -> Starlette:
    """An OpenAI-compatible embeddings upstream: `seen` collects each input it embedded."""

    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(body["input"])
        data = [{"object": "embedding", "index": 0, "embedding": vector_of(body["input"])}]
        usage = {"prompt_tokens": 7, "total_tokens": 7}
        return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": usage})

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


def registry(embed_url: str) -> dict[str, Any]:
    up = {
        "name": "embedder",
        "kind": "openai",
        "base_url": f"{embed_url}/v1",
        "api_key": "sk-test-embed-01234",
    }
    mock = [{"provider": "mock", "model": "mock-1"}]
    return {
        "llm": {
            "providers": [{"name": "mock", "kind": "mock"}, up],
            "models": [
                {
                    "name": "mock-fast",
                    "targets": mock,
                    "pricing": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
                },
                {"name": "mock-strict", "targets": mock},
                {
                    "name": "embed",
                    "type": "embeddings",
                    "targets": [{"provider": "embedder", "model": "fake-embed"}],
                    "retry": {"attempts": 1},
                },
            ],
        }
    }


def settings(**cache: Any) -> dict[str, Any]:
    semantic = {"embedding_model": "embed", "thresholds": {"mock-strict": 0.99}, **cache.pop("semantic", {})}
    both_agents = [  # both keys may call every model: only the cache's scope keeps their answers apart
        {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
        {"subject": "other", "roles": ["agents"], "sha256": sha(OTHER_KEY)},
    ]
    return {
        "audit": {"writer": "inline"},
        "auth": {"api_keys": both_agents},
        "llm": {"cache": {"mode": "semantic", "semantic": semantic, **cache}},
        "budgets": {"rules": [{"match": {"roles": ["agents"]}, "task": {"tokens": 100_000}}]},
    }


def ask(text: str, model: str = "mock-fast", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def bearer(key: str = TEST_KEY, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **extra}


async def test_a_reworded_question_is_answered_from_the_cache_and_a_different_one_is_not(
    tmp_path: Path,
) -> None:
    seen: list[str] = []
    async with serve(embedder(seen)) as up, gateway(tmp_path, registry(up), settings()) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            first = await c.post("/v1/chat/completions", json=ask(PARIS), headers=bearer())
            reworded = await c.post("/v1/chat/completions", json=ask(REWORDED), headers=bearer())
            again = await c.post("/v1/chat/completions", json=ask(PARIS), headers=bearer())
            other = await c.post("/v1/chat/completions", json=ask(WEATHER), headers=bearer())
            warmer = await c.post(
                "/v1/chat/completions", json=ask(REWORDED, temperature=0.5), headers=bearer()
            )
            fresh = await c.post(
                "/v1/chat/completions", json=ask(REWORDED), headers=bearer(**{"cache-control": "no-cache"})
            )
    kinds = [r.headers["x-agentgw-cache"] for r in (first, reworded, again, other, warmer, fresh)]
    assert kinds == ["miss", "semantic-hit", "hit", "miss", "miss", "miss"]
    assert reworded.json() == first.json()  # the first answer, word for word (the mock echoes the question)
    assert reworded.json()["choices"][0]["message"]["content"] == PARIS
    assert other.json()["choices"][0]["message"]["content"] == WEATHER
    assert seen[0] == f"user: {PARIS}" and len(seen) == 5  # an exact hit embeds nothing


async def test_each_model_has_its_own_threshold(tmp_path: Path) -> None:
    async with serve(embedder([])) as up, gateway(tmp_path, registry(up), settings()) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            for model in ("mock-fast", "mock-strict"):
                await c.post("/v1/chat/completions", json=ask(PARIS, model), headers=bearer())
            loose = await c.post("/v1/chat/completions", json=ask(REWORDED, "mock-fast"), headers=bearer())
            strict = await c.post("/v1/chat/completions", json=ask(REWORDED, "mock-strict"), headers=bearer())
    assert loose.headers["x-agentgw-cache"] == "semantic-hit"  # 0.98 ≥ the default 0.95
    assert strict.headers["x-agentgw-cache"] == "miss"  # 0.98 < mock-strict's 0.99
    assert strict.json()["choices"][0]["message"]["content"] == REWORDED
    missed = [r for r in audit_records(tmp_path) if r["target"] == "llm:mock-strict"][-1]
    assert missed["cache"] == {"kind": "miss", "similarity": 0.9798, "threshold": 0.99, "embedding_tokens": 7}


async def test_a_semantic_hit_never_crosses_principals(tmp_path: Path) -> None:
    async with serve(embedder([])) as up, gateway(tmp_path, registry(up), settings()) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            await c.post("/v1/chat/completions", json=ask(PARIS), headers=bearer())
            theirs = await c.post("/v1/chat/completions", json=ask(REWORDED), headers=bearer(OTHER_KEY))
            ours = await c.post("/v1/chat/completions", json=ask(REWORDED), headers=bearer())
    assert theirs.status_code == 200 and theirs.headers["x-agentgw-cache"] == "miss"
    assert theirs.json()["choices"][0]["message"]["content"] == REWORDED  # asked upstream, not our answer
    assert ours.headers["x-agentgw-cache"] == "semantic-hit"


async def test_a_streamed_answer_is_replayed_as_the_same_stream_on_a_semantic_hit(tmp_path: Path) -> None:
    async with serve(embedder([])) as up, gateway(tmp_path, registry(up), settings()) as (url, _):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0)
        texts, kinds = [], []
        for question in (PARIS, REWORDED):
            raw = await client.chat.completions.with_raw_response.create(**ask(question), stream=True)  # type: ignore[call-overload]
            kinds.append(raw.headers.get("x-agentgw-cache"))
            texts.append("".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices]))
        await client.close()
    assert kinds == ["miss", "semantic-hit"]
    assert texts == [PARIS, PARIS]
    hit = [r for r in audit_records(tmp_path) if r["operation"] == "chat"][1]
    assert hit["usage"]["total_tokens"] == 0 and not hit["attempts"] and hit["cache"]["kind"] == "semantic"


async def test_a_semantic_hit_is_free_and_on_the_record_with_its_entry_similarity_and_cost_saved(
    tmp_path: Path,
) -> None:
    async with (
        serve(embedder([])) as up,
        gateway(tmp_path, registry(up), settings()) as (url, app),
        httpx.AsyncClient(base_url=url) as c,
    ):
        await c.post("/v1/chat/completions", json=ask(PARIS), headers=bearer(**{"x-agentgw-task": "a"}))
        await c.post("/v1/chat/completions", json=ask(REWORDED), headers=bearer(**{"x-agentgw-task": "b"}))
        asked, answered = await spent(app, "tester/a"), await spent(app, "tester/b")
    miss, hit = [r for r in audit_records(tmp_path) if r["operation"] == "chat"]
    used = miss["usage"]
    assert asked == (used["total_tokens"], 0) and answered == (0, 0)  # the hit's task spent nothing
    assert miss["attempts"] and not hit["attempts"]  # no chat provider was asked
    usd = round((used["input_tokens"] * 2.0 + used["output_tokens"] * 8.0) / 1_000_000, 9)
    cache = hit["cache"]
    assert cache["kind"] == "semantic" and cache["similarity"] == 0.9798 and cache["threshold"] == 0.95
    assert cache["saved"] == {
        "tokens": used["total_tokens"],
        "input_tokens": used["input_tokens"],
        "output_tokens": used["output_tokens"],
        "usd": usd,
    }
    assert isinstance(cache["id"], str) and len(cache["id"]) == 16 and cache["embedding_tokens"] == 7
    [decided] = [d for d in hit["decisions"] if d["stage"] == "cache"]
    assert decided["rule"] == "cache:principal"
    assert decided["detail"].startswith(f"semantic hit {cache['id']}, similarity 0.9798")
    assert hit["usage"]["total_tokens"] == 0 and hit["cost"]["usd"] == 0


async def test_with_charge_a_semantic_hit_costs_the_task_what_the_answer_first_cost(tmp_path: Path) -> None:
    async with (
        serve(embedder([])) as up,
        gateway(tmp_path, registry(up), settings(charge=True)) as (url, app),
        httpx.AsyncClient(base_url=url) as c,
    ):
        first = await c.post(
            "/v1/chat/completions", json=ask(PARIS), headers=bearer(**{"x-agentgw-task": "a"})
        )
        hit = await c.post(
            "/v1/chat/completions", json=ask(REWORDED), headers=bearer(**{"x-agentgw-task": "b"})
        )
        answered = await spent(app, "tester/b")
    assert hit.headers["x-agentgw-cache"] == "semantic-hit"
    assert answered == (first.json()["usage"]["total_tokens"], 0)


async def test_an_embedding_model_that_is_down_is_a_miss_never_an_error(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with (
        gateway(tmp_path, registry(down), settings()) as (url, _),
        httpx.AsyncClient(base_url=url) as c,
    ):
        first = await c.post("/v1/chat/completions", json=ask(PARIS), headers=bearer())
        second = await c.post("/v1/chat/completions", json=ask(REWORDED), headers=bearer())
        exact = await c.post("/v1/chat/completions", json=ask(PARIS), headers=bearer())
    assert [r.status_code for r in (first, second, exact)] == [200, 200, 200]
    assert [r.headers["x-agentgw-cache"] for r in (first, second, exact)] == ["miss", "miss", "hit"]
    assert second.json()["choices"][0]["message"]["content"] == REWORDED
    record = [r for r in audit_records(tmp_path) if r["operation"] == "chat"][1]
    assert record["status"] == "ok" and record["cache"]["kind"] == "miss"
    assert record["cache"]["error"].startswith("embedding failed")


async def test_an_embedding_model_missing_from_the_registry_refuses_to_start(tmp_path: Path) -> None:
    cfg = settings(semantic={"embedding_model": "nope"})
    with pytest.raises(ConfigError, match=r"llm\.cache\.semantic\.embedding_model.*'nope' is not a model"):
        create_app(load_settings(write_config(tmp_path, registry("http://127.0.0.1:9"), cfg)))


async def test_two_gateways_on_one_redis_share_the_semantic_index(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    try:
        probe = aioredis.from_url(REDIS_URL)
        await probe.ping()
        await probe.aclose()
    except Exception:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"agentgw:test:{uuid.uuid4().hex}"
    cfg = settings(store="redis", redis_url=REDIS_URL, key_prefix=prefix + ":")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        async with (
            serve(embedder([])) as up,
            gateway(tmp_path / "a", registry(up), cfg) as (url_a, _),
            gateway(tmp_path / "b", registry(up), cfg) as (url_b, _),
            httpx.AsyncClient() as c,
        ):
            first = await c.post(f"{url_a}/v1/chat/completions", json=ask(PARIS), headers=bearer())
            second = await c.post(f"{url_b}/v1/chat/completions", json=ask(REWORDED), headers=bearer())
            third = await c.post(
                f"{url_a}/v1/chat/completions", json=ask(REWORDED, "mock-strict"), headers=bearer()
            )
        client = aioredis.from_url(REDIS_URL)
        index_keys = await client.keys(f"{prefix}:sem:*")
        await client.aclose()
    finally:
        await drop_redis_keys(REDIS_URL, prefix)
    assert (first.headers["x-agentgw-cache"], second.headers["x-agentgw-cache"]) == ("miss", "semantic-hit")
    assert second.json() == first.json()
    assert (
        third.headers["x-agentgw-cache"] == "miss" and len(index_keys) == 2
    )  # mock-fast's, then mock-strict's
    [hit] = [r for r in audit_records(tmp_path / "b") if r["operation"] == "chat"]
    assert hit["cache"]["kind"] == "semantic" and hit["cache"]["similarity"] == 0.9798
