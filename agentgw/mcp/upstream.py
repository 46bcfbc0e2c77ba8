"""Upstream MCP servers: one long-lived client connection per registry entry (a stdio process the gateway launches,
Streamable HTTP in either era, or legacy SSE), its era, its restarts, and raw JSON-RPC requests stamped for it;
requests and results are plain dicts (the SDK's dispatcher, no result models on the hot path)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import httpx2
import mcp.types as types
from mcp.client.session import ClientSession, IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen
from mcp.shared.dispatcher import CallOptions, OnNotify, OnNotifyIntercept, OnRequest, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged, ToolsListChanged
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    CONNECTION_CLOSED,
    PROTOCOL_VERSION_META_KEY,
    REQUEST_TIMEOUT,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from agentgw.errors import GatewayError, UpstreamTimeout
from agentgw.mcp.errors import ServerUnavailable, UpstreamRPCError
from agentgw.registry import MCPServer
from agentgw.supervisor import local_command

log = logging.getLogger("agentgw.mcp")

try:
    _VERSION = importlib.metadata.version("agentgw")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0"
CLIENT_INFO = types.Implementation(name="agentgw", version=_VERSION)

Era = Literal["modern", "handshake"]
OnChange = Callable[[str, str | None], None]  # (server, kind or None for "everything may have changed")
ParamMap = Mapping[tuple[str, ...], str]  # x-mcp-header argument path → header name, for Mcp-Param-* headers


class _Dispatcher(JSONRPCDispatcher[TransportContext]):
    """The SDK's JSON-RPC dispatcher, plus a signal when its receive loop ends (the process exited, the
    stream closed): that is how a dead stdio server or a dropped connection is noticed between requests."""

    def __init__(self, read: Any, write: Any, on_end: Callable[[], None]) -> None:
        super().__init__(read, write)
        self._on_end = on_end

    async def run(
        self,
        on_request: OnRequest,
        on_notify: OnNotify,
        on_notify_intercept: OnNotifyIntercept | None = None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await super().run(on_request, on_notify, on_notify_intercept, task_status=task_status)
        finally:
            self._on_end()


@dataclass(eq=False)
class Connection:
    """One live session with an upstream: how to stamp requests for its era, and whether it has ended."""

    dispatcher: _Dispatcher
    version: str
    kinds: frozenset[str]  # listings the server offers: tools, prompts, resources
    headers_reach_upstream: bool  # per-request HTTP headers (task, traceparent) are delivered
    envelope: dict[str, Any] = field(default_factory=dict)  # the 2026-07-28 per-request `_meta` stamp
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    expired: bool = False  # the server forgot our session (HTTP 404): re-initialize at once, retry the call

    @property
    def modern(self) -> bool:
        return self.version in MODERN_PROTOCOL_VERSIONS

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.reason = reason
            self.closed.set()

    def stamp(
        self,
        method: str,
        params: dict[str, Any],
        headers: dict[str, str] | None,
        param_map: ParamMap | None,
    ) -> tuple[dict[str, Any], CallOptions]:
        """Params and per-request HTTP headers for this era: the handshake era needs only the negotiated version;
        2026-07-28 needs the `_meta` envelope and the routing headers, recomputed for the upstream's names."""
        out: dict[str, str] = {MCP_PROTOCOL_VERSION_HEADER: self.version}
        if headers and self.headers_reach_upstream:
            out.update(headers)
        if self.modern:
            params = {**params, "_meta": {**(params.get("_meta") or {}), **self.envelope}}
            out[MCP_METHOD_HEADER] = method
            key = NAME_BEARING_METHODS.get(method)
            value = params.get(key) if key else None
            if isinstance(value, str):
                out[MCP_NAME_HEADER] = encode_header_value(value)
            if param_map and method == "tools/call":
                out.update(mcp_param_headers(param_map, params.get("arguments") or {}))
        return params, {"headers": out}


