"""The direct path: a plain `tools/call` answered by the endpoint's own handler, without the SDK server's
per-request machinery (transport, memory streams, task group, runner, OTel span, pydantic params) — about half
of the gateway's CPU per call (docs/benchmarks.md). It takes only requests whose answer cannot differ from the
SDK server's; everything else goes the SDK's way, which also owns every refusal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from mcp.server import Server
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.streamable_http import REQUEST_CANCELLED, EventMessage, StreamableHTTPServerTransport
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PARAM_HEADER_PREFIX,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    validate_mcp_param_headers,
)
from mcp_types import (
    INTERNAL_ERROR,
    LOG_LEVEL_META_KEY,
    SERVER_INFO_META_KEY,
    JSONRPCError,
    JSONRPCResponse,
)
from mcp_types.methods import serialize_server_result
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from agentgw import jsontext
from agentgw.http import (
    JSON_HEADERS,
    SSE_HEADERS,
    Receive,
    Scope,
    Send,
    cancel_on_disconnect,
    encode_headers,
    send_bytes,
)
from agentgw.mcp.bridges.relay import LEVEL_KEY, Caller, input_caps
from agentgw.mcp.catalog.catalog import Catalog
from agentgw.mcp.catalog.naming import View
from agentgw.mcp.front.events import Events
from agentgw.mcp.front.mediate import Call, Front
from agentgw.mcp.front.resume import RETRY_MS
from agentgw.mcp.front.sessions import Sessions

log = logging.getLogger("agentgw.mcp")

_PARAM_KEYS = frozenset({"name", "arguments", "_meta"})
_ROUTING = frozenset({MCP_PROTOCOL_VERSION_HEADER, MCP_METHOD_HEADER, MCP_NAME_HEADER})
_PARAM_PREFIX = MCP_PARAM_HEADER_PREFIX.lower().encode("latin-1")
# A handshake-era answer later than this comes on a resumable SSE stream instead of as JSON.
JSON_WITHIN_S = 1.0


@dataclass(slots=True)
class Plan:
    """A request the direct path will answer: its id, tool name, params, and the caller as a relay target."""

    request_id: str | int
    name: str
    params: dict[str, Any]
    caller: Caller
    transport: StreamableHTTPServerTransport | None  # the handshake session it is served on


class Served(Protocol):
    """What the direct path uses of the endpoint it serves (endpoint.py builds one `Direct` for itself): its
    catalog and view, its handshake sessions, its server's info stamp, and its `tools/call` handler."""

    @property
    def catalog(self) -> Catalog: ...

    @property
    def view(self) -> View: ...

    @property
    def manager(self) -> Sessions: ...

    @property
    def events(self) -> Events: ...

    @property
    def server(self) -> Server[Any]: ...

    async def tools_call(self, call: Call, name: str) -> dict[str, Any]: ...


