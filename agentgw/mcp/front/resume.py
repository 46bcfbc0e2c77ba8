"""SSE resumability on the gateway's own endpoint (handshake era): each session gets its own small event store, so a
client whose stream broke reconnects with `GET` + `Last-Event-ID` and receives the rest of that one stream. Per
session, never shared: the SDK names streams by request id, which repeats across sessions."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

from mcp.server.streamable_http import EventCallback, EventMessage, EventStore

EVENTS_PER_SESSION = 64  # the tail a reconnecting client can catch up on; older events are dropped
RETRY_MS = 1000  # the `retry:` advice on the gateway's SSE streams


class SessionEvents(EventStore):
    """One session's last EVENTS_PER_SESSION SSE events (priming events included, as cursors)."""

    def __init__(self, limit: int = EVENTS_PER_SESSION, prefix: str = "") -> None:
        self._events: OrderedDict[str, tuple[str, Any]] = OrderedDict()  # event id → (stream id, message)
        self._ids = itertools.count(1)
        self._limit = limit
        self._prefix = prefix  # makes the ids unique across processes when events are shared (shared.py)

    async def store_event(self, stream_id: str, message: Any) -> str:
        event_id = f"{self._prefix}{next(self._ids)}"
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self._limit:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        hit = self._events.get(last_event_id)
        if hit is None:
            return None
        stream_id = hit[0]
        after = False
        for event_id, (sid, message) in list(self._events.items()):
            if after and sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream_id