def _kinds(caps: types.ServerCapabilities | None) -> frozenset[str]:
    if caps is None:
        return frozenset()
    out = set()
    if caps.tools is not None:
        out.add("tools")
    if caps.prompts is not None:
        out.add("prompts")
    if caps.resources is not None:
        out.add("resources")
    return frozenset(out)


def _describe(exc: BaseException) -> str:
    """A one-line cause for logs: the first leaf of an exception group, type and message."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class Upstream:
    """One registry MCP server, as the gateway's client.

    Decides which era the server speaks (a `server/discover` probe, else the `initialize` handshake; remembered),
    and when to (re)connect: eagerly at start, again with exponential backoff after any failure; a stdio server is
    relaunched, an expired HTTP session re-initialized at once. Handshake-era sessions are shared by every call.
    Fails with ServerUnavailable while it cannot connect (fast, during backoff), UpstreamTimeout after `timeout_s`,
    and UpstreamRPCError when the server answers with a JSON-RPC error.
    """

    MIN_BACKOFF_S = 0.1
    MAX_BACKOFF_S = 30.0
    STABLE_S = 30.0  # a connection that lived this long resets the backoff

    def __init__(self, spec: MCPServer, cwd: Path, on_change: OnChange) -> None:
        self.spec = spec
        self.name = spec.name
        self.cwd = cwd
        self.on_change = on_change
        self.era: Era | None = "handshake" if spec.transport == "sse" else None
        self.state: Literal["idle", "connecting", "ready", "down"] = "idle"
        self.last_error: str | None = None
        self.connects = 0
        self._conn: Connection | None = None
        self._changed = asyncio.Event()

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
                    await conn.closed.wait()
                    reason, expired = conn.reason, conn.expired
            except Exception as exc:
                reason = _describe(exc)
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

    async def _open(self, stack: AsyncExitStack) -> Connection:
        spec = self.spec
        box: list[
            Connection
        ] = []  # the hooks below fire for the connection built at the end of this function

        def ended() -> None:
            if box:
                box[0].close("the connection closed")

        if spec.transport == "stdio":
            command = local_command(spec.command or [])
            params = StdioServerParameters(
                command=command[0], args=command[1:], env=dict(spec.env) or None, cwd=str(self.cwd)
            )
            read, write = await stack.enter_async_context(stdio_client(params))
            http = False
        elif spec.transport == "sse":
            assert spec.url is not None
            read, write = await stack.enter_async_context(
                sse_client(
                    spec.url, headers=dict(spec.headers), timeout=spec.timeout_s, sse_read_timeout=3600
                )
            )
            http = False  # the legacy SSE transport sends headers per connection, not per request
        else:
            assert spec.url is not None

            async def on_response(response: httpx2.Response) -> None:
                # 404 on a request that carried our session id: the server forgot the session (restart, expiry).
                if response.status_code == 404 and "mcp-session-id" in response.request.headers and box:
                    box[0].expired = True
                    box[0].close("session expired")

            # Upstream credentials come only from the registry; nothing of the caller's request is copied here.
            client = httpx2.AsyncClient(
                headers=dict(spec.headers),
                timeout=httpx2.Timeout(
                    spec.timeout_s, read=None
                ),  # per-request deadlines are the dispatcher's
                event_hooks={"response": [on_response]},
            )
            await stack.enter_async_context(client)
            read, write = await stack.enter_async_context(
                streamable_http_client(spec.url, http_client=client)
            )
            http = True
        dispatcher = _Dispatcher(read, write, ended)
        session = ClientSession(
            dispatcher=dispatcher,
            read_timeout_seconds=spec.timeout_s,
            message_handler=self._on_message,
            client_info=CLIENT_INFO,
        )
        await stack.enter_async_context(session)
        await self._negotiate(session)
        version = session.protocol_version or ""
        conn = Connection(dispatcher, version, _kinds(session.server_capabilities), http)
        if conn.modern:
            conn.envelope = {
                PROTOCOL_VERSION_META_KEY: version,
                CLIENT_INFO_META_KEY: CLIENT_INFO.model_dump(by_alias=True, mode="json", exclude_none=True),
                CLIENT_CAPABILITIES_META_KEY: {},  # no sampling/elicitation/roots: nothing to relay them to yet
            }
            caps = session.server_capabilities
            watch = {
                "tools": bool(caps and caps.tools and caps.tools.list_changed),
                "prompts": bool(caps and caps.prompts and caps.prompts.list_changed),
                "resources": bool(caps and caps.resources and caps.resources.list_changed),
            }
            if any(watch.values()):
                tg = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(tg.cancel_scope.cancel)  # runs before the group is awaited on the way out
                await tg.start(self._listen, session, watch)  # subscribed before we report ready
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
        if isinstance(message, types.ToolListChangedNotification):
            self.on_change(self.name, "tools")
        elif isinstance(message, types.PromptListChangedNotification):
            self.on_change(self.name, "prompts")
        elif isinstance(message, types.ResourceListChangedNotification):
            self.on_change(self.name, "resources")

    async def _listen(
        self,
        session: ClientSession,
        watch: dict[str, bool],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """2026-07-28 servers announce list changes only on a `subscriptions/listen` stream. Without one (refused,
        or lost later) listings still expire by their ttlMs."""
        started = False
        try:
            async with listen(
                session,
                tools_list_changed=watch["tools"],
                prompts_list_changed=watch["prompts"],
                resources_list_changed=watch["resources"],
            ) as sub:
                task_status.started()
                started = True
                async for event in sub:
                    if isinstance(event, ToolsListChanged):
                        self.on_change(self.name, "tools")
                    elif isinstance(event, PromptsListChanged):
                        self.on_change(self.name, "prompts")
                    elif isinstance(event, ResourcesListChanged):
                        self.on_change(self.name, "resources")
        except Exception as exc:
            log.info("MCP server %r: no list-change subscription (%s)", self.name, _describe(exc))
            if not started:
                task_status.started()

    # -- requests ---------------------------------------------------------------------------------------------

    async def connection(self) -> Connection:
        """The live connection, waiting (up to `timeout_s`) while one is being opened; fails fast while the
        server is down and backing off."""
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

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        on_progress: ProgressFnT | None = None,
        param_map: ParamMap | None = None,
        idempotent: bool = False,
    ) -> dict[str, Any]:
        """Send one request and return its raw result. A request the server never processed (its session had
        expired) is retried once on a fresh session; an idempotent one also after a lost connection."""
        for attempt in (1, 2):
            conn = await self.connection()
            out, opts = conn.stamp(method, params, headers, param_map)
            opts["timeout"] = self.spec.timeout_s
            if on_progress is not None:
                opts["on_progress"] = on_progress
            try:
                return await conn.dispatcher.send_raw_request(method, out, opts)
            except MCPError as err:
                if attempt == 1 and (conn.expired or (idempotent and err.code == CONNECTION_CLOSED)):
                    continue
                raise self._gateway_error(method, err) from None
        raise AssertionError("unreachable")

    def _gateway_error(self, method: str, err: MCPError) -> GatewayError:
        if err.code == REQUEST_TIMEOUT:
            return UpstreamTimeout(
                f"MCP server '{self.name}' did not answer {method} within {self.spec.timeout_s:g}s."
            )
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
        }


class Upstreams:
    """Every registry MCP server, each run by its own owner task in one task group."""

    def __init__(
        self, servers: list[MCPServer], cwd_of: Callable[[MCPServer], Path], on_change: OnChange
    ) -> None:
        self.by_name = {s.name: Upstream(s, cwd_of(s), on_change) for s in servers}

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        for up in self.by_name.values():
            tg.start_soon(up.run, name=f"mcp-upstream-{up.name}")

    def get(self, name: str) -> Upstream | None:
        return self.by_name.get(name)

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: up.status() for name, up in self.by_name.items()}
