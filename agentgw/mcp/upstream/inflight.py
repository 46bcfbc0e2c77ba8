"""A request in flight to an upstream MCP server, and what the upstream sends about it: the caller it belongs to
(`Relay`), found by the JSON-RPC id the request went under (`Router`), the neutral answer to a question that
belongs to nobody's request (`unasked`), log levels, and the request's deadline, paused while the caller answers
a question (`Deadline`, `Pausing`). Both the dispatcher (wire.py) and the HTTP leg (leg.py) route by these."""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Any, Protocol

import anyio
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST, RequestId

RELAYED_REQUESTS = frozenset({"elicitation/create", "sampling/createMessage", "roots/list"})
LOG_LEVELS: tuple[str, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)
_ids = itertools.count(1)


def unasked(method: str) -> dict[str, Any]:
    """The answer to a server-to-client request that belongs to no caller's request in flight: there is nobody to
    ask, and the answer must carry no caller's data: no roots, a cancelled elicitation, a refused sampling."""
    if method == "roots/list":
        return {"roots": []}
    if method == "elicitation/create":
        return {"action": "cancel"}
    raise MCPError(INVALID_REQUEST, f"{method}: there is no caller to ask.")


def log_rank(level: object) -> int | None:
    """The severity rank of an MCP log level (debug = 0), None for anything else."""
    return LOG_LEVELS.index(level) if isinstance(level, str) and level in LOG_LEVELS else None


class Relay(Protocol):
    """Where an upstream's messages about one request in flight go: the caller that made the request."""

    async def log(self, params: dict[str, Any]) -> None:
        """A `notifications/message` the upstream sent about the request."""

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A server-to-client request (elicitation, sampling, roots) the upstream sent while handling the
        request; returns the caller's result or raises MCPError."""
        ...


class Router:
    """The relays of one upstream's requests in flight, keyed by the JSON-RPC id the gateway sent each under.

    On Streamable HTTP a message is matched by the request whose response stream carried it. Transports with one
    shared stream (stdio, legacy SSE) carry no such link: there a message goes to the only request in flight that
    has a relay, and is refused (requests) or dropped (log messages) when there are several."""

    def __init__(self, correlated: bool) -> None:
        self.correlated = correlated
        self._relays: dict[RequestId, Relay] = {}

    @contextlib.contextmanager
    def open(self, relay: Relay) -> Any:
        """Register `relay` under a fresh, session-unique request id (never a number, so it cannot collide with
        the dispatcher's own ids) for the duration of the block; yields the id."""
        rid = f"agw-{next(_ids)}"
        self._relays[rid] = relay
        try:
            yield rid
        finally:
            self._relays.pop(rid, None)

    def find(self, related: RequestId | None) -> Relay | None:
        if related is not None:
            return self._relays.get(related)
        if not self.correlated and len(self._relays) == 1:
            return next(iter(self._relays.values()))
        return None


class Deadline:
    """A request's time limit that stops while the server waits for the caller (an input request it relayed):
    the upstream's `timeout_s` bounds its own work, not a human answering an elicitation."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.scope = anyio.CancelScope(deadline=anyio.current_time() + seconds)
        self._waiting = 0

    @contextlib.contextmanager
    def paused(self) -> Any:
        self._waiting += 1
        self.scope.deadline = math.inf
        try:
            yield
        finally:
            self._waiting -= 1
            if not self._waiting:
                self.scope.deadline = anyio.current_time() + self.seconds


class Pausing:
    """A relay whose questions to the caller pause the request's deadline."""

    def __init__(self, relay: Relay, deadline: Deadline) -> None:
        self.relay = relay
        self.deadline = deadline

    async def log(self, params: dict[str, Any]) -> None:
        await self.relay.log(params)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        with self.deadline.paused():
            return await self.relay.ask(method, params)
