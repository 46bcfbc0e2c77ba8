"""The gateway's own handshake-era sessions: ids that survive a restart and a move to another replica (sealed, bound
to the principal that opened them), ended sessions that stay ended, and sessions kept alive by the calls the direct
path serves."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentgw.exchange import Principal
from agentgw.mcp.front.sessions import Opening, SessionIds
from tests.mcp.support import ACCEPT, INIT, Upstream, mcp_client, registry, server_entry
from tests.support import OTHER_KEY, TEST_KEY, free_port, gateway, serve

SECRET = {"secret": "s" * 40}
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


async def _open(http: httpx.AsyncClient, url: str, key: str = TEST_KEY) -> dict[str, str]:
    """initialize + initialized over raw HTTP; the headers every later request of the session carries."""
    auth = {"Authorization": f"Bearer {key}"}
    opened = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **auth})
    assert opened.status_code == 200
    session = {**ACCEPT, **auth, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
    session["MCP-Protocol-Version"] = "2025-11-25"
    ready = await http.post(
        f"{url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
    )
    assert ready.status_code == 202
    return session


async def _call(http: httpx.AsyncClient, url: str, session: dict[str, str], rid: int = 2) -> httpx.Response:
    call = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "docs__echo"}}
    call["params"]["arguments"] = {"text": "again"}
    return await http.post(f"{url}/mcp", json=call, headers=session)


@contextlib.asynccontextmanager
async def _gated_call(
    http: httpx.AsyncClient, url: str, session: dict[str, str], docs: Upstream
) -> AsyncIterator[list[httpx.Response]]:
    """`docs__wait_gate` in flight on `session` for the duration of the block; its answer is in the list after."""
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "docs__wait_gate"}}
    answers: list[httpx.Response] = []

    async def slow_call() -> None:
        answers.append(await http.post(f"{url}/mcp", json=call, headers=session))

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_call)
        with anyio.fail_after(10):
            await docs.tool_started.wait()
        yield answers
        docs.gate.set()


def _result_text(response: httpx.Response) -> str:
    """The tool's text from a JSON answer or from the answer event of an SSE one (the server picks)."""
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [
            line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]
        body: dict[str, Any] = json.loads(data[-1])
    else:
        body = response.json()
    return str(body["result"]["content"][0]["text"])


async def test_a_session_outlives_a_restart_of_the_gateway(tmp_path: Path) -> None:
    docs = Upstream("docs")
    port = free_port()
    async with serve(docs) as up, httpx.AsyncClient(timeout=10) as http:
        reg = registry(server_entry("docs", up))
        async with gateway(tmp_path, reg, SECRET, port=port) as (url, _):
            session = await _open(http, url)
            before = await _call(http, url, session)
        async with gateway(tmp_path, reg, SECRET, port=port) as (url, _):
            after = await _call(http, url, session, rid=3)
            listed = await http.post(
                f"{url}/mcp", json={"jsonrpc": "2.0", "id": 4, "method": "tools/list"}, headers=session
            )
            direct = await _call(http, url, session, rid=5)
    assert _result_text(before) == _result_text(after) == _result_text(direct) == "again"
    assert after.headers["mcp-session-id"] == session["Mcp-Session-Id"]
    assert "docs__echo" in listed.text
    assert direct.headers["content-type"].startswith("application/json")  # the direct path serves it again


@contextlib.asynccontextmanager
async def _two_replicas(
    tmp: Path, secret_b: dict[str, str]
) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    """Two gateways in front of the same upstream: replica a with SECRET, replica b with `secret_b`."""
    docs = Upstream("docs")
    async with serve(docs) as up, httpx.AsyncClient(timeout=10) as http:
        reg = registry(server_entry("docs", up))
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        async with (
            gateway(tmp / "a", reg, SECRET) as (url_a, _),
            gateway(tmp / "b", reg, secret_b) as (url_b, _),
        ):
            yield http, url_a, url_b


async def test_a_session_opened_on_one_replica_is_served_by_another_with_the_same_secret(
    tmp_path: Path,
) -> None:
    async with _two_replicas(tmp_path, SECRET) as (http, url_a, url_b):
        session = await _open(http, url_a)
        moved = await _call(http, url_b, session)
        stolen = await _call(http, url_b, {**session, "Authorization": f"Bearer {OTHER_KEY}"}, rid=5)
    assert _result_text(moved) == "again"
    assert stolen.status_code == 404  # bound to the principal that opened it, on every replica


async def test_concurrent_first_calls_of_a_moved_session_are_all_served_by_the_replica_that_revives_it(
    tmp_path: Path,
) -> None:
    """With --workers or replicas the first requests of a session another process opened come together: every one
    must wait for the session to be revived, not reach it half-made (once a 500 "No read stream writer")."""
    async with _two_replicas(tmp_path, SECRET) as (http, url_a, url_b):
        sessions = [await _open(http, url_a) for _ in range(4)]
        answers: list[httpx.Response] = []

        async def call(session: dict[str, str], rid: int) -> None:
            answers.append(await _call(http, url_b, session, rid))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for session in sessions:
                    for rid in range(2, 10):
                        tg.start_soon(call, session, rid)
    assert sorted(a.status_code for a in answers) == [200] * 32
    assert {_result_text(a) for a in answers} == {"again"}


