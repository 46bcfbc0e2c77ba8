"""The gateway's handshake-era sessions on one endpoint: the SDK's session manager with an event store per session
(resume.py), a lookup the direct path uses to serve a request on a live session, and the hold that keeps such a
session from idling out while it does."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import anyio
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    AuthorizationContext,
    authorization_context,
)
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from agentgw.mcp.resume import SessionEvents


class Sessions(StreamableHTTPSessionManager):
    """Sessions are the SDK's; this decides only who may use one without it (the principal that opened it, while
    it is live), and gives every new session its own event store."""

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        self.event_store = SessionEvents()  # read by the base class for this one session's transport
        return super()._admit_session(requestor)

    def live(self, session_id: str, user: AuthenticatedUser) -> StreamableHTTPServerTransport | None:
        """The session's transport if it is open and `user` opened it; None sends the request the SDK's way
        (which answers 404 for an unknown, expired or someone else's session)."""
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
