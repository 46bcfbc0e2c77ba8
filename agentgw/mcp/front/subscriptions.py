"""Resource subscriptions on one MCP endpoint: `resources/subscribe` and `resources/unsubscribe` (handshake era,
per session) and `subscriptions/listen` (2026-07-28, per stream), each authorized per resource and backed by one
shared upstream subscription per resource URI."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import mcp.types as types
from mcp.server.connection import Connection as SessionConnection
from mcp.server.context import HandlerResult

from agentgw.errors import BadRequest, GatewayError
from agentgw.exchange import Exchange, Result
from agentgw.mcp.bridges.relay import session_connection
from agentgw.mcp.errors import UnknownResource
from agentgw.mcp.front.events import Events
from agentgw.mcp.front.mediate import Call, Ctx, Mediator
from agentgw.mcp.front.shared import SharedSessions

log = logging.getLogger("agentgw.mcp")

RESTORE_S = 5.0


class Subscriptions(Mediator):
    """The endpoint's subscription handlers. Subscribing needs `read` on the resource (a resource the caller may
    not read is an unknown resource, -32602); a listen stream honours the resource URIs the caller may read and
    drops the others from its acknowledgement."""

    events: Events
    shared: SharedSessions | None

    async def _unwatch(self, server: str, uri: str) -> None:
        up = self.upstreams.get(server)
        if up is not None:
            await up.unwatch(uri)

    async def _watch(self, server: str, uri: str) -> None:
        up = self.upstreams.get(server)
        assert up is not None
        await up.watch(uri)

    async def _session_change(self, ctx: Ctx, operation: str, uri: str, subscribe: bool) -> HandlerResult:
        hit = await self.catalog.resolve_uri(self.view, uri)
        unseen = UnknownResource(f"Unknown resource: {uri}")
        if hit is None:
            return await self._refuse(
                self._exchange(Call.of(ctx), operation, f"mcp:?/resource/{uri}"), unseen
            )
        server, original = hit
        ex = self._exchange(Call.of(ctx), operation, f"mcp:{server}/resource/{original}")
        ex.attrs["action"] = "read"
        key = (server, original)

        async def forward(ex: Exchange) -> Result:
            conn = session_connection(ctx)
            sid = conn.session_id if conn is not None else None
            if sid is None:
                raise BadRequest("Resource subscriptions need a session.")
            if subscribe and not self.events.subscribed(sid, key):
                self.events.track(conn)
                self.events.subscribe(sid, key, uri)
                try:
                    await self._watch(server, original)
                except BaseException:
                    self.events.unsubscribe(sid, key)
                    raise
            elif not subscribe and self.events.unsubscribe(sid, key):
                await self._unwatch(server, original)
            if self.shared is not None:  # the replicas serving the session follow (_reconcile)
                await self.shared.subscribe(sid, uri, subscribe)
            return Result(payload={})

        return await self._run(ex, forward, unseen)

    async def _restore(self, conn: SessionConnection) -> None:
        """A session served again here (shared sessions): tracked, with the subscriptions it made anywhere (an
        upstream that is slow to take them back does not hold the session up for more than RESTORE_S)."""
        self.events.track(conn)
        if conn.session_id is not None and self.shared is not None:
            with anyio.move_on_after(RESTORE_S):
                await self._reconcile(conn.session_id)

    async def _reconcile(self, sid: str, _: bytes = b"") -> None:
        """Make this replica's subscriptions of session `sid` the ones in the shared state (another replica
        subscribed or unsubscribed it). A URI that no longer resolves, or whose server refuses, is skipped."""
        if self.shared is None or self.events.session(sid) is None:
            return
        wanted = await self.shared.subscriptions(sid)
        held = self.events.held(sid)
        for exposed, key in held.items():
            if exposed not in wanted and self.events.unsubscribe(sid, key):
                await self._unwatch(*key)
        for exposed in wanted - held.keys():
            hit = await self.catalog.resolve_uri(self.view, exposed)
            if hit is None or self.events.subscribed(sid, hit):
                continue
            self.events.subscribe(sid, hit, exposed)
            try:
                await self._watch(*hit)
            except GatewayError as err:
                self.events.unsubscribe(sid, hit)
                log.info("a shared subscription of %s was not restored here: %s", exposed, err.message)

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> HandlerResult:
        return await self._session_change(ctx, "resources/subscribe", params.uri, True)

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> HandlerResult:
        return await self._session_change(ctx, "resources/unsubscribe", params.uri, False)

    async def listen(self, ctx: Ctx, params: types.SubscriptionsListenRequestParams) -> HandlerResult:
        """One 2026-07-28 listen stream: acknowledged first, then the list changes and resource updates its
        filter asked for, until the caller closes it."""
        ex = self._exchange(Call.of(ctx), "subscriptions/listen", "mcp:*")
        ex.attrs["listing"] = True  # open to every principal; resource URIs are filtered below

        async def forward(ex: Exchange) -> Result:
            wanted = params.notifications
            honored: list[str] = []
            watched: list[tuple[str, str]] = []
            try:
                for uri in wanted.resource_subscriptions or ():
                    hit = await self.catalog.resolve_uri(self.view, uri)
                    if hit is None or not self._allows(ex, f"mcp:{hit[0]}/resource/{hit[1]}", "read"):
                        continue
                    try:
                        await self._watch(*hit)
                    except GatewayError:
                        continue
                    watched.append(hit)
                    honored.append(uri)
                narrowed = wanted.model_copy(update={"resource_subscriptions": honored or None})
                result = await self.events.listen(ctx, params.model_copy(update={"notifications": narrowed}))
            finally:
                with anyio.CancelScope(shield=True):
                    for server, original in watched:
                        await self._unwatch(server, original)
            payload: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            return Result(payload=payload)

        return await self._run(ex, forward)
