"""Handshake-era sessions shared by replicas through Redis: a broken stream resumes on another replica, a session
ended on one is ended on all, the log level and resource subscriptions set through one hold on the others, and a
client's answer to a server's question may reach any replica."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp.types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.a2a.test_replicas import REDIS_URL, redis_up
from tests.mcp.bridges.test_input import Asked
from tests.mcp.support import ACCEPT, INIT, Upstream, mcp_client, registry, server_entry
from tests.support import TEST_KEY, drop_redis_keys, gateway, serve

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
README = "agentgw://docs/file:///readme.md"


@contextlib.asynccontextmanager
async def _replicas(tmp: Path, docs: Upstream) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    async with _gateways(tmp, docs) as (http, (url_a, _), (url_b, _)):
        yield http, url_a, url_b


@contextlib.asynccontextmanager
async def _gateways(tmp: Path, docs: Upstream) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Any]]:
    """Two gateways with one secret, sharing sessions through Redis, in front of the same upstream."""
    await redis_up()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = {
        "secret": "s" * 40,
        "mcp": {"sessions": {"shared": "redis", "redis_url": REDIS_URL}},
        "budgets": {"redis_url": REDIS_URL, "key_prefix": prefix},
    }
    try:
        async with serve(docs) as up, httpx.AsyncClient(timeout=10) as http:
            reg = registry(server_entry("docs", up))
            (tmp / "a").mkdir()
            (tmp / "b").mkdir()
            async with gateway(tmp / "a", reg, settings) as a, gateway(tmp / "b", reg, settings) as b:
                yield http, a, b
    finally:
        await drop_redis_keys(REDIS_URL, prefix)


async def _open(
    http: httpx.AsyncClient, url: str, capabilities: dict[str, Any] | None = None
) -> dict[str, str]:
    init = {**INIT, "params": {**INIT["params"], "capabilities": capabilities or {}}}  # type: ignore[dict-item]
    opened = await http.post(f"{url}/mcp", json=init, headers={**ACCEPT, **AUTH})
    assert opened.status_code == 200
    session = {**ACCEPT, **AUTH, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
    session["MCP-Protocol-Version"] = "2025-11-25"
    ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(f"{url}/mcp", json=ready, headers=session)).status_code == 202
    return session


def _heard(gw: Any, kind: str) -> anyio.Event:
    """Set once replica `gw` has acted on the next `kind` message of the shared control channel."""
    shared = next(iter(gw.mcp.endpoints.values())).shared
    handler, done = shared._handlers[kind], anyio.Event()

    async def then_set(session_id: str, payload: bytes) -> None:
        await handler(session_id, payload)
        done.set()

    shared._handlers[kind] = then_set
    return done


def _rpc(rid: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}


def _messages(text: str) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE body (or the one message of a JSON body)."""
    if text.lstrip().startswith("{"):
        return [json.loads(text)]
    return [
        json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()
    ]


async def test_a_stream_broken_on_one_replica_resumes_on_another_with_last_event_id(tmp_path: Path) -> None:
    docs = Upstream("docs")
    async with _replicas(tmp_path, docs) as (http, url_a, url_b):
        session = await _open(http, url_a)
        call = _rpc(7, "tools/call", {"name": "docs__wait_gate"})
        with anyio.fail_after(20):
            async with http.stream("POST", f"{url_a}/mcp", json=call, headers=session) as stream:
                async for line in stream.aiter_lines():  # the priming event: an id and empty data
                    if line.startswith("id:"):
                        event_id = line[3:].strip()
                        break
            # The client's stream to replica a is gone; the call goes on there. It reconnects through b.
            resumed = {**session, "Accept": "text/event-stream", "Last-Event-ID": event_id}
            async with http.stream("GET", f"{url_b}/mcp", headers=resumed) as replay:
                assert replay.status_code == 200
                docs.gate.set()
                async for line in replay.aiter_lines():
                    if line.startswith("data:") and line[5:].strip():
                        message = json.loads(line[5:])
                        break
    assert message["id"] == 7
    assert message["result"]["content"][0]["text"] == "opened"


async def test_a_session_deleted_through_one_replica_is_gone_on_every_replica(tmp_path: Path) -> None:
    async with _gateways(tmp_path, Upstream("docs")) as (http, (url_a, _), (url_b, gw_b)):
        session = await _open(http, url_a)
        echo = _rpc(2, "tools/call", {"name": "docs__echo", "arguments": {"text": "hi"}})
        served = await http.post(f"{url_b}/mcp", json=echo, headers=session)  # b serves it too now
        ended_on_b = _heard(gw_b, "end")
        deleted = await http.delete(f"{url_a}/mcp", headers=session)
        with anyio.fail_after(10):
            await ended_on_b.wait()
        after_b = await http.post(f"{url_b}/mcp", json=echo, headers=session)
        after_a = await http.post(f"{url_a}/mcp", json=echo, headers=session)
    assert served.status_code == 200 and deleted.status_code == 200
    assert after_b.status_code == 404 and after_a.status_code == 404


