"""The gateway's handshake-era sessions on one endpoint: the SDK's session manager with sealed session ids that
survive a restart or a move to another replica, an event store per session (resume.py), and the lookup and hold
the direct path uses to serve a request on a live session."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import mcp.types as types
import orjson
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from mcp.server.connection import Connection
from mcp.server.request_state import AESGCMRequestStateCodec, InvalidRequestState
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import GET_STREAM_KEY, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage
from mcp.shared.transport_context import TransportContext
from mcp_types import JSONRPCError, JSONRPCResponse, jsonrpc_message_adapter
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError

from agentgw.exchange import Principal
from agentgw.mcp.bridges.relay import LEVEL_KEY
from agentgw.mcp.bridges.state import Binding
from agentgw.mcp.front.resume import SessionEvents
from agentgw.mcp.front.shared import SharedEvents, SharedSessions

log = logging.getLogger("agentgw.mcp")

_VERSION = 1
_MAX_CAPS_BYTES = 2048  # larger declared capabilities keep only what the gateway acts on (input capabilities)


@dataclass(frozen=True, slots=True)
class Opening:
    """The request that opens a session, as the front door read it: who, and its `initialize` params."""

    principal: Principal
    params: dict[str, Any]


OPENING: ContextVar[Opening | None] = ContextVar("agentgw_mcp_opening", default=None)


@dataclass(frozen=True, slots=True)
class Claims:
    """What a session id carries: enough to serve the session again in a process that never saw it."""

    version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any]
    issued: float

    def init_params(self) -> types.InitializeRequestParams:
        try:
            info = types.Implementation.model_validate(self.client_info)
        except ValidationError:
            info = types.Implementation(name="unknown", version="0")
        try:
            caps = types.ClientCapabilities.model_validate(self.capabilities)
        except ValidationError:
            caps = types.ClientCapabilities()
        return types.InitializeRequestParams(
            protocol_version=self.version, capabilities=caps, client_info=info
        )


class SessionIds:
    """Mints and opens sealed session ids (AES-256-GCM under a key derived from the gateway secret): bound to
    the principal that opened the session and to the endpoint, valid for `max_age_s`. Fails closed: anything
    else opens to None, and the SDK answers 404 as for any unknown session."""

    def __init__(self, secret: bytes, endpoint: str, max_age_s: float) -> None:
        key = hashlib.sha256(b"agentgw mcp session ids\x00" + secret).digest()
        self._codec = AESGCMRequestStateCodec([key])
        self.endpoint = endpoint
        self.max_age_s = max_age_s

    def mint(self, opening: Opening) -> str:
        params = opening.params
        requested = params.get("protocolVersion")
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        caps = params.get("capabilities")
        caps = caps if isinstance(caps, dict) else {}
        if len(orjson.dumps(caps)) > _MAX_CAPS_BYTES:
            caps = {k: caps[k] for k in ("elicitation", "sampling", "roots") if k in caps}
        info = params.get("clientInfo")
        info = {k: info[k] for k in ("name", "version") if k in info} if isinstance(info, dict) else {}
        claims = {
            "v": _VERSION,
            "p": Binding.principal_of(opening.principal),
            "e": self.endpoint,
            "pv": version,
            "c": caps,
            "i": info,
            "t": time.time(),
        }
        return self._codec.seal(orjson.dumps(claims))

    def open(self, session_id: str, principal: Principal) -> Claims | None:
        try:
            claims = orjson.loads(self._codec.unseal(session_id))
        except (InvalidRequestState, ValueError):
            return None
        if not isinstance(claims, dict) or claims.get("v") != _VERSION:
            return None
        issued, version = claims.get("t"), claims.get("pv")
        if not isinstance(issued, int | float) or time.time() - issued > self.max_age_s:
            return None
        if claims.get("e") != self.endpoint or claims.get("p") != Binding.principal_of(principal):
            return None
        caps, info = claims.get("c"), claims.get("i")
        if (
            version not in HANDSHAKE_PROTOCOL_VERSIONS
            or not isinstance(caps, dict)
            or not isinstance(info, dict)
        ):
            return None
        return Claims(version, caps, info, issued)


class Sessions(StreamableHTTPSessionManager):
    """Decides which session ids are honored: one this process serves, to the principal that opened it; or one
    it never saw (opened before a restart, or by another replica) that opens as this endpoint's and this
    principal's, is younger than `max_age_s` and was not ended here (DELETE, idle timeout) — that session is
    served again from what its id carries (protocol version, client capabilities). With `shared` (Redis) the
    session's events, log level, subscriptions and end are every replica's (shared.py); without, what lived only
    in the old process does not come back: its event history, log level and subscriptions. One principal holds at
    most `max_per_principal` sessions: opening one more (or one more in a full table) first ends that
    principal's oldest idle session, so no principal can lock the others out. Everything else is answered by the
    SDK (404 for an unknown session, 503 at a session limit with none of the principal's sessions idle)."""

    def __init__(
        self,
        ids: SessionIds,
        principal_of: Callable[[dict[str, Any]], Principal | None],
        max_per_principal: int | None = None,
        shared: SharedSessions | None = None,
        revived: Callable[[Connection], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ids = ids
        self.shared = shared
        self._revived = revived  # told of each session served again here (it restores subscriptions)
        if shared is not None:
            shared.on("end", self._ended_elsewhere)
            shared.on("get", self._listened_elsewhere)
            shared.on("reply", self._answered_elsewhere)
        self._principal_of = principal_of  # ASGI scope → the Principal the front door established
        self._ended: dict[str, float] = {}  # session ids ended here → when their id expires anyway
        self.max_per_principal = max_per_principal
        self._owned: dict[Owner, dict[str, None]] = {}  # each principal's session ids, oldest first

    # -- opening and ending ------------------------------------------------------------------------------------

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
            return None
        if self._at_cap(requestor):
            log.warning(
                "Refusing a new MCP session: the principal has %d open, none idle", self.max_per_principal
            )
            return None
        opening = OPENING.get()
        # Without an `initialize` to read, the request cannot open a session anyway: a throwaway id.
        session_id = self.ids.mint(opening) if opening is not None else uuid.uuid4().hex
        return self._register(session_id, requestor)

    def _register(
        self, session_id: str, requestor: AuthorizationContext | None
    ) -> StreamableHTTPServerTransport:
        return self._adopt(session_id, requestor, self._transport(session_id))

    def _transport(self, session_id: str) -> StreamableHTTPServerTransport:
        return StreamableHTTPServerTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=self.json_response,
            event_store=SharedEvents(self.shared, session_id) if self.shared else SessionEvents(),
            security_settings=self.security_settings,
            retry_interval=self.retry_interval,
            idle_timeout=self.session_idle_timeout,
        )

    def _adopt(
        self,
        session_id: str,
        requestor: AuthorizationContext | None,
        transport: StreamableHTTPServerTransport,
    ) -> StreamableHTTPServerTransport:
        """Make the session's transport reachable: requests for its id go to it from now on."""
        if requestor is not None:
            self._session_owners[session_id] = requestor
            self._owned.setdefault(_owner(requestor), {})[session_id] = None
        self._server_instances[session_id] = transport
        return transport

    def _at_cap(self, requestor: AuthorizationContext | None) -> bool:
        cap = self.max_per_principal
        return (
            cap is not None and requestor is not None and len(self._owned.get(_owner(requestor), ())) >= cap
        )

    async def _make_room(self, requestor: AuthorizationContext | None) -> None:
        """Before `requestor` opens a session: if it is at its cap, or the table is full, end its oldest session
        with no request in flight (an open GET stream does not count: it only listens)."""
        if requestor is None:
            return
        full = self.max_sessions is not None and len(self._server_instances) >= self.max_sessions
        if not (full or self._at_cap(requestor)):
            return
        for session_id in list(self._owned.get(_owner(requestor), ())):
            transport = self._server_instances.get(session_id)
            if transport is not None and _idle(transport):
                log.info("MCP session ended to make room for another of the same principal")
                await self._discard_session(session_id, transport)
                return

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        requestor = self._session_owners.get(session_id)
        if requestor is not None:
            mine = self._owned.get(_owner(requestor))
            if mine is not None:
                mine.pop(session_id, None)
                if not mine:
                    del self._owned[_owner(requestor)]
        # An idle timeout ends a shared session only here: the client may be using it on another replica.
        if session_id in self._server_instances and self._task_group is not None and self.shared is None:
            self._mark_ended(session_id)
        await super()._discard_session(session_id, transport)

    def _mark_ended(self, session_id: str) -> None:
        now = time.time()
        if len(self._ended) > 4 * (self.max_sessions or 10_000):
            self._ended = {sid: exp for sid, exp in self._ended.items() if exp > now}
        self._ended[session_id] = now + self.ids.max_age_s

    # -- serving a session this process never saw --------------------------------------------------------------

    async def _handle_stateful_request(self, scope: Any, receive: Any, send: Any) -> None:
        session_id = _session_header(scope)
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if session_id is None and OPENING.get() is not None:  # an `initialize`: it opens a session
            await self._make_room(requestor)
        elif session_id is not None and session_id not in self._server_instances:
            principal = self._principal_of(scope)
            claims = self.ids.open(session_id, principal) if principal is not None else None
            if claims is not None and not await self._was_ended(session_id):
                await self._make_room(requestor)
                async with self._session_creation_lock:
                    full = self.max_sessions is not None and len(self._server_instances) >= self.max_sessions
                    if session_id not in self._server_instances and not (full or self._at_cap(requestor)):
                        await self._revive(session_id, requestor, claims)
        if self.shared is None or session_id is None:
            await super()._handle_stateful_request(scope, receive, send)
            return
        method = scope.get("method")
        if method == "GET":
            await self._listening(session_id)
        if method != "DELETE":
            await super()._handle_stateful_request(scope, receive, send)
            return
        shared = self.shared

        async def ending(message: Any) -> None:
            # Every replica knows before the client hears it: its next request may go to any of them.
            if message["type"] == "http.response.start" and message["status"] == 200:
                self._mark_ended(session_id)
                await shared.end(session_id)
            await send(message)

        await super()._handle_stateful_request(scope, receive, ending)

    async def _was_ended(self, session_id: str) -> bool:
        if self._ended.get(session_id, 0) >= time.time():
            return True
        return self.shared is not None and await self.shared.ended(session_id)

    # -- shared sessions: what the other replicas tell ---------------------------------------------------------

    async def _listening(self, session_id: str) -> None:
        """The client's GET stream is on this replica from now on: its notifications are the ones replayed."""
        transport = self._server_instances.get(session_id)
        store = transport._event_store if transport is not None else None
        if isinstance(store, SharedEvents) and self.shared is not None:
            store.listening = True
            await self.shared.tell("get", session_id)

    async def _listened_elsewhere(self, session_id: str, _: bytes) -> None:
        transport = self._server_instances.get(session_id)
        store = transport._event_store if transport is not None else None
        if isinstance(store, SharedEvents):
            store.listening = False

    async def _ended_elsewhere(self, session_id: str, _: bytes) -> None:
        self._mark_ended(session_id)
        transport = self._server_instances.get(session_id)
        if transport is not None:
            log.info("MCP session ended on another replica")
            await self._discard_session(session_id, transport)

    async def forward_answer(self, session_id: str, principal: Principal, body: bytes) -> None:
        """A client's answer to a request a server sent it (elicitation, sampling, roots) may reach any replica:
        every replica serving the session gets it, and the one that asked takes it (the others' dispatchers
        drop an answer to nothing they asked). Only the principal that opened the session can send one."""
        if self.shared is not None and self.ids.open(session_id, principal) is not None:
            await self.shared.tell("reply", session_id, body)

    async def _answered_elsewhere(self, session_id: str, body: bytes) -> None:
        transport = self._server_instances.get(session_id)
        writer = transport._read_stream_writer if transport is not None else None
        if writer is None:
            return
        try:
            message = jsonrpc_message_adapter.validate_json(body, by_name=False)
        except ValidationError:
            return
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await writer.send(SessionMessage(message))

    async def _revive(self, session_id: str, requestor: AuthorizationContext | None, claims: Claims) -> None:
        """Serve a session this process never saw. Its transport is made reachable only once its server task has
        connected to it: requests for the id that arrive meanwhile wait on the creation lock, instead of reaching
        a transport with nothing reading it (HTTP 500 "No read stream writer available", seen with --workers)."""
        transport = self._transport(session_id)
        assert self._task_group is not None
        level = await self.shared.level(session_id) if self.shared is not None else None
        try:
            await self._task_group.start(self._serve_revived, session_id, transport, claims, level)
        except BaseException:
            await super()._discard_session(session_id, transport)
            raise
        if transport.is_terminated:  # it ended at once (shutdown): nothing to adopt
            return
        self._adopt(session_id, requestor, transport)
        log.info("MCP session revived from its id (protocol %s)", claims.version)

    async def _serve_revived(
        self,
        session_id: str,
        transport: StreamableHTTPServerTransport,
        claims: Claims,
        level: str | None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The session's server task, born initialized (no `initialize` comes again) and otherwise run like the
        SDK runs a session: until DELETE, the idle timeout, or shutdown."""
        async with transport.connect() as (read, write):
            idle = transport.idle_scope or anyio.CancelScope()
            started = False
            try:
                with idle:
                    dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                        read, write, inline_methods=frozenset({"initialize"})
                    )
                    connection = Connection.for_loop(
                        dispatcher, session_id=session_id, protocol_version_hint=claims.version
                    )
                    connection.client_params = claims.init_params()
                    connection.initialized.set()
                    if level is not None:
                        connection.state[LEVEL_KEY] = level
                    if self._revived is not None:  # e.g. its subscriptions, back before its first request
                        await self._revived(connection)
                    task_status.started()
                    started = True
                    await serve_connection(
                        self.app, dispatcher, connection=connection, lifespan_state=self._lifespan_state
                    )
            except Exception:
                log.exception("revived MCP session crashed")
            finally:
                await self._discard_session(session_id, transport)
                if not started:
                    task_status.started()

    # -- the direct path ---------------------------------------------------------------------------------------

    def live(self, session_id: str, user: AuthenticatedUser) -> StreamableHTTPServerTransport | None:
        """The session's transport if it is open and `user` opened it; None sends the request the SDK's way
        (which answers 404 for an unknown, expired or someone else's session, or revives it)."""
        transport = self._server_instances.get(session_id)
        if transport is None or transport.is_terminated:
            return None
        if self._session_owners.get(session_id) != authorization_context(user):
            return None
        idle = transport.idle_scope
        if idle is not None and idle.cancel_called:
            return None
        return transport

    @staticmethod
    @contextlib.contextmanager
    def hold(transport: StreamableHTTPServerTransport) -> Iterator[None]:
        """A request in flight on the session, as the transport counts the requests it serves itself: the idle
        countdown stops while any is in flight and restarts when the last one ends."""
        idle, timeout = transport.idle_scope, getattr(transport, "_idle_timeout", None)
        if idle is None or timeout is None or not hasattr(transport, "_requests_in_flight"):
            yield
            return
        transport._requests_in_flight += 1
        idle.deadline = math.inf
        try:
            yield
        finally:
            transport._requests_in_flight -= 1
            if not transport._requests_in_flight:
                idle.deadline = anyio.current_time() + timeout


Owner = tuple[str, str | None, str | None]  # a principal as the SDK binds sessions to it


def _owner(requestor: AuthorizationContext) -> Owner:
    return (requestor["client_id"], requestor.get("issuer"), requestor.get("subject"))


def _idle(transport: StreamableHTTPServerTransport) -> bool:
    """No request in flight on the session, its GET stream (which only listens) aside."""
    listening = 1 if GET_STREAM_KEY in transport._request_streams else 0
    return transport._requests_in_flight - listening <= 0


def _session_header(scope: Any) -> str | None:
    for key, value in scope["headers"]:
        if key == b"mcp-session-id":
            return str(value.decode("latin-1"))
    return None
