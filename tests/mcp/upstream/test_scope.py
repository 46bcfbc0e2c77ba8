"""Whose upstream session a call uses (registry `session_scope`): under `principal` (the default) what a server
keeps per session stays with the principal that put it there, a session declares only what its callers can
answer, and a question that belongs to no caller's request gets an answer that carries nobody's data."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import httpx
import mcp.types as types
import pytest
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

from agentgw.mcp.upstream.inflight import unasked
from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.mcp.upstream.test_upstreams import STDIO_SERVER
from tests.support import TEST_KEY, gateway, serve, sha

SECOND_KEY = "agw-second-key-0123456789"
TWO_KEYS = {
    "auth": {
        "api_keys": [
            {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
            {"subject": "second", "roles": ["agents"], "sha256": sha(SECOND_KEY)},
        ]
    }
}


async def private_root(context: ClientRequestContext) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///home/alice/private", name="private")])


def _text(result: types.CallToolResult) -> str:
    return str(result.content[0].text) if result.content else ""  # type: ignore[union-attr]


@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
async def test_a_root_one_principal_declared_never_reaches_another_principal(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs", handshake_only=True)  # a server with sessions, that keeps a client's roots in it
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), TWO_KEYS) as (url, _),
    ):
        async with mcp_client(f"{url}/mcp", list_roots_callback=private_root) as alice:
            assert _text(await alice.call_tool("docs__remember_roots", {})) == "remembered"
            assert _text(await alice.call_tool("docs__stored_roots", {})) == "file:///home/alice/private"
        async with mcp_client(f"{url}/mcp", mode=client_mode, key=SECOND_KEY) as bob:  # declares no roots
            seen = _text(await bob.call_tool("docs__stored_roots", {}))
    assert "alice" not in seen and seen == ""


async def test_an_upstream_session_declares_only_the_input_capabilities_its_callers_can_answer(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs", handshake_only=True)
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), TWO_KEYS) as (url, _),
    ):
        async with mcp_client(f"{url}/mcp", list_roots_callback=private_root) as alice:
            with_roots = (await alice.call_tool("docs__declared", {})).structured_content
        async with mcp_client(f"{url}/mcp", key=SECOND_KEY) as bob:
            nothing = (await bob.call_tool("docs__declared", {})).structured_content
    assert with_roots is not None and nothing is not None
    # roots without listChanged: the gateway does not relay a caller's root changes
    assert with_roots == {"roots": {}}
    assert nothing == {}


@pytest.mark.parametrize("scope", [{}, {"session_scope": "shared"}], ids=["principal", "shared"])
async def test_a_question_about_no_callers_request_gets_an_answer_with_nobodys_data(
    tmp_path: Path, scope: dict[str, str]
) -> None:
    docs = Upstream("docs", handshake_only=True)
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up, **scope))) as (url, _),
    ):
        async with mcp_client(f"{url}/mcp", list_roots_callback=private_root) as alice:
            assert _text(await alice.call_tool("docs__roots_later", {})) == "asked later"
            docs.gate.set()  # the server asks now: no request of any caller is in flight
            with anyio.fail_after(10):
                await docs.unasked_done.wait()
    assert docs.unasked == [{"roots": []}]


async def test_shared_scope_keeps_one_upstream_session_for_every_principal(tmp_path: Path) -> None:
    docs = Upstream("docs", handshake_only=True)
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up, session_scope="shared")), TWO_KEYS) as (url, gw),
    ):
        async with mcp_client(f"{url}/mcp", list_roots_callback=private_root) as alice:
            await alice.call_tool("docs__remember_roots", {})
        async with mcp_client(f"{url}/mcp", key=SECOND_KEY) as bob:
            seen = _text(await bob.call_tool("docs__stored_roots", {}))
        status = gw.mcp.status()["docs"]
    assert (
        seen == "file:///home/alice/private"
    )  # what `shared` means: only for servers that keep no such state
    assert status["principal_sessions"] == 0


@pytest.mark.parametrize(("scope", "same"), [("principal", False), ("shared", True)])
async def test_a_stdio_server_runs_one_process_per_principal_unless_shared(
    tmp_path: Path, scope: str, same: bool
) -> None:
    entry = {
        "name": "local",
        "transport": "stdio",
        "command": [sys.executable, str(STDIO_SERVER)],
        "timeout_s": 30,
        "session_scope": scope,
    }
    async with gateway(tmp_path, registry(entry), TWO_KEYS) as (url, gw):
        async with mcp_client(f"{url}/mcp") as alice, mcp_client(f"{url}/mcp", key=SECOND_KEY) as bob:
            pids = [
                (await alice.call_tool("local__pid", {})).structured_content,
                (await alice.call_tool("local__pid", {})).structured_content,
                (await bob.call_tool("local__pid", {})).structured_content,
            ]
        status = gw.mcp.status()["local"]
    assert pids[0] == pids[1]  # a principal keeps its process
    assert (pids[0] == pids[2]) is same
    assert status["principal_sessions"] == (0 if same else 2)


async def test_at_the_session_limit_the_least_recently_used_idle_session_makes_room(tmp_path: Path) -> None:
    docs = Upstream("docs", handshake_only=True)
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up, max_sessions=1)), TWO_KEYS) as (url, gw),
    ):
        async with mcp_client(f"{url}/mcp", list_roots_callback=private_root) as alice:
            await alice.call_tool("docs__remember_roots", {})
            async with mcp_client(f"{url}/mcp", key=SECOND_KEY) as bob:
                bobs = _text(await bob.call_tool("docs__stored_roots", {}))
            again = _text(await alice.call_tool("docs__stored_roots", {}))
        sessions = gw.mcp.upstreams.by_name["docs"].sessions
        open_now, opened = len(sessions), sessions.opened
    assert bobs == ""
    assert again == ""  # alice's session was closed for bob's; her next call opened a fresh one
    assert (open_now, opened) == (1, 3)


async def test_a_principals_session_the_upstream_ended_is_reopened_without_the_caller_noticing(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs", handshake_only=True)
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, gw):
        async with mcp_client(f"{url}/mcp") as client:
            await client.call_tool("docs__echo", {"text": "one"})
            call = next(h for h in reversed(docs.headers) if h.get("x-agentgw-task"))  # the call's session
            async with httpx.AsyncClient() as http:  # the upstream forgets it (a restart would too)
                ended = await http.delete(
                    f"{up}/mcp",
                    headers={"mcp-session-id": call["mcp-session-id"], "mcp-protocol-version": "2025-11-25"},
                )
            result = await client.call_tool("docs__echo", {"text": "two"})
            opened = gw.mcp.upstreams.by_name["docs"].sessions.opened
    assert ended.status_code == 200
    assert result.structured_content == {"result": "two"}
    assert opened == 2


async def test_a_principals_stdio_process_that_dies_is_replaced_on_its_next_call(tmp_path: Path) -> None:
    entry = {"name": "local", "transport": "stdio", "command": [sys.executable, str(STDIO_SERVER)]}
    async with gateway(tmp_path, registry({**entry, "timeout_s": 30})) as (url, _):
        async with mcp_client(f"{url}/mcp") as client:
            first = (await client.call_tool("local__pid", {})).structured_content
            with pytest.raises(MCPError) as err:
                await client.call_tool("local__crash", {})
            second = (await client.call_tool("local__pid", {})).structured_content
    assert err.value.code == -32013
    assert first != second


async def test_a_principals_unused_session_is_closed_and_the_next_call_opens_another(tmp_path: Path) -> None:
    docs = Upstream("docs", handshake_only=True)
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up, session_idle_timeout_s=0.05))) as (url, gw),
        mcp_client(f"{url}/mcp") as client,
    ):
        sessions = gw.mcp.upstreams.by_name["docs"].sessions
        await client.call_tool("docs__echo", {"text": "one"})
        with anyio.fail_after(10):
            for live in list(sessions._sessions.values()):  # (none left if it already went)
                assert live.conn is not None
                await live.conn.closed.wait()  # closed by its owner once unused for the idle timeout
        assert len(sessions) == 0
        again = await client.call_tool("docs__echo", {"text": "two"})
        opened = sessions.opened
    assert again.structured_content == {"result": "two"}
    assert opened == 2


def test_each_kind_of_question_with_nobody_to_ask_gets_an_answer_that_carries_no_callers_data() -> None:
    assert unasked("roots/list") == {"roots": []}
    assert unasked("elicitation/create") == {"action": "cancel"}
    with pytest.raises(MCPError):  # a made-up completion would be data of a kind: refused
        unasked("sampling/createMessage")