class Direct:
    """Decides which requests skip the SDK server: `tools/call` with a well-formed body and headers, no progress
    token, no log level, no input round (`requestState`, `inputResponses`); in 2026-07-28 only what the SDK's own
    header ladder accepts; in the handshake era only on a live, initialized session of the same principal whose
    client declared no input capabilities (a question from the upstream would need the session's stream) and set
    no log level. Fails like the SDK server: a JSON-RPC error with the same code and HTTP status."""

    def __init__(self, endpoint: Served) -> None:
        self.endpoint = endpoint
        # Handshake-era calls outlive their HTTP request: (session id, request id) → the call's task
        self._running: dict[tuple[str, str], tuple[asyncio.Task[None], _Pending]] = {}

    def plan(
        self, scope: Scope, headers: dict[str, str], body: dict[str, Any], user: AuthenticatedUser
    ) -> Plan | None:
        if body.get("method") != "tools/call" or body.get("jsonrpc") != "2.0" or len(body) != 4:
            return None
        rid, params = body.get("id"), body.get("params")
        if type(rid) not in (str, int) or not isinstance(params, dict) or not _PARAM_KEYS.issuperset(params):
            return None
        name, arguments, meta = params.get("name"), params.get("arguments"), params.get("_meta")
        if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
            return None
        if meta is not None and (not isinstance(meta, dict) or "progressToken" in meta):
            return None
        if not _json_and_sse(headers) or _repeated_routing_header(scope):
            return None
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        assert isinstance(rid, str | int)
        if version in MODERN_PROTOCOL_VERSIONS:
            return self._modern(headers, body, rid, name, arguments, version)
        if version in HANDSHAKE_PROTOCOL_VERSIONS:
            return self._handshake(headers, rid, name, params, version, user)
        return None

    def _modern(
        self,
        headers: dict[str, str],
        body: dict[str, Any],
        rid: str | int,
        name: str,
        arguments: dict[str, Any] | None,
        version: str,
    ) -> Plan | None:
        verdict = classify_inbound_request(body, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            return None
        params: dict[str, Any] = body["params"]
        if LOG_LEVEL_META_KEY in params["_meta"]:
            return None
        if arguments or any(k.startswith(MCP_PARAM_HEADER_PREFIX.lower()) for k in headers):
            # Only a schema with `x-mcp-header` annotations can make the SDK refuse (known per cached tool).
            entry = self.endpoint.catalog.cached_tool(self.endpoint.view, name)
            if (
                entry is not None
                and entry.param_map() is not None
                and validate_mcp_param_headers(entry.upstream["inputSchema"], arguments or {}, headers)
                is not None
            ):
                return None
        declared = verdict.client_capabilities
        caps = input_caps(declared if isinstance(declared, dict) else None)
        return Plan(rid, name, params, Caller(None, rid, version, caps, None), None)

    def _handshake(
        self,
        headers: dict[str, str],
        rid: str | int,
        name: str,
        params: dict[str, Any],
        version: str,
        user: AuthenticatedUser,
    ) -> Plan | None:
        sid = headers.get("mcp-session-id")
        if not sid or any(k.startswith(MCP_PARAM_HEADER_PREFIX.lower()) for k in headers):
            return None
        transport = self.endpoint.manager.live(sid, user)
        conn = self.endpoint.events.session(sid) if transport is not None else None
        if conn is None or not conn.initialize_accepted or conn.protocol_version != version:
            return None
        if LEVEL_KEY in conn.state:
            return None
        declared = conn.client_capabilities
        if declared is not None and (declared.elicitation or declared.sampling or declared.roots):
            return None
        return Plan(rid, name, params, Caller(None, rid, version, {}, None), transport)

    async def aclose(self) -> None:
        """Cancel the handshake-era calls still running (shutdown)."""
        running = [task for task, _ in self._running.values()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)

    def cancelled(self, session_id: str | None, params: object, user: AuthenticatedUser) -> None:
        """A handshake-era `notifications/cancelled` for a call this path runs: cancel it (the upstream is told
        in turn). Only the session's own principal can; anything else is the SDK's to handle."""
        if (
            not session_id
            or not isinstance(params, dict)
            or self.endpoint.manager.live(session_id, user) is None
        ):
            return
        running = self._running.get((session_id, str(params.get("requestId"))))
        if running is not None:
            task, pending = running
            pending.cancelled = True
            task.cancel()

    async def serve(self, plan: Plan, front: Front, receive: Receive, send: Send) -> None:
        if plan.transport is None:
            await self._serve_modern(plan, front, receive, send)
        else:  # the call holds the session while it runs (it may outlive this request)
            await self._serve_handshake(plan, plan.transport, front, receive, send)

    async def _answer(self, plan: Plan, front: Front) -> tuple[dict[str, Any], int]:
        """The JSON-RPC reply and, in 2026-07-28, its HTTP status (the SDK's table)."""
        version = plan.caller.version
        modern = version in MODERN_PROTOCOL_VERSIONS
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": plan.request_id}
        try:
            result = await self.endpoint.tools_call(Call(front, plan.params, None, plan.caller), plan.name)
            reply["result"] = self._shape(result, version, modern)
        except MCPError as err:
            reply["error"] = err.error.model_dump(by_alias=True, mode="json", exclude_none=True)
            return reply, ERROR_CODE_HTTP_STATUS.get(err.code, 200) if modern else 200
        except Exception:
            log.exception("the direct path failed on tools/call")
            reply["error"] = {"code": INTERNAL_ERROR, "message": "Internal server error"}
        return reply, 200

    async def _serve_modern(self, plan: Plan, front: Front, receive: Receive, send: Send) -> None:
        """One JSON answer; the caller closing the request cancels the call (2026-07-28 cancellation)."""
        out: list[tuple[dict[str, Any], int]] = []

        async def work() -> None:
            out.append(await self._answer(plan, front))

        if await cancel_on_disconnect(receive, work()):
            reply, status = out[0]
            await send_bytes(send, status, jsontext.dumps(reply))

    async def _serve_handshake(
        self,
        plan: Plan,
        transport: StreamableHTTPServerTransport,
        front: Front,
        receive: Receive,
        send: Send,
    ) -> None:
        """JSON when the answer comes within JSON_WITHIN_S; after that, a resumable SSE stream (priming event,
        then the answer, both kept in the session's event store). A disconnect is not a cancellation in this
        era: the call runs on, and its answer waits in the event store for a `GET` with `Last-Event-ID`."""
        pending = _Pending(str(plan.request_id))
        key = (transport.mcp_session_id or "", pending.stream_id)

        async def run() -> None:
            with self.endpoint.manager.hold(transport):
                try:
                    pending.reply, _ = await self._answer(plan, front)
                except asyncio.CancelledError:
                    if not pending.cancelled:
                        raise  # shutdown
                    # This era answers a cancelled request (as the SDK's transport does), on a stream: a client
                    # that gave up on the request may no longer read a JSON answer.
                    error = {"code": REQUEST_CANCELLED, "message": "Request cancelled"}
                    pending.reply = {"jsonrpc": "2.0", "id": plan.request_id, "error": error}
                finally:
                    self._running.pop(key, None)
                if pending.streamed:  # the caller, or a resumed stream, reads it from the event store
                    pending.event_id = await _keep(transport, pending.stream_id, pending.reply)
                pending.done.set()

        # A plain task rather than one in the plane's task group: the hot path avoids anyio's cancel scopes
        # (each costs getpid syscalls); `aclose` cancels whatever is still running at shutdown.
        task = asyncio.get_running_loop().create_task(run())
        self._running[key] = (task, pending)
        await asyncio.wait((task,), timeout=JSON_WITHIN_S)
        sid = {"mcp-session-id": transport.mcp_session_id or ""}
        if pending.done.is_set() and not pending.cancelled:
            await send_bytes(send, 200, jsontext.dumps(pending.reply), JSON_HEADERS, sid)
            return
        pending.streamed = True
        priming = b""
        store = transport._event_store  # the session's own (sessions.py), replayed by a resumed GET
        if store is not None and plan.caller.version >= "2025-11-25":  # older clients cannot parse it
            priming_id = await store.store_event(pending.stream_id, None)
            priming = f"id: {priming_id}\nretry: {RETRY_MS}\ndata: \n\n".encode()
        head = [*SSE_HEADERS, *encode_headers(sid)]

        async def stream() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": priming, "more_body": True})
            await pending.done.wait()

        if await cancel_on_disconnect(receive, stream()):
            event = f"id: {pending.event_id}\n".encode() if pending.event_id else b""
            data = b"event: message\ndata: " + jsontext.dumps(pending.reply) + b"\n\n"
            await send({"type": "http.response.body", "body": event + data})

    def _shape(self, result: dict[str, Any], version: str, modern: bool) -> dict[str, Any]:
        """The result as the SDK server would put it on the wire for this version (its own sieve), with the
        gateway's `serverInfo` stamp on 2026-07-28 results."""
        try:
            shaped = serialize_server_result("tools/call", version, result)
        except ValidationError:
            log.exception("tools/call produced an invalid result")
            raise MCPError(INTERNAL_ERROR, "Handler returned an invalid result") from None
        if modern:
            meta = shaped.get("_meta")
            if meta is None:
                shaped["_meta"] = {SERVER_INFO_META_KEY: self.endpoint.server.server_info_stamp}
            elif isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
                shaped["_meta"] = {**meta, SERVER_INFO_META_KEY: self.endpoint.server.server_info_stamp}
        return shaped


@dataclass(slots=True, eq=False)
class _Pending:
    """A handshake-era call the direct path runs: its answer, and where that answer went."""

    stream_id: str  # the SDK's name for the request's stream: its JSON-RPC id
    done: asyncio.Event = field(default_factory=asyncio.Event)
    reply: dict[str, Any] = field(default_factory=dict)
    streamed: bool = False  # the caller got an SSE stream: the answer goes into the event store too
    cancelled: bool = False
    event_id: str | None = None


async def _keep(
    transport: StreamableHTTPServerTransport, stream_id: str, reply: dict[str, Any]
) -> str | None:
    """Store the answer in the session's event store (a resumed `GET` replays it) and hand it to a resumed
    stream already waiting for it; the event id, or None without a store."""
    store = transport._event_store
    if store is None:
        return None
    message = (
        JSONRPCResponse.model_validate(reply) if "result" in reply else JSONRPCError.model_validate(reply)
    )
    event_id = await store.store_event(stream_id, message)
    waiting = transport._request_streams.get(stream_id)
    if waiting is not None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await waiting[0].send(EventMessage(message, event_id))
    return event_id


def _json_and_sse(headers: dict[str, str]) -> bool:
    """The SDK requires JSON bodies and callers that accept both JSON and SSE; anything else is its to refuse."""
    if not headers.get("content-type", "").lower().startswith("application/json"):
        return False
    accept = headers.get("accept", "").lower()
    return "application/json" in accept and "text/event-stream" in accept


def _repeated_routing_header(scope: Scope) -> bool:
    """A routing or `Mcp-Param-*` header sent twice: first-copy and last-copy readers would disagree."""
    seen: set[bytes] = set()
    for raw, _ in scope["headers"]:
        key = raw.lower()
        if key.startswith(b"mcp-"):
            if key in seen:
                return True
            if key.decode("latin-1") in _ROUTING or key.startswith(_PARAM_PREFIX):
                seen.add(key)
    return False