async def test_a_replica_without_the_secret_does_not_know_the_session(tmp_path: Path) -> None:
    async with _two_replicas(tmp_path, {"secret": "t" * 40}) as (http, url_a, url_b):
        session = await _open(http, url_a)
        elsewhere = await _call(http, url_b, session)
    assert elsewhere.status_code == 404


async def test_a_deleted_session_stays_deleted(tmp_path: Path) -> None:
    docs = Upstream("docs")
    async with serve(docs) as up, httpx.AsyncClient(timeout=10) as http:
        async with gateway(tmp_path, registry(server_entry("docs", up)), SECRET) as (url, _):
            session = await _open(http, url)
            deleted = await http.delete(f"{url}/mcp", headers=session)
            after = await _call(http, url, session)
    assert deleted.status_code == 200
    assert after.status_code == 404


@pytest.mark.parametrize(
    "forged",
    ["v1.AAAA", "not-a-session", "v1." + "A" * 200],
)
async def test_a_made_up_session_id_is_not_found(tmp_path: Path, forged: str) -> None:
    docs = Upstream("docs")
    async with serve(docs) as up, httpx.AsyncClient(timeout=10) as http:
        async with gateway(tmp_path, registry(server_entry("docs", up)), SECRET) as (url, _):
            session = await _open(http, url)
            answer = await _call(http, url, {**session, "Mcp-Session-Id": forged})
    assert answer.status_code == 404


def test_a_session_id_opens_only_for_its_principal_endpoint_and_age() -> None:
    ids = SessionIds(b"k" * 32, "/mcp", max_age_s=3600)
    me, other = Principal("tester", ("agents",)), Principal("other")
    sid = ids.mint(Opening(me, INIT["params"]))  # type: ignore[arg-type]
    opened = ids.open(sid, me)
    assert opened is not None and opened.version == "2025-11-25"
    assert ids.open(sid, other) is None
    assert SessionIds(b"k" * 32, "/mcp/readonly", 3600).open(sid, me) is None
    assert SessionIds(b"k" * 32, "/mcp", max_age_s=1e-9).open(sid, me) is None
    assert SessionIds(b"x" * 32, "/mcp", 3600).open(sid, me) is None
    assert ids.open(sid[:-2] + ("A" if sid[-2] != "A" else "B") + sid[-1], me) is None


async def test_the_sdk_client_carries_on_after_the_gateway_restarts(tmp_path: Path) -> None:
    docs = Upstream("docs")
    port = free_port()
    first_up, restart, second_up, done = anyio.Event(), anyio.Event(), anyio.Event(), anyio.Event()
    async with serve(docs) as up, anyio.create_task_group() as tg:
        reg = registry(server_entry("docs", up))

        async def two_gateways_one_port() -> None:
            async with gateway(tmp_path, reg, SECRET, port=port):
                first_up.set()
                await restart.wait()
            async with gateway(tmp_path, reg, SECRET, port=port):
                second_up.set()
                await done.wait()

        tg.start_soon(two_gateways_one_port)
        with anyio.fail_after(20):
            await first_up.wait()
            async with mcp_client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
                first = await client.call_tool("docs__echo", {"text": "one"})
                restart.set()
                await second_up.wait()
                second = await client.call_tool("docs__echo", {"text": "two"})
            done.set()
    assert first.content[0].text == "one"  # type: ignore[union-attr]
    assert second.content[0].text == "two"  # type: ignore[union-attr]


async def test_a_session_used_only_by_direct_calls_outlives_its_idle_timeout(tmp_path: Path) -> None:
    docs = Upstream("docs")
    settings = {**SECRET, "mcp": {"sessions": {"idle_timeout_s": 0.3}}}
    async with serve(docs) as up, httpx.AsyncClient(timeout=10) as http:
        async with gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, _):
            session = await _open(http, url)
            async with _gated_call(http, url, session, docs) as answers:
                never = anyio.Event()
                with anyio.move_on_after(0.6):  # twice the idle timeout passes with the call in flight
                    await never.wait()
            after = await _call(http, url, session)
    assert "opened" in answers[0].text
    assert _result_text(after) == "again"


async def test_one_principal_cannot_fill_the_session_table_its_oldest_idle_session_makes_room(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    settings = {**SECRET, "mcp": {"sessions": {"max_sessions": 3, "max_per_principal": 2}}}
    async with serve(docs) as up, httpx.AsyncClient(timeout=10) as http:
        async with gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, _):
            oldest, second, newest = [await _open(http, url) for _ in range(3)]
            answers = [await _call(http, url, s, rid) for rid, s in enumerate((oldest, second, newest), 2)]
            other = await http.post(
                f"{url}/mcp", json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {OTHER_KEY}"}
            )
    assert answers[0].status_code == 404  # ended to make room for the third
    assert [_result_text(a) for a in answers[1:]] == ["again", "again"]
    assert other.status_code == 200  # the table was not full: another principal still gets in


async def test_a_principal_whose_sessions_are_all_busy_is_refused_and_no_one_else_is(tmp_path: Path) -> None:
    docs = Upstream("docs")
    settings = {**SECRET, "mcp": {"sessions": {"max_per_principal": 1}}}
    async with serve(docs) as up, httpx.AsyncClient(timeout=10) as http:
        async with gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, _):
            session = await _open(http, url)
            async with _gated_call(http, url, session, docs) as answers:
                refused = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH})
                other = await http.post(
                    f"{url}/mcp", json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {OTHER_KEY}"}
                )
    assert refused.status_code == 503
    assert other.status_code == 200
    assert "opened" in answers[0].text  # the busy session was not touched
