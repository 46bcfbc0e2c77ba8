"""The gateway's wire to one upstream MCP server: the JSON-RPC dispatcher (which routes the upstream's log messages
and server-to-client requests to the caller whose request they belong to, inflight.py), per-request stamping for
the upstream's era, and a Streamable HTTP client transport that remembers which request's stream each message
arrived on."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import mcp.types as types
from httpx2 import ServerSentEvent
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import StreamableHTTPTransport
from mcp.shared._context_streams import create_context_streams
from mcp.shared.dispatcher import CallOptions, DispatchContext, OnNotify, OnNotifyIntercept, OnRequest
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    LOG_LEVEL_META_KEY,
    JSONRPCNotification,
    JSONRPCRequest,
    RequestId,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agentgw.mcp.upstream.inflight import RELAYED_REQUESTS, Router, unasked
from agentgw.mcp.upstream.leg import HttpLeg
from agentgw.registry import MCPServer
from agentgw.supervisor import local_command

ParamMap = Mapping[tuple[str, ...], str]  # x-mcp-header argument path → header name, for Mcp-Param-* headers
# The identity headers of the request being sent (set around it by the mediator). The legacy SSE transport POSTs
# each message from its own task, but in the context of the task that sent it, so they reach that POST.
identity_headers: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "identity_headers", default=None
)


class _IdentityAuth(httpx2.Auth):
    """Adds the sending request's identity headers (per caller) to a legacy SSE message POST."""

    def auth_flow(self, request: httpx2.Request) -> Any:
        for name, value in (identity_headers.get() or {}).items():
            request.headers[name] = value
        yield request


def _related(dctx: DispatchContext[TransportContext]) -> RequestId | None:
    md = getattr(dctx, "message_metadata", None)
    return md.related_request_id if isinstance(md, ServerMessageMetadata) else None


class Dispatcher(JSONRPCDispatcher[TransportContext]):
    """The SDK's JSON-RPC dispatcher, plus: a signal when its receive loop ends (the process exited, the stream
    closed), which is how a dead stdio server or a dropped connection is noticed between requests; and routing of
    the upstream's log messages and server-to-client requests to the relay of the request they belong to
    (everything else goes to the client session as usual)."""

    def __init__(self, read: Any, write: Any, on_end: Callable[[], None], router: Router) -> None:
        super().__init__(read, write)
        self._on_end = on_end
        self.router = router

    async def run(
        self,
        on_request: OnRequest,
        on_notify: OnNotify,
        on_notify_intercept: OnNotifyIntercept | None = None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        router = self.router

        async def routed_request(
            dctx: DispatchContext[TransportContext], method: str, params: Mapping[str, Any] | None
        ) -> dict[str, Any]:
            if method not in RELAYED_REQUESTS:
                return await on_request(dctx, method, params)
            relay = router.find(_related(dctx))
            if relay is None:
                return unasked(method)
            return await relay.ask(method, dict(params or {}))

        async def routed_notify(
            dctx: DispatchContext[TransportContext], method: str, params: Mapping[str, Any] | None
        ) -> None:
            if method == "notifications/message":
                relay = router.find(_related(dctx))
                if relay is not None:
                    await relay.log(dict(params or {}))
                return  # a log message about no request of ours has no caller to go to
            await on_notify(dctx, method, params)

        try:
            await super().run(routed_request, routed_notify, on_notify_intercept, task_status=task_status)
        finally:
            self._on_end()


@dataclass(eq=False)
class Connection:
    """One live session with an upstream: how to stamp requests for its era, and whether it has ended."""

    dispatcher: Dispatcher
    version: str
    caps: types.ServerCapabilities | None
    headers_reach_upstream: bool  # per-request HTTP headers (task, traceparent) are delivered
    leg: HttpLeg | None = None  # Streamable HTTP: requests go over the pooled aiohttp leg, not the dispatcher
    envelope: dict[str, Any] = field(default_factory=dict)  # the 2026-07-28 per-request `_meta` stamp
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    expired: bool = False  # the server forgot our session (HTTP 404): re-initialize at once, retry the call
    log_rank: int | None = None  # handshake era: the level last set with logging/setLevel on this session
    log_lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def modern(self) -> bool:
        return self.version in MODERN_PROTOCOL_VERSIONS

    @property
    def kinds(self) -> frozenset[str]:
        """Listings the server offers: tools, prompts, resources."""
        caps = self.caps
        if caps is None:
            return frozenset()
        pairs = (("tools", caps.tools), ("prompts", caps.prompts), ("resources", caps.resources))
        return frozenset(name for name, cap in pairs if cap is not None)

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
        caps: dict[str, Any] | None = None,
        log_level: str | None = None,
    ) -> tuple[dict[str, Any], CallOptions]:
        """Params and per-request HTTP headers for this era: the handshake era needs only the negotiated version;
        2026-07-28 needs the `_meta` envelope (with the caller's client capabilities and log level, when given)
        and the routing headers, recomputed for the upstream's names."""
        out: dict[str, str] = {MCP_PROTOCOL_VERSION_HEADER: self.version}
        if headers and self.headers_reach_upstream:
            out.update(headers)
        if self.modern:
            meta = {**(params.get("_meta") or {}), **self.envelope}
            if caps:
                meta[CLIENT_CAPABILITIES_META_KEY] = caps
            if log_level is not None:
                meta[LOG_LEVEL_META_KEY] = log_level
            params = {**params, "_meta": meta}
            out[MCP_METHOD_HEADER] = method
            key = NAME_BEARING_METHODS.get(method)
            value = params.get(key) if key else None
            if isinstance(value, str):
                out[MCP_NAME_HEADER] = encode_header_value(value)
            if param_map and method == "tools/call":
                out.update(mcp_param_headers(param_map, params.get("arguments") or {}))
        return params, {"headers": out}


