"""Upstream MCP servers: one long-lived client connection per registry entry (a stdio process the gateway launches,
Streamable HTTP in either era, or legacy SSE), its era, its restarts, its resource subscriptions, the sessions of
each caller principal (scoped.py), and raw JSON-RPC requests stamped for it; requests and results are plain dicts
(the SDK's dispatcher, no result models on the hot path)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal

import aiohttp
import anyio
import anyio.abc
import mcp.types as types
from mcp.client.session import ClientSession, IncomingMessage
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    CONNECTION_CLOSED,
    PROTOCOL_VERSION_META_KEY,
    REQUEST_TIMEOUT,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from pydantic import ValidationError

from agentgw.errors import GatewayError, UpstreamInvalidResponse, UpstreamTimeout
from agentgw.exchange import Principal
from agentgw.mcp.bridges.state import Binding
from agentgw.mcp.errors import ServerUnavailable, UpstreamRPCError
from agentgw.mcp.upstream.inflight import Deadline, Pausing, Relay, Router, log_rank
from agentgw.mcp.upstream.leg import HttpLeg, InvalidAnswer, SessionExpired
from agentgw.mcp.upstream.scoped import ScopedSessions, declared_caps
from agentgw.mcp.upstream.watching import OnChange, OnUpdated, Watching, describe
from agentgw.mcp.upstream.wire import Connection, Dispatcher, ParamMap, open_transport
from agentgw.registry import MCPServer

log = logging.getLogger("agentgw.mcp")

try:
    _VERSION = importlib.metadata.version("agentgw")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0"
CLIENT_INFO = types.Implementation(name="agentgw", version=_VERSION)

Era = Literal["modern", "handshake"]
HttpSession = Callable[[], aiohttp.ClientSession]  # the process's pooled upstream session
LISTEN_WAIT_S = 5.0  # at most this long for a new handshake-era session's GET stream to open
# What a shared session declares: the gateway relays each of these to the caller whose request it is about, and
# refuses it for a caller that did not declare it (no `roots.listChanged`: callers' root changes are not relayed).
SHARED_CAPS: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}}

__all__ = ["CLIENT_INFO", "ParamMap", "Upstream", "Upstreams"]


class Upstream(Watching):
    """One registry MCP server, as the gateway's client.

    Decides which era the server speaks (a `server/discover` probe, else the `initialize` handshake; remembered),
    and when to (re)connect: eagerly at start, again with exponential backoff after any failure; a stdio server is
    relaunched, an expired HTTP session re-initialized at once. Which session a caller's request uses: with
    `session_scope: principal`, its principal's own (a handshake-era session, or a stdio process, see scoped.py);
    a 2026-07-28 HTTP server has no sessions, so there, and with `shared`, the one connection. That connection is
    also the gateway's own (listings, change notifications, resource subscriptions). Fails with ServerUnavailable
    while it cannot connect (fast, during backoff), UpstreamTimeout after `timeout_s`, and UpstreamRPCError when
    the server answers with a JSON-RPC error.
    """

    MIN_BACKOFF_S = 0.1
    MAX_BACKOFF_S = 30.0
    STABLE_S = 30.0  # a connection that lived this long resets the backoff

    def __init__(
        self,
        spec: MCPServer,
        cwd: Path,
        on_change: OnChange,
        on_updated: OnUpdated,
        http: HttpSession | None = None,
    ) -> None:
        self.spec = spec
        self.http = http
        self.name = spec.name
        self.cwd = cwd
        self.on_change = on_change
        self.on_updated = on_updated
        self.era: Era | None = "handshake" if spec.transport == "sse" else None
        self.state: Literal["idle", "connecting", "ready", "down"] = "idle"
        self.last_error: str | None = None
        self.connects = 0
        self._conn: Connection | None = None
        self._changed = asyncio.Event()
        self.sessions = ScopedSessions(
            spec.name, spec.max_sessions, spec.session_idle_timeout_s, spec.timeout_s, self._open_scoped
        )
        Watching.__init__(self)

    # -- lifecycle --------------------------------------------------------------------------------------------

    def _set_state(self, state: Literal["idle", "connecting", "ready", "down"]) -> None:
        self.state = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def run(self) -> None:
        """Own the connection until cancelled: connect, wait for it to end, back off, reconnect."""
        backoff = self.MIN_BACKOFF_S
        outage = False
        while True:
            self._set_state("connecting")
            opened = time.monotonic()
            expired = False
            try:
                async with AsyncExitStack() as stack:
                    conn = await self._open(stack)
                    self._conn = conn
                    self.connects += 1
                    self.last_error = None
                    self._set_state("ready")
                    log.info("MCP server %r connected (%s, %s)", self.name, self.spec.transport, conn.version)
                    outage = False
                    self.on_change(self.name, None)  # a (re)connected server may offer a different catalog
                    if self.connects > 1:  # and callers should hear of it
                        for kind in ("tools", "prompts", "resources"):
                            self.on_change(self.name, kind)
                    await conn.closed.wait()
                    reason, expired = conn.reason, conn.expired
            except Exception as exc:
                reason = describe(exc)
            finally:
                self._conn = None
            if expired:
                log.info("MCP server %r ended our session; re-initializing", self.name)
                backoff = self.MIN_BACKOFF_S
                continue
            if time.monotonic() - opened > self.STABLE_S:
                backoff = self.MIN_BACKOFF_S
            self.last_error = reason
            self._set_state("down")
            # One warning per outage (and again whenever the retry interval tops out); retries in between are debug.
            level = logging.WARNING if not outage or backoff >= self.MAX_BACKOFF_S else logging.DEBUG
            log.log(level, "MCP server %r is unavailable (%s); retrying in %.1fs", self.name, reason, backoff)
            outage = True
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self.MAX_BACKOFF_S)

    async def _open_scoped(self, stack: AsyncExitStack, caps: dict[str, Any]) -> Connection:
        return await self._open(stack, caps, own=False)

    async def _open(
        self, stack: AsyncExitStack, caps: dict[str, Any] | None = None, own: bool = True
    ) -> Connection:
        """A new session, declaring `caps` (default: everything relayable if shared, else nothing). `own` is the
        gateway's own connection, which also watches for changes; a principal's session only serves requests."""
        box: list[Connection] = []  # the hooks fire for the connection built at the end of this function

        def ended() -> None:
            if box:
                box[0].close("the connection closed")

        def expired() -> None:
            if box:
                box[0].expired = True
                box[0].close("session expired")

        opened = await open_transport(self.spec, self.cwd, stack, expired)
        dispatcher = Dispatcher(opened.read, opened.write, ended, Router(correlated=opened.http))
        # What a handshake-era session declares (the dispatcher relays the server's requests to the caller they are
        # about); 2026-07-28 requests declare the caller's own, per request.
        if caps is None:
            caps = SHARED_CAPS if self.spec.session_scope == "shared" else {}
        session = _Declaring(
            caps,
            dispatcher=dispatcher,
            read_timeout_seconds=self.spec.timeout_s,
            message_handler=self._on_message,  # a change announced on any session is the server's
            client_info=CLIENT_INFO,
        )
        await stack.enter_async_context(session)
        await self._negotiate(session)
        version = session.protocol_version or ""
        if opened.listening is not None and self.era == "handshake":
            # What the server sends outside a request (list changes, updates) goes on the session's GET stream:
            # a session is ready once that is open, so nothing sent right after the first call is lost.
            with anyio.move_on_after(min(self.spec.timeout_s, LISTEN_WAIT_S)):
                await opened.listening.wait()
        conn = Connection(dispatcher, version, session.server_capabilities, opened.http)
        if self.http is not None and opened.session_id is not None and self.spec.url is not None:
            conn.leg = HttpLeg(str(self.spec.url), dict(self.spec.headers), self.http, opened.session_id)
        if conn.modern:
            conn.envelope = {
                PROTOCOL_VERSION_META_KEY: version,
                CLIENT_INFO_META_KEY: CLIENT_INFO.model_dump(by_alias=True, mode="json", exclude_none=True),
                CLIENT_CAPABILITIES_META_KEY: {},  # replaced per request by what the caller declared
            }
        if not own:
            box.append(conn)
            return conn
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)  # runs before the group is awaited on the way out
        if conn.modern:
            offers = session.server_capabilities
            watch = {
                "tools": bool(offers and offers.tools and offers.tools.list_changed),
                "prompts": bool(offers and offers.prompts and offers.prompts.list_changed),
                "resources": bool(offers and offers.resources and offers.resources.list_changed),
            }
            if any(watch.values()):
                await tg.start(self._listen, session, watch)  # subscribed before we report ready
            tg.start_soon(self._listen_resources, session)
        elif self._watched:
            tg.start_soon(self._resubscribe, conn)
        box.append(conn)
        return conn

    async def _negotiate(self, session: ClientSession) -> None:
        """The era, remembered after the first success: discover (modern) first, else the handshake."""
        if self.era == "handshake":
            try:
                await session.initialize()
                return
            except MCPError as err:
                if self.spec.transport == "sse" or err.code != UNSUPPORTED_PROTOCOL_VERSION:
                    raise
        try:
            await session.discover()
            self.era = "modern"
        except (MCPError, RuntimeError, ValidationError):
            await session.initialize()
            self.era = "handshake"

    async def _on_message(self, message: IncomingMessage) -> None:
        """Handshake-era change notifications (GET stream). A 2026-07-28 server's arrive on our listen streams,
        which the session also tees here: those are handled by `_listen` / `_listen_resources` alone."""
        if self.era == "modern":
            return
        if isinstance(message, types.ToolListChangedNotification):
            self.on_change(self.name, "tools")
        elif isinstance(message, types.PromptListChangedNotification):
            self.on_change(self.name, "prompts")
        elif isinstance(message, types.ResourceListChangedNotification):
            self.on_change(self.name, "resources")
        elif isinstance(message, types.ResourceUpdatedNotification):
            self.on_updated(self.name, str(message.params.uri))

    # -- requests ---------------------------------------------------------------------------------------------

    async def connection(self) -> Connection:
        """The live connection, waiting (up to `timeout_s`) while one is being opened; fails fast while the
        server is down and backing off."""
        conn = self._conn
        if conn is not None and not conn.closed.is_set():
            return conn  # the common case, without a cancel scope (each costs syscalls on the hot path)
        try:
            with anyio.fail_after(self.spec.timeout_s):
                while True:
                    conn = self._conn
                    if conn is not None and not conn.closed.is_set():
                        return conn
                    if self.state == "down":
                        break
                    await self._changed.wait()
        except TimeoutError:
            pass
        raise ServerUnavailable(f"MCP server '{self.name}' is unavailable; try again later.")

    async def wait_connected(self, connects: int = 1) -> None:
        """Wait until the `connects`-th connection is open (for tests and readiness; no timeout of its own)."""
        while self.connects < connects or self._conn is None or self._conn.closed.is_set():
            await self._changed.wait()

    async def kinds(self) -> frozenset[str]:
        return (await self.connection()).kinds

    async def capabilities(self) -> types.ServerCapabilities | None:
        return (await self.connection()).caps

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        on_progress: ProgressFnT | None = None,
        param_map: ParamMap | None = None,
        idempotent: bool = False,
        relay: Relay | None = None,
        caps: dict[str, Any] | None = None,
        log_level: str | None = None,
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        """Send one request and return its raw result. A request the server never processed (its session had
        expired) is retried once on a fresh session; an idempotent one also after a lost connection.

        `relay` receives the log messages and server-to-client requests the server sends about this request;
        `caps` are the client capabilities declared for it (2026-07-28 servers get them with the request; a
        principal's handshake-era session declares them when it opens); `log_level` the least severe level the
        caller wants relayed; `principal` the caller (None: the gateway's own request, on its own connection)."""
        for attempt in (1, 2):
            conn = await self.connection()
            args = (method, params, headers, param_map, caps, log_level, on_progress, relay)
            try:
                if principal is None or not self._scoped(conn):
                    return await self._send(conn, *args)
                own = declared_caps(caps) if not conn.modern else {}
                async with self.sessions.use(Binding.principal_of(principal), own) as conn:
                    return await self._send(conn, *args)
            except MCPError as err:
                if attempt == 1 and (conn.expired or (idempotent and err.code == CONNECTION_CLOSED)):
                    continue
                raise self._gateway_error(method, err) from None
        raise AssertionError("unreachable")

    def _scoped(self, conn: Connection) -> bool:
        """Does a caller's request use its principal's own session? Under `session_scope: principal`, on a
        handshake-era server (its session keeps state) and on a stdio server (the process is the session)."""
        return self.spec.session_scope == "principal" and (self.spec.transport == "stdio" or not conn.modern)

    async def _send(
        self,
        conn: Connection,
        method: str,
        params: dict[str, Any],
        headers: dict[str, str] | None,
        param_map: ParamMap | None,
        caps: dict[str, Any] | None,
        log_level: str | None,
        on_progress: ProgressFnT | None,
        relay: Relay | None,
    ) -> dict[str, Any]:
        if log_level is not None and not conn.modern:
            await self._raise_log_level(conn, log_level)
        out, opts = conn.stamp(method, params, headers, param_map, caps, log_level)
        if conn.leg is not None:
            return await self._via_leg(conn, conn.leg, method, out, opts, on_progress, relay)
        if on_progress is not None:
            opts["on_progress"] = on_progress
        if relay is None:
            opts["timeout"] = self.spec.timeout_s
            return await conn.dispatcher.send_raw_request(method, out, opts)
        deadline = Deadline(self.spec.timeout_s)
        with conn.dispatcher.router.open(Pausing(relay, deadline)) as rid, deadline.scope:
            opts["request_id"] = rid
            return await conn.dispatcher.send_raw_request(method, out, opts)
        raise self._timed_out(method)

    async def _via_leg(
        self,
        conn: Connection,
        leg: HttpLeg,
        method: str,
        params: dict[str, Any],
        opts: CallOptions,
        on_progress: ProgressFnT | None,
        relay: Relay | None,
    ) -> dict[str, Any]:
        deadline = Deadline(self.spec.timeout_s)
        try:
            with deadline.scope:
                return await leg.request(
                    method,
                    params,
                    opts.get("headers") or {},
                    on_progress=on_progress,
                    relay=Pausing(relay, deadline) if relay is not None else None,
                    cancel_notice=not conn.modern,
                )
        except SessionExpired:  # re-initialized by the owner task; the caller retries on the new session
            conn.expired = True
            conn.close("session expired")
            raise
        raise self._timed_out(method)

    def _timed_out(self, method: str) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"MCP server '{self.name}' did not answer {method} within {self.spec.timeout_s:g}s."
        )

    async def _raise_log_level(self, conn: Connection, level: str) -> None:
        """A handshake-era session has one log level for every caller using it: lower it (never raise it) to what
        this caller wants; the relay filters per caller."""
        rank = log_rank(level)
        if rank is None or conn.caps is None or conn.caps.logging is None:
            return
        async with conn.log_lock:
            if conn.log_rank is not None and conn.log_rank <= rank:
                return
            out, opts = conn.stamp("logging/setLevel", {"level": level}, None, None)
            opts["timeout"] = self.spec.timeout_s
            try:
                await conn.dispatcher.send_raw_request("logging/setLevel", out, opts)
                conn.log_rank = rank
            except MCPError as err:
                log.debug("MCP server %r refused logging/setLevel: %s", self.name, err.message)

    def _gateway_error(self, method: str, err: MCPError) -> GatewayError:
        if isinstance(err, InvalidAnswer):
            return UpstreamInvalidResponse(f"MCP server '{self.name}' sent an invalid response to {method}.")
        if err.code == REQUEST_TIMEOUT:
            return self._timed_out(method)
        if err.code == CONNECTION_CLOSED:
            return ServerUnavailable(f"The connection to MCP server '{self.name}' was lost.")
        return UpstreamRPCError(err.code, err.message, err.data)

    def status(self) -> dict[str, Any]:
        conn = self._conn
        return {
            "state": self.state,
            "transport": self.spec.transport,
            "era": self.era,
            "protocol_version": conn.version if conn else None,
            "restarts": max(self.connects - 1, 0),
            "error": self.last_error,
            "session_scope": self.spec.session_scope,
            "principal_sessions": len(self.sessions),
        }


class Upstreams:
    """Every registry MCP server, each run by its own owner task in one task group."""

    def __init__(
        self,
        servers: list[MCPServer],
        cwd_of: Callable[[MCPServer], Path],
        on_change: OnChange,
        on_updated: OnUpdated | None = None,
        http: HttpSession | None = None,
    ) -> None:
        updated: OnUpdated = on_updated or (lambda server, uri: None)

        def make(spec: MCPServer) -> Upstream:
            return Upstream(spec, cwd_of(spec), on_change, updated, http)

        self._make = make
        self.by_name = {s.name: self._make(s) for s in servers}
        self._tg: anyio.abc.TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        for up in self.by_name.values():
            self._launch(up)

    def _launch(self, up: Upstream) -> None:
        """Its owner task, in a cancel scope of its own, so a registry reload can stop just this upstream."""
        assert self._tg is not None
        scope = self._scopes[up.name] = anyio.CancelScope()

        async def own() -> None:
            with scope:  # its principals' sessions live in its own task group, so they end with it
                async with anyio.create_task_group() as tg:
                    up.sessions.start(tg)
                    await up.run()

        self._tg.start_soon(own, name=f"mcp-upstream-{up.name}")

    def apply(self, servers: list[MCPServer]) -> set[str]:
        """A reloaded registry: stop the upstreams removed or changed, start the new and changed ones; an
        unchanged one keeps its connection and session. Returns the names of the servers that changed."""
        new = {s.name: s for s in servers}
        touched = {name for name, up in self.by_name.items() if new.get(name) != up.spec}
        touched |= new.keys() - self.by_name.keys()
        for name in touched:
            scope = self._scopes.pop(name, None)
            if scope is not None:
                scope.cancel()  # its connection closes (a stdio process is terminated)
            self.by_name.pop(name, None)
            if name in new:
                up = self.by_name[name] = self._make(new[name])
                if self._tg is not None:
                    self._launch(up)
        return touched

    def get(self, name: str) -> Upstream | None:
        return self.by_name.get(name)

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: up.status() for name, up in self.by_name.items()}


class _Declaring(ClientSession):
    """The SDK's client session, declaring exactly the client capabilities given (the SDK derives them from which
    callbacks are set; the gateway's dispatcher answers the server's requests itself, so none are)."""

    def __init__(self, caps: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._declared = types.ClientCapabilities.model_validate(caps)

    def _build_capabilities(self, version: str) -> types.ClientCapabilities:
        return self._declared
