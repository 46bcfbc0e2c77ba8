"""Upstream sessions scoped to one caller principal (registry `session_scope: principal`, the default): what a
server keeps per session (roots it was told, elicited answers, anything it stores) stays with the principal whose
requests put it there. Each session is opened on first use, shared by that principal's requests, closed when
unused, and bounded in number per server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import orjson

from agentgw.mcp.errors import ServerUnavailable
from agentgw.mcp.upstream.watching import describe
from agentgw.mcp.upstream.wire import Connection

log = logging.getLogger("agentgw.mcp")

Key = tuple[str, bytes]  # (principal digest, the input capabilities its session declares, canonical JSON)
Open = Callable[
    [AsyncExitStack, dict[str, Any]], Awaitable[Connection]
]  # open a session declaring these caps


def declared_caps(caps: dict[str, Any] | None) -> dict[str, Any]:
    """The client capabilities a principal's upstream session declares: the input capabilities its callers
    declared, and nothing the gateway cannot honour (it relays no `notifications/roots/list_changed`)."""
    if not caps:
        return {}
    out = dict(caps)
    roots = out.get("roots")
    if isinstance(roots, dict) and "listChanged" in roots:
        out["roots"] = {k: v for k, v in roots.items() if k != "listChanged"}
    return out


class _Scoped:
    """One principal's session with one upstream (for one set of declared capabilities)."""

    __slots__ = ("conn", "error", "gone", "in_flight", "key", "last_used", "opened")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.conn: Connection | None = None
        self.opened = asyncio.Event()  # set once the session is open, or opening failed
        self.error = ""
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.gone = False  # closed (idle, evicted, lost) or never opened: the next request opens a new one


class ScopedSessions:
    """Decides which upstream session a caller's request uses under `session_scope: principal`: its principal's
    (keyed also by the input capabilities it declared, so the server is told only what the callers of that
    session can answer). A session is opened by its own owner task on first use, shared by the principal's
    concurrent requests, closed after `idle_s` without one, and at `max_sessions` the least recently used idle
    session is closed to make room. Fails with ServerUnavailable (-32013) when opening fails, or when every one
    of `max_sessions` sessions has a request in flight."""

    def __init__(
        self, server: str, max_sessions: int, idle_s: float, open_timeout_s: float, opener: Open
    ) -> None:
        self.server = server
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self.open_timeout_s = open_timeout_s
        self._open = opener
        self._sessions: dict[Key, _Scoped] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self.opened = 0  # sessions opened so far (status, tests)

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg

    def __len__(self) -> int:
        return len(self._sessions)

    @contextlib.asynccontextmanager
    async def use(self, principal: str, caps: dict[str, Any]) -> AsyncIterator[Connection]:
        """The principal's live session for the duration of one request (it is not closed while in use)."""
        key = (principal, orjson.dumps(caps, option=orjson.OPT_SORT_KEYS))
        entry = self._sessions.get(key)
        if entry is not None and entry.conn is not None and entry.conn.closed.is_set():
            self._forget(entry)  # ended (the server forgot it, the process died); its owner is winding down
        if entry is None or entry.gone:
            entry = self._spawn(key, caps)
        entry.in_flight += 1
        try:
            if not entry.opened.is_set():
                try:
                    with anyio.fail_after(self.open_timeout_s):
                        await entry.opened.wait()
                except TimeoutError:
                    raise self._unavailable("opening a session timed out") from None
            conn = entry.conn
            if conn is None or conn.closed.is_set():
                raise self._unavailable(entry.error or "its session closed")
            yield conn
        finally:
            entry.in_flight -= 1
            entry.last_used = time.monotonic()

    def _unavailable(self, why: str) -> ServerUnavailable:
        log.info("MCP server %r: no session for a caller (%s)", self.server, why)
        return ServerUnavailable(f"MCP server '{self.server}' is unavailable; try again later.")

    def _spawn(self, key: Key, caps: dict[str, Any]) -> _Scoped:
        if self._tg is None:
            raise self._unavailable("the MCP plane is not running")
        if len(self._sessions) >= self.max_sessions and not self._evict():
            log.warning(
                "MCP server %r: all %d upstream sessions are busy; refusing a new principal's call",
                self.server,
                self.max_sessions,
            )
            raise ServerUnavailable(
                f"MCP server '{self.server}' has too many sessions open ({self.max_sessions}); try again later."
            )
        entry = self._sessions[key] = _Scoped(key)
        self._tg.start_soon(self._own, entry, caps, name=f"mcp-upstream-{self.server}-scoped")
        return entry

    def _evict(self) -> bool:
        """Close the least recently used session with nothing in flight; False if every session is busy."""
        idle = [e for e in self._sessions.values() if e.in_flight == 0 and e.opened.is_set()]
        if not idle:
            return False
        victim = min(idle, key=lambda e: e.last_used)
        self._forget(victim)
        if victim.conn is not None:
            victim.conn.close("evicted: the server's session limit was reached")
        return True

    def _forget(self, entry: _Scoped) -> None:
        entry.gone = True
        if self._sessions.get(entry.key) is entry:
            del self._sessions[entry.key]

    async def _own(self, entry: _Scoped, caps: dict[str, Any]) -> None:
        """Open the session, keep it while it is used, close it once idle (or when it ends by itself)."""
        try:
            async with AsyncExitStack() as stack:
                conn = await self._open(stack, caps)
                self.opened += 1
                entry.conn = conn
                entry.opened.set()
                while not conn.closed.is_set():
                    left = entry.last_used + self.idle_s - time.monotonic()
                    if entry.in_flight == 0 and left <= 0:
                        conn.close("idle")
                        break
                    with anyio.move_on_after(left if entry.in_flight == 0 else self.idle_s):
                        await conn.closed.wait()
                self._forget(entry)  # no new request picks it up while it closes
        except Exception as exc:
            entry.error = describe(exc)
        finally:
            self._forget(entry)
            entry.opened.set()