class _Tagger:
    """A read-stream writer that marks requests and notifications with the request whose stream carried them."""

    def __init__(self, inner: Any, request_id: RequestId) -> None:
        self._inner = inner
        self._md = ServerMessageMetadata(related_request_id=request_id)

    async def send(self, item: Any) -> None:
        if (
            isinstance(item, SessionMessage)
            and item.metadata is None
            and isinstance(item.message, JSONRPCRequest | JSONRPCNotification)
        ):
            item.metadata = self._md
        await self._inner.send(item)


class _CorrelatingTransport(StreamableHTTPTransport):
    async def _handle_sse_event(
        self,
        sse: ServerSentEvent,
        read_stream_writer: Any,
        original_request_id: RequestId | None = None,
        resumption_callback: Any = None,
    ) -> bool:
        if original_request_id is not None:
            read_stream_writer = _Tagger(read_stream_writer, original_request_id)
        return await super()._handle_sse_event(
            sse, read_stream_writer, original_request_id, resumption_callback
        )


@contextlib.asynccontextmanager
async def streamable_http(
    transport: StreamableHTTPTransport, http_client: httpx2.AsyncClient
) -> AsyncIterator[tuple[Any, Any]]:
    """The SDK's `streamable_http_client` over `transport` (one that tags every message arriving on a request's
    response stream with that request's id: `ServerMessageMetadata.related_request_id`)."""
    read_writer, read_stream = create_context_streams[SessionMessage | Exception](0)
    write_stream, write_reader = create_context_streams[SessionMessage](0)
    async with read_writer, read_stream, write_stream, write_reader, anyio.create_task_group() as tg:

        def start_get_stream() -> None:
            tg.start_soon(transport.handle_get_stream, http_client, read_writer)

        tg.start_soon(
            transport.post_writer, http_client, write_reader, read_writer, write_stream, start_get_stream, tg
        )
        try:
            yield read_stream, write_stream
        finally:
            if transport.session_id:
                await transport.terminate_session(http_client)
            tg.cancel_scope.cancel()


@dataclass(frozen=True, slots=True)
class Opened:
    """A transport's streams (entered on the caller's exit stack) and what the request leg needs of it."""

    read: Any
    write: Any
    http: bool  # per-request HTTP headers (task, traceparent) reach the server
    session_id: Callable[[], str | None] | None = None  # Streamable HTTP: the session the SDK negotiated
    listening: asyncio.Event | None = None  # Streamable HTTP: the server answered the session's GET stream


async def open_transport(
    spec: MCPServer, cwd: Path, stack: AsyncExitStack, on_expired: Callable[[], None]
) -> Opened:
    """The streams for the spec's transport, entered on `stack`. `on_expired` fires when a Streamable HTTP
    server answers 404 to our session id."""
    if spec.transport == "stdio":
        command = local_command(spec.command or [])
        params = StdioServerParameters(
            command=command[0], args=command[1:], env=dict(spec.env) or None, cwd=str(cwd)
        )
        read, write = await stack.enter_async_context(stdio_client(params))
        return Opened(read, write, False)
    assert spec.url is not None
    if spec.transport == "sse":
        read, write = await stack.enter_async_context(
            sse_client(
                spec.url,
                headers=dict(spec.headers),
                timeout=spec.timeout_s,
                sse_read_timeout=3600,
                auth=_IdentityAuth() if spec.identity is not None else None,
            )
        )
        return Opened(
            read, write, False
        )  # the legacy SSE transport sends headers per connection, not per request

    listening = asyncio.Event()

    async def on_response(response: httpx2.Response) -> None:
        # 404 on a request that carried our session id: the server forgot the session (restart, expiry).
        if response.status_code == 404 and "mcp-session-id" in response.request.headers:
            on_expired()
        if response.request.method == "GET":  # the stream is open (or refused): the server can reach us now
            listening.set()

    # Upstream credentials come only from the registry; nothing of the caller's request is copied here.
    client = httpx2.AsyncClient(
        headers=dict(spec.headers),
        timeout=httpx2.Timeout(spec.timeout_s, read=None),  # per-request deadlines are the dispatcher's
        event_hooks={"response": [on_response]},
    )
    await stack.enter_async_context(client)
    transport = _CorrelatingTransport(str(spec.url))
    read, write = await stack.enter_async_context(streamable_http(transport, client))
    return Opened(read, write, True, lambda: transport.session_id, listening)