async def test_a_session_deleted_on_one_replica_is_not_revived_by_another_that_never_served_it(
    tmp_path: Path,
) -> None:
    async with _replicas(tmp_path, Upstream("docs")) as (http, url_a, url_b):
        session = await _open(http, url_a)
        deleted = await http.delete(f"{url_a}/mcp", headers=session)
        echo = _rpc(2, "tools/call", {"name": "docs__echo", "arguments": {"text": "hi"}})
        elsewhere = await http.post(f"{url_b}/mcp", json=echo, headers=session)
    assert deleted.status_code == 200
    assert elsewhere.status_code == 404


async def test_the_log_level_set_through_one_replica_holds_on_another(tmp_path: Path) -> None:
    async with _gateways(tmp_path, Upstream("docs")) as (http, (url_a, _), (url_b, gw_b)):
        session = await _open(http, url_a)
        chatty = _rpc(3, "tools/call", {"name": "docs__chatty"})
        before = _messages((await http.post(f"{url_b}/mcp", json=chatty, headers=session)).text)
        leveled_on_b = _heard(gw_b, "level")
        set_level = await http.post(
            f"{url_a}/mcp", json=_rpc(4, "logging/setLevel", {"level": "info"}), headers=session
        )
        with anyio.fail_after(10):
            await leveled_on_b.wait()
        after = _messages((await http.post(f"{url_b}/mcp", json=chatty, headers=session)).text)
    assert set_level.status_code == 200
    assert not any(
        m.get("method") == "notifications/message" for m in before
    )  # no level set yet: none relayed
    levels = [m["params"]["level"] for m in after if m.get("method") == "notifications/message"]
    assert levels == ["info", "warning"]


async def test_a_replica_that_revives_a_session_learns_its_log_level(tmp_path: Path) -> None:
    async with _replicas(tmp_path, Upstream("docs")) as (http, url_a, url_b):
        session = await _open(http, url_a)
        await http.post(
            f"{url_a}/mcp", json=_rpc(4, "logging/setLevel", {"level": "warning"}), headers=session
        )
        chatty = _rpc(3, "tools/call", {"name": "docs__chatty"})
        first = _messages((await http.post(f"{url_b}/mcp", json=chatty, headers=session)).text)
    levels = [m["params"]["level"] for m in first if m.get("method") == "notifications/message"]
    assert levels == ["warning"]


