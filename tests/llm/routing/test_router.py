"""Model aliases with ordered targets: retries, failover, circuit breaker, timeouts, stream commit, and
credential hygiene, against real upstream servers on loopback."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.support import TEST_KEY, audit_records, gateway, serve
from tests.upstreams import FakeOpenAI

AUTH = {"authorization": f"Bearer {TEST_KEY}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
FAST_RETRY = {"attempts": 2, "backoff_ms": 1, "max_backoff_ms": 2}


def registry(*urls: str, retry: dict[str, Any] | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    providers = [
        {
            "name": f"up{i}",
            "kind": "openai",
            "base_url": f"{u}/v1",
            "api_key": f"sk-upstream-secret-{i}",
            "timeout_s": timeout_s,
        }
        for i, u in enumerate(urls)
    ]
    targets = [{"provider": f"up{i}", "model": f"real-{i}"} for i in range(len(urls))]
    model: dict[str, Any] = {"name": "m", "targets": targets, "retry": retry or FAST_RETRY}
    return {"llm": {"providers": providers, "models": [model]}}


@contextlib.asynccontextmanager
async def upstreams(*fakes: FakeOpenAI) -> AsyncIterator[list[str]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve(f.app())) for f in fakes]


async def test_an_integer_beyond_64_bits_reaches_the_upstream_intact_when_the_model_is_rewritten(
    tmp_path: Path,
) -> None:
    """JSON allows any integer: a rewritten body (alias → upstream model) keeps 2**70 an integer, not a float."""
    up = FakeOpenAI()
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x_extra":1180591620717411303424}'
    async with (
        upstreams(up) as urls,
        gateway(tmp_path, registry(*urls)) as (url, _),
        httpx.AsyncClient() as c,
    ):
        r = await c.post(
            f"{url}/v1/chat/completions", content=raw, headers={**AUTH, "content-type": "application/json"}
        )
    assert r.status_code == 200
    sent = up.requests[0]["raw"]
    assert b'"model":"real-0"' in sent and b'"x_extra":1180591620717411303424' in sent


async def test_the_original_bytes_reach_the_upstream_when_nothing_changes(tmp_path: Path) -> None:
    up = FakeOpenAI()
    raw = b'{"model":"m",  "messages":[{"role":"user","content":"hi"}], "x_extra": 1}'
    async with upstreams(up) as urls:
        reg = registry(*urls)
        reg["llm"]["models"][0]["targets"][0]["model"] = "m"  # alias == upstream name: no rewrite needed
        async with gateway(tmp_path, reg) as (url, _), httpx.AsyncClient() as client:
            r = await client.post(
                f"{url}/v1/chat/completions",
                content=raw,
                headers={**AUTH, "content-type": "application/json"},
            )
    assert r.status_code == 200
    assert up.requests[0]["raw"] == raw


async def test_the_upstream_gets_the_registry_credential_and_never_the_callers_key(tmp_path: Path) -> None:
    up = FakeOpenAI()
    async with upstreams(up) as urls, gateway(tmp_path, registry(*urls)) as (url, _):
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200
    seen = up.requests[0]["headers"]
    assert seen["authorization"] == "Bearer sk-upstream-secret-0"
    assert TEST_KEY not in str(up.requests[0])
    assert up.requests[0]["body"]["model"] == "real-0"


async def test_a_5xx_is_retried_on_the_same_target_and_each_attempt_is_audited(tmp_path: Path) -> None:
    up = FakeOpenAI(failures=[503])
    async with upstreams(up) as urls, gateway(tmp_path, registry(*urls)) as (url, _):
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200
    attempts = audit_records(tmp_path)[-1]["attempts"]
    assert [(a["attempt"], a["target"], a["outcome"], a["status"]) for a in attempts] == [
        (1, "up0/real-0", "error", 503),
        (2, "up0/real-0", "ok", 200),
    ]


async def test_when_a_target_keeps_failing_the_next_target_answers(tmp_path: Path) -> None:
    bad, good = FakeOpenAI(failures=[500, 429]), FakeOpenAI(reply="from the second")
    async with upstreams(bad, good) as urls, gateway(tmp_path, registry(*urls)) as (url, _):
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.json()["choices"][0]["message"]["content"] == "from the second"
    outcomes = [(a["target"], a["outcome"]) for a in audit_records(tmp_path)[-1]["attempts"]]
    assert outcomes == [("up0/real-0", "error"), ("up0/real-0", "error"), ("up1/real-1", "ok")]


async def test_a_refused_port_fails_over_like_a_5xx(tmp_path: Path) -> None:
    from tests.support import free_port

    good = FakeOpenAI()
    async with upstreams(good) as urls:
        dead = f"http://127.0.0.1:{free_port()}"
        async with gateway(tmp_path, registry(dead, urls[0])) as (url, _), httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200
    assert audit_records(tmp_path)[-1]["attempts"][0]["outcome"] == "error"


async def test_when_every_target_fails_the_client_gets_502_with_the_last_cause(tmp_path: Path) -> None:
    a, b = FakeOpenAI(failures=[500, 500]), FakeOpenAI(failures=[502, 503])
    async with upstreams(a, b) as urls, gateway(tmp_path, registry(*urls)) as (url, _):
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "upstream_error"
    assert "503" in err["message"]
    assert "sk-upstream-secret" not in r.text


async def test_a_timeout_on_every_target_is_a_504(tmp_path: Path) -> None:
    up = FakeOpenAI(hang=True)
    reg = registry("", retry={"attempts": 1, "backoff_ms": 0, "max_backoff_ms": 0}, timeout_s=0.3)
    async with upstreams(up) as urls:
        reg["llm"]["providers"][0]["base_url"] = f"{urls[0]}/v1"
        async with gateway(tmp_path, reg) as (url, _), httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"


async def test_an_upstream_4xx_is_relayed_with_its_status_and_without_credentials(tmp_path: Path) -> None:
    up = FakeOpenAI(
        failures=[400],
        error_body={
            "error": {
                "message": "bad request, key sk-upstream-secret-0 rejected",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )
    async with upstreams(up) as urls, gateway(tmp_path, registry(*urls)) as (url, _):
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert err["param"] == "messages"
    assert "sk-upstream-secret-0" not in r.text
    assert len(up.requests) == 1  # a 4xx is the request's fault: no retry, no failover


async def test_an_upstream_401_does_not_tell_the_caller_their_key_is_wrong(tmp_path: Path) -> None:
    up = FakeOpenAI(failures=[401])
    async with upstreams(up) as urls, gateway(tmp_path, registry(*urls)) as (url, _):
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_auth_failed"


async def test_the_circuit_opens_after_consecutive_failures_and_skips_the_target(tmp_path: Path) -> None:
    bad, good = FakeOpenAI(failures=[500] * 10), FakeOpenAI()
    settings = {"upstream": {"circuit_breaker": {"failures": 2, "cooldown_s": 60}}}
    retry = {"attempts": 1, "backoff_ms": 0, "max_backoff_ms": 0}
    async with (
        upstreams(bad, good) as urls,
        gateway(tmp_path, registry(*urls, retry=retry), settings) as (url, _),
    ):
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
                assert r.status_code == 200
    assert len(bad.requests) == 2  # the third call never reached the open circuit
    third = audit_records(tmp_path)[-1]["attempts"]
    assert third[0]["outcome"] == "circuit_open"


async def test_a_half_open_circuit_lets_one_trial_through_and_closes_on_success(tmp_path: Path) -> None:
    flaky, good = FakeOpenAI(failures=[500]), FakeOpenAI()
    settings = {"upstream": {"circuit_breaker": {"failures": 1, "cooldown_s": 0}}}
    retry = {"attempts": 1, "backoff_ms": 0, "max_backoff_ms": 0}
    async with (
        upstreams(flaky, good) as urls,
        gateway(tmp_path, registry(*urls, retry=retry), settings) as (url, app),
    ):
        async with httpx.AsyncClient() as client:
            await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
            assert app.llm.router.breakers["up0/real-0"].state == "open"
            r = await client.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200
    assert len(flaky.requests) == 2
    assert app.llm.router.breakers["up0/real-0"].state == "closed"


async def test_a_stream_is_never_retried_after_its_first_byte_reached_the_client(tmp_path: Path) -> None:
    gate = anyio.Event()
    up, backup = FakeOpenAI(chunks=4, chunk_gate=gate), FakeOpenAI()
    body = {**CHAT, "stream": True}
    async with upstreams(up, backup) as urls, gateway(tmp_path, registry(*urls)) as (url, _):
        async with httpx.AsyncClient() as client:
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH) as r:
                lines = r.aiter_lines()
                first = await anext(lines)
                assert first.startswith("data: ")
                up.hang = True  # too late to matter: the stream is committed
                gate.set()
                rest = [line async for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert backup.requests == []


async def test_a_client_disconnect_mid_stream_reaches_the_upstream_within_a_second(tmp_path: Path) -> None:
    gate = anyio.Event()  # never set: the upstream stalls after its first chunk
    up = FakeOpenAI(chunks=4, chunk_gate=gate)
    async with upstreams(up) as urls, gateway(tmp_path, registry(*urls)) as (url, _):
        async with httpx.AsyncClient() as client:
            async with client.stream(
                "POST", f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
            ) as r:
                await anext(r.aiter_lines())
        with anyio.fail_after(1):
            await up.disconnected.wait()
    record = audit_records(tmp_path)[-1]
    assert record["status"] == "cancelled"
    assert record["stream_cut"] == "client_disconnect"


async def test_a_client_disconnect_while_waiting_cancels_the_upstream_request(tmp_path: Path) -> None:
    up = FakeOpenAI(hang=True)
    async with upstreams(up) as urls, gateway(tmp_path, registry(*urls)) as (url, _):
        async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(client.post, f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
            )
            with anyio.fail_after(5):
                await up.started.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(1):
            await up.disconnected.wait()
