"""Change notifications on one MCP endpoint: the handshake sessions it serves (list changes go on their GET
streams), their resource subscriptions, and the `subscriptions/listen` streams of 2026-07-28 callers, fed from
the upstreams' own notifications with names and URIs mapped to the endpoint's."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
import mcp.types as types
from mcp.server.connection import Connection as SessionConnection
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)

log = logging.getLogger("agentgw.mcp")

Ctx = Any  # ServerRequestContext
Key = tuple[str, str]  # (server, the upstream's resource URI)
Unwatch = Callable[[str, str], Awaitable[None]]  # (server, upstream URI): release one upstream subscription

_LIST_EVENTS: dict[str, ServerEvent] = {
    "tools": ToolsListChanged(),
    "prompts": PromptsListChanged(),
    "resources": ResourcesListChanged(),
}


class Events:
    """Decides who hears about what changed upstream. Handshake sessions are tracked from their first request to
    their end (the SDK unwinds the session's exit stack) and get every list change of the endpoint's servers on
    their GET stream, and `notifications/resources/updated` for the URIs they subscribed to; listen streams get
    what their filter asked for (the SDK's ListenHandler: ack first, every frame tagged with the listen request's
    id). Delivery is best-effort: a session that has gone away is skipped."""

    def __init__(self, unwatch: Unwatch) -> None:
        self._unwatch = unwatch
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self._sessions: dict[str, SessionConnection] = {}
        self._subs: dict[Key, dict[str, str]] = {}  # (server, uri) → {session id: the URI it subscribed as}
        self._tg: anyio.abc.TaskGroup | None = None

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if self._tg is not None:
            self._tg.start_soon(fn, *args)

    # -- handshake sessions -----------------------------------------------------------------------------------

    def track(self, conn: SessionConnection | None) -> None:
        """Remember a handshake session until it ends (idempotent)."""
        sid = conn.session_id if conn is not None else None
        if conn is None or sid is None or sid in self._sessions:
            return
        self._sessions[sid] = conn

        async def forget() -> None:
            self._sessions.pop(sid, None)
            for key in [k for k, subs in self._subs.items() if sid in subs]:
                if self.unsubscribe(sid, key):
                    with anyio.CancelScope(shield=True):
                        await self._unwatch(*key)

        conn.exit_stack.push_async_callback(forget)

    def session(self, sid: str) -> SessionConnection | None:
        """A tracked handshake session's connection (its negotiated version, declared capabilities, state)."""
        return self._sessions.get(sid)

    def subscribed(self, sid: str, key: Key) -> bool:
        return sid in self._subs.get(key, {})

    def subscribe(self, sid: str, key: Key, exposed: str) -> None:
        self._subs.setdefault(key, {})[sid] = exposed

    def held(self, sid: str) -> dict[str, Key]:
        """The session's subscriptions here: the URI it subscribed as → (server, upstream URI)."""
        return {subs[sid]: key for key, subs in self._subs.items() if sid in subs}

    def unsubscribe(self, sid: str, key: Key) -> bool:
        """Forget one session's subscription; whether it had one."""
        subs = self._subs.get(key)
        if subs is None or subs.pop(sid, None) is None:
            return False
        if not subs:
            del self._subs[key]
        return True

    # -- upstream events --------------------------------------------------------------------------------------

    def list_changed(self, kind: str) -> None:
        """One of the endpoint's servers changed its `kind` list (tools, prompts, resources)."""
        event = _LIST_EVENTS.get(kind)
        if event is None:
            return
        self.spawn(self.bus.publish, event)
        for conn in list(self._sessions.values()):
            method = f"notifications/{kind}/list_changed"
            self.spawn(conn.notify, method, None)

    def resource_updated(self, server: str, uri: str, exposed: str) -> None:
        """The server's resource `uri` (the endpoint calls it `exposed`) changed."""
        self.spawn(self.bus.publish, ResourceUpdated(uri=exposed))
        for sid, as_uri in list(self._subs.get((server, uri), {}).items()):
            conn = self._sessions.get(sid)
            if conn is not None:
                note = types.ResourceUpdatedNotificationParams(uri=as_uri)
                self.spawn(conn.notify, "notifications/resources/updated", note.model_dump(by_alias=True))
