"""What an upstream MCP server tells the gateway without being asked: list changes (a 2026-07-28 server's
`subscriptions/listen` stream) and updates of the resources callers subscribed to (one upstream subscription per
URI, shared by every caller; a handshake-era server's `resources/subscribe`, a 2026-07-28 server's listen stream).
The base of `Upstream` (upstream.py), which owns the connection these run on."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
from mcp.client.session import ClientSession
from mcp.client.subscriptions import listen
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)

from agentgw.errors import GatewayError
from agentgw.mcp.upstream.wire import Connection
from agentgw.registry import MCPServer

log = logging.getLogger("agentgw.mcp")

OnChange = Callable[[str, str | None], None]  # (server, kind or None for "everything may have changed")
OnUpdated = Callable[[str, str], None]  # (server, the upstream URI of a resource that changed)


def describe(exc: BaseException) -> str:
    """A one-line cause for logs: the first leaf of an exception group, type and message."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class Watching:
    """Decides when the gateway (re)subscribes upstream: once per URI however many callers watch it, again on
    every new connection, and never for a URI nobody watches any more. Failures to listen are logged (listings
    then expire by their ttlMs); a refused `resources/subscribe` is the subscribing caller's error."""

    MAX_BACKOFF_S = 30.0
    name: str
    spec: MCPServer
    on_change: OnChange
    on_updated: OnUpdated
    _conn: Connection | None

    def __init__(self) -> None:
        self._watched: Counter[str] = (
            Counter()
        )  # resource URIs callers subscribed to (kept across reconnects)
        self._rewatch = (
            anyio.Event()
        )  # the watched set changed: a 2026-07-28 server's resource listen reopens

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

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
            log.info("MCP server %r: no list-change subscription (%s)", self.name, describe(exc))
            if not started:
                task_status.started()

    # -- resource subscriptions (shared by every caller: one upstream subscription per URI) ---------------------

    async def watch(self, uri: str) -> None:
        """A caller subscribed to `uri`: subscribe upstream unless someone already did. A handshake-era server's
        refusal is the caller's error (UpstreamRPCError); a 2026-07-28 server gets it on a `subscriptions/listen`
        stream, reopened with the new set."""
        self._watched[uri] += 1
        if self._watched[uri] > 1:
            return
        try:
            await self._sync_watch(uri, "resources/subscribe")
        except BaseException:
            self._drop(uri)
            raise

    async def unwatch(self, uri: str) -> None:
        if self._watched[uri] <= 0:
            return
        self._drop(uri)
        if uri not in self._watched:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.spec.timeout_s):
                try:
                    await self._sync_watch(uri, "resources/unsubscribe")
                except GatewayError as err:
                    log.debug("MCP server %r: unsubscribing %s failed: %s", self.name, uri, err.message)

    def _drop(self, uri: str) -> None:
        self._watched[uri] -= 1
        if self._watched[uri] <= 0:
            del self._watched[uri]

    async def _sync_watch(self, uri: str, method: str) -> None:
        conn = self._conn
        if conn is None or conn.closed.is_set():
            return  # applied when the connection opens
        if conn.modern:
            rewatch, self._rewatch = self._rewatch, anyio.Event()
            rewatch.set()
        else:
            await self.request(method, {"uri": uri})

    async def _resubscribe(self, conn: Connection) -> None:
        """A new handshake-era session starts without our subscriptions: renew them."""
        for uri in list(self._watched):
            try:
                await self.request("resources/subscribe", {"uri": uri})
            except GatewayError as err:
                log.warning("MCP server %r: re-subscribing to %s failed: %s", self.name, uri, err.message)

    async def _listen_resources(self, session: ClientSession) -> None:
        """A 2026-07-28 server's resource updates: one `subscriptions/listen` stream for the watched URIs,
        reopened whenever the set changes."""
        while True:
            rewatch = self._rewatch
            uris = sorted(self._watched)
            if not uris:
                await rewatch.wait()
                continue
            try:
                async with (
                    listen(session, resource_subscriptions=uris) as sub,
                    anyio.create_task_group() as tg,
                ):

                    async def reopen(
                        ev: anyio.Event = rewatch, scope: anyio.CancelScope = tg.cancel_scope
                    ) -> None:
                        await ev.wait()
                        scope.cancel()

                    tg.start_soon(reopen)
                    async for event in sub:
                        if isinstance(event, ResourceUpdated):
                            self.on_updated(self.name, event.uri)
                    tg.cancel_scope.cancel()
            except Exception as exc:
                log.info("MCP server %r: resource subscription lost (%s)", self.name, describe(exc))
                with anyio.move_on_after(self.MAX_BACKOFF_S):
                    await rewatch.wait()