async def test_a_subscription_made_through_one_replica_is_heard_on_the_get_stream_another_serves(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    async with _gateways(tmp_path, docs) as (http, (url_a, _), (url_b, gw_b)):
        session = await _open(http, url_a)
        sub = _rpc(2, "resources/subscribe", {"uri": README})
        subscribed = await http.post(f"{url_a}/mcp", json=sub, headers=session)
        heard: list[dict[str, Any]] = []
        listening = {**session, "Accept": "text/event-stream"}
        with anyio.fail_after(20):
            # b serves the session from the GET on, with the subscription made through a taken back upstream
            async with http.stream("GET", f"{url_b}/mcp", headers=listening) as stream:
                watched = dict(gw_b.mcp.upstreams.by_name["docs"]._watched)
                touch = _rpc(3, "tools/call", {"name": "docs__touch"})
                touched = await http.post(f"{url_b}/mcp", json=touch, headers=session)
                async for line in stream.aiter_lines():
                    if line.startswith("data:") and line[5:].strip():
                        heard.append(json.loads(line[5:]))
                        if heard[-1].get("method") == "notifications/resources/updated":
                            break
            unsub = _rpc(4, "resources/unsubscribe", {"uri": README})
            released_on_b = _heard(gw_b, "subs")
            unsubscribed = await http.post(f"{url_a}/mcp", json=unsub, headers=session)
            await released_on_b.wait()
            left = dict(gw_b.mcp.upstreams.by_name["docs"]._watched)
    assert subscribed.status_code == 200 and touched.status_code == 200 and unsubscribed.status_code == 200
    assert watched == {"file:///readme.md": 1} and left == {}
    assert heard[-1]["params"]["uri"] == README


async def test_an_answer_to_an_elicitation_posted_to_another_replica_reaches_the_call(tmp_path: Path) -> None:
    async with _replicas(tmp_path, Upstream("docs")) as (http, url_a, url_b):
        session = await _open(http, url_a, {"elicitation": {}})
        call = _rpc(5, "tools/call", {"name": "docs__greet_user"})
        answer: dict[str, Any] | None = None
        with anyio.fail_after(20):
            async with http.stream("POST", f"{url_a}/mcp", json=call, headers=session) as stream:
                async for line in stream.aiter_lines():
                    if not (line.startswith("data:") and line[5:].strip()):
                        continue
                    message = json.loads(line[5:])
                    if message.get("method") == "elicitation/create":
                        reply = {
                            "jsonrpc": "2.0",
                            "id": message["id"],
                            "result": {"action": "accept", "content": {"name": "Ada"}},
                        }
                        posted = await http.post(f"{url_b}/mcp", json=reply, headers=session)
                        assert posted.status_code == 202
                    elif message.get("id") == 5:
                        answer = message
                        break
    assert answer is not None
    assert "Ada" in answer["result"]["content"][0]["text"]


@pytest.mark.parametrize("upstream_era", ["handshake", "modern"])
async def test_a_modern_callers_retry_of_an_input_required_round_may_reach_another_replica(
    tmp_path: Path, upstream_era: str
) -> None:
    """With a handshake-era upstream the call is held open on the replica that started it, which plays the
    round another replica received; with a 2026-07-28 upstream the sealed state carries everything."""
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    async with _replicas(tmp_path, docs) as (_, url_a, url_b):
        with anyio.fail_after(30):
            async with (
                mcp_client(f"{url_a}/mcp", mode="2026-07-28", **Asked().options()) as on_a,
                mcp_client(f"{url_b}/mcp", mode="2026-07-28", **Asked().options()) as on_b,
            ):
                first = await on_a.session.call_tool("docs__greet_user", {}, allow_input_required=True)
                assert isinstance(first, types.InputRequiredResult)
                assert first.input_requests is not None and first.request_state
                (key,) = first.input_requests
                answer = {key: {"action": "accept", "content": {"name": "Grace"}}}
                done = await on_b.session.call_tool(
                    "docs__greet_user",
                    {},
                    input_responses=answer,  # type: ignore[arg-type]
                    request_state=first.request_state,
                    allow_input_required=True,
                )
                if upstream_era == "handshake":  # the round was played: its state is spent
                    with pytest.raises(MCPError) as spent:
                        await on_b.session.call_tool(
                            "docs__greet_user",
                            {},
                            input_responses=answer,  # type: ignore[arg-type]
                            request_state=first.request_state,
                            allow_input_required=True,
                        )
                    assert spent.value.code == -32602
    assert isinstance(done, types.CallToolResult)
    assert done.content[0].text == "Hello, Grace!"  # type: ignore[union-attr]


async def test_a_resumed_stream_whose_call_died_with_its_replica_ends_with_an_error_not_a_hang(
    tmp_path: Path,
) -> None:
    await redis_up()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = {
        "secret": "s" * 40,
        "mcp": {"sessions": {"shared": "redis", "redis_url": REDIS_URL}},
        "budgets": {"redis_url": REDIS_URL, "key_prefix": prefix},
    }
    docs = Upstream("docs")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        async with serve(docs) as up, httpx.AsyncClient(timeout=30) as http:
            reg = registry(server_entry("docs", up))
            async with gateway(tmp_path / "b", reg, settings) as (url_b, _):
                async with gateway(tmp_path / "a", reg, settings) as (url_a, _):
                    session = await _open(http, url_a)
                    call = _rpc(7, "tools/call", {"name": "docs__wait_gate"})
                    with anyio.fail_after(10):
                        async with http.stream("POST", f"{url_a}/mcp", json=call, headers=session) as stream:
                            async for line in stream.aiter_lines():
                                if line.startswith("id:"):
                                    event_id = line[3:].strip()
                                    break
                # replica a is gone, its call with it (the upstream never answered)
                resumed = {**session, "Accept": "text/event-stream", "Last-Event-ID": event_id}
                with anyio.fail_after(20):
                    async with http.stream("GET", f"{url_b}/mcp", headers=resumed) as replay:
                        async for line in replay.aiter_lines():
                            if line.startswith("data:") and line[5:].strip():
                                message = json.loads(line[5:])
                                if message.get("id") == 7:
                                    break
            docs.gate.set()
    finally:
        await drop_redis_keys(REDIS_URL, prefix)
    assert message["id"] == 7 and "error" in message
