"""Handshake-era session state every replica reads (`mcp.sessions.shared: redis`): a session's SSE events (so
`Last-Event-ID` resumes on any replica), its log level, its resource subscriptions and whether it was ended; and a
control channel telling the replicas that serve a session that it ended, changed, or got an answer they asked for."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import orjson
from mcp.server.streamable_http import GET_STREAM_KEY, EventCallback, EventMessage
from mcp_types import INTERNAL_ERROR, JSONRPCError, JSONRPCResponse, jsonrpc_message_adapter

from agentgw.mcp.front.resume import SessionEvents
from agentgw.settings import Settings

log = logging.getLogger("agentgw.mcp")

EVENTS_KEPT = 256  # per session, approximately (XADD MAXLEN ~): the tail any replica can replay
TAIL_BLOCK_MS = 1000  # one blocking read of a resumed stream's new events
TAIL_IDLE_S = 600.0  # a resumed stream that gets no event this long is given up
ALIVE_S = 3.0  # a replica that has not said it is alive for this long is gone (its calls with it)
LOST = "The call was lost: the gateway replica serving it stopped. Call again."

Handler = Callable[[str, bytes], Awaitable[None]]  # (session id, payload): what a replica does when told


class SharedSessions:
    """One endpoint's session state in Redis, under `<prefix>:mcp:<endpoint>:<digest of the session id>:*` (the
    sealed id itself is never a key), every key expiring with the session id. Fails soft: a Redis error is
    logged and the replica carries on with what it has itself, as without shared state (docs/deployment.md)."""

    def __init__(self, url: str, prefix: str, endpoint: str, ttl_s: float) -> None:
        import redis.asyncio as aioredis  # only deployments that share sessions import the client

        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=5, socket_connect_timeout=2.0, health_check_interval=30
        )
        self.redis: Any = aioredis.Redis(connection_pool=pool)
        self.prefix = f"{prefix}:mcp:{endpoint or '_'}:"
        self.channel = self.prefix + "ctl"
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.me = os.urandom(6).hex()  # this process, so it can skip its own control messages
        self._handlers: dict[str, Handler] = {}
        self._queue: list[tuple[str, str, bytes]] = []  # events to mirror: (session key, event id, fields)
        self._wake = anyio.Event()
        self._failing = False

    def key(self, session_id: str, part: str) -> str:
        digest = hashlib.sha256(session_id.encode("latin-1")).hexdigest()[:32]
        return f"{self.prefix}{digest}:{part}"

    def _failed(self, what: str, exc: BaseException) -> None:
        if not self._failing:
            log.warning(
                "shared MCP sessions: Redis %s failed (%s); serving from this process's state", what, exc
            )
        self._failing = True

    def _ok(self) -> None:
        if self._failing:
            log.info("shared MCP sessions: Redis answers again")
        self._failing = False

    async def _try(self, what: str, op: Awaitable[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            out = await op
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(what, exc)
            return None
        self._ok()
        return out

    # -- state -------------------------------------------------------------------------------------------------

    async def ended(self, session_id: str) -> bool:
        return bool(await self._try("read", self.redis.exists(self.key(session_id, "end"))))

    async def end(self, session_id: str) -> None:
        """The session was ended (DELETE): no replica serves it again, those serving it now stop."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.key(session_id, "end"), b"1", px=self.ttl_ms)
        pipe.delete(self.key(session_id, "ev"), self.key(session_id, "meta"), self.key(session_id, "subs"))
        await self._try("end", pipe.execute())
        await self.tell("end", session_id)

    async def level(self, session_id: str) -> str | None:
        got = await self._try("read", self.redis.hget(self.key(session_id, "meta"), "level"))
        return got.decode() if isinstance(got, bytes) else None

    async def set_level(self, session_id: str, level: str) -> None:
        key = self.key(session_id, "meta")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, "level", level)
        pipe.pexpire(key, self.ttl_ms)
        await self._try("write", pipe.execute())
        await self.tell("level", session_id)

    async def subscriptions(self, session_id: str) -> set[str]:
        """The resource URIs (as the caller named them) the session subscribed to, on any replica."""
        got = await self._try("read", self.redis.smembers(self.key(session_id, "subs")))
        return {uri.decode() for uri in got} if got else set()

    async def subscribe(self, session_id: str, uri: str, on: bool) -> None:
        key = self.key(session_id, "subs")
        pipe = self.redis.pipeline(transaction=False)
        if on:
            pipe.sadd(key, uri)
            pipe.pexpire(key, self.ttl_ms)
        else:
            pipe.srem(key, uri)
        await self._try("write", pipe.execute())
        await self.tell("subs", session_id)

    # -- control channel ---------------------------------------------------------------------------------------

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    async def tell(self, kind: str, session_id: str, payload: bytes = b"") -> None:
        """Tell every other replica about `session_id` (`end`, `level`, `subs`, `get`, `reply`)."""
        message = orjson.dumps({"k": kind, "s": session_id, "f": self.me}) + b"\n" + payload
        await self._try("publish", self.redis.publish(self.channel, message))

    async def _listen(self) -> None:
        from redis.exceptions import RedisError

        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._ok()
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None:
                        await self._dispatch(message["data"])
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed("subscribe", exc)
                await anyio.sleep(1.0)  # a back-off before reconnecting, not coordination
            finally:
                with anyio.CancelScope(shield=True):
                    await pubsub.aclose()

    async def _dispatch(self, data: bytes) -> None:
        head, _, payload = data.partition(b"\n")
        try:
            note = orjson.loads(head)
            kind, session_id, origin = note["k"], note["s"], note["f"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        handler = self._handlers.get(kind)
        if origin == self.me or handler is None:
            return
        try:
            await handler(session_id, payload)
        except Exception:
            log.exception("shared MCP sessions: handling %r failed", kind)

    async def ask(self, kind: str, ident: str, payload: bytes, ack_s: float, answer_s: float) -> bytes | None:
        """Ask whichever replica holds `ident` (a held call) and wait for its answer: None if none acknowledges
        within `ack_s` (nobody holds it: it ended, or its replica is gone)."""
        box = f"{self.prefix}box:{os.urandom(8).hex()}"
        await self.tell(kind, ident, box.encode() + b"\n" + payload)
        acked = await self._try("wait", self.redis.blpop([box], timeout=ack_s))
        if not acked or acked[1] != b"ack":
            return None
        got = await self._try("wait", self.redis.blpop([box], timeout=answer_s))
        return got[1] if got else None

    async def reply(self, box: str, data: bytes) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(box, data)
        pipe.pexpire(box, 60_000)
        await self._try("reply", pipe.execute())

    # -- events ------------------------------------------------------------------------------------------------

    def mirror(self, session_id: str, event_id: str, stream_id: str, message: Any) -> None:
        """Queue one stored event for Redis (the request path never waits for it)."""
        data = b"" if message is None else message.model_dump_json(by_alias=True, exclude_none=True).encode()
        fields = orjson.dumps([event_id, stream_id, self.me]) + b"\n" + data
        self._queue.append((self.key(session_id, "ev"), event_id, fields))
        self._wake.set()

    async def _flush(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            batch, self._queue = self._queue, []
            pipe = self.redis.pipeline(transaction=False)
            for key in dict.fromkeys(k for k, _, _ in batch):
                for k, _, fields in batch:
                    if k == key:
                        pipe.xadd(key, {b"e": fields}, maxlen=EVENTS_KEPT, approximate=True)
                pipe.pexpire(key, self.ttl_ms)
            if batch:
                await self._try("write", pipe.execute())

    async def replay(self, session_id: str, last_event_id: str, send: EventCallback) -> str | None:
        """Send a stream's events after `last_event_id` from Redis. A request's stream is followed until its
        answer (its call may still run on another replica); the GET stream only up to now: from here on this
        replica serves it. None if the event is unknown (too old, or never stored)."""
        key = self.key(session_id, "ev")
        entries = await self._try("read", self.redis.xrange(key))
        if not entries:
            return None
        found = next((i for i, (_, f) in enumerate(entries) if _event(f)[0] == last_event_id), None)
        if found is None:
            return None
        cursor, fields = entries[found]
        _, stream_id, origin, _ = _event(fields)
        if stream_id is None:
            return None
        for entry_id, fields in entries[found + 1 :]:
            if await _send(fields, stream_id, send):
                return stream_id
            cursor = entry_id
        if stream_id == GET_STREAM_KEY:
            return stream_id
        with anyio.move_on_after(TAIL_IDLE_S) as idle:
            while True:
                got = await self._try("tail", self.redis.xread({key: cursor}, block=TAIL_BLOCK_MS, count=64))
                if got is None and self._failing:
                    await anyio.sleep(TAIL_BLOCK_MS / 1000)  # Redis down: wait a blocking read's worth
                if not got and origin is not None and not await self._alive(origin):
                    await send(EventMessage(_lost(stream_id)))
                    return stream_id
                for _, items in got or ():
                    for entry_id, fields in items:
                        cursor = entry_id
                        idle.deadline = anyio.current_time() + TAIL_IDLE_S
                        if await _send(fields, stream_id, send):
                            return stream_id
        return stream_id

    async def _alive(self, replica: str) -> bool:
        if replica == self.me:
            return True
        got = await self._try("read", self.redis.exists(self.prefix + "alive:" + replica))
        return got is None or bool(got)  # Redis down: assume it lives (the tail waits)

    async def _beat(self) -> None:
        """Say this replica is alive, so a client following one of its calls from elsewhere learns if it dies."""
        key, ttl_ms = self.prefix + "alive:" + self.me, int(ALIVE_S * 1000)
        while True:
            await self._try("write", self.redis.set(key, b"1", px=ttl_ms))
            await anyio.sleep(ALIVE_S / 3)  # a heartbeat's period, not coordination

    # -- lifetime ----------------------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen)
                tg.start_soon(self._flush)
                tg.start_soon(self._beat)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self.redis.aclose()


def _event(fields: dict[bytes, bytes]) -> tuple[str | None, str | None, str | None, bytes]:
    """(event id, stream id, the replica that stored it, the message's JSON) of one stored event."""
    head, _, data = fields.get(b"e", b"").partition(b"\n")
    try:
        eid, sid, origin = orjson.loads(head)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None, None, None, b""
    return str(eid), str(sid), str(origin), data


def _lost(stream_id: str) -> Any:
    """The error that ends a resumed request stream whose call died with its replica. The SDK names a request's
    stream by str(id): an all-digit name was (almost always) a number."""
    rid: int | str = int(stream_id) if stream_id.isdigit() else stream_id
    error = {"jsonrpc": "2.0", "id": rid, "error": {"code": INTERNAL_ERROR, "message": LOST}}
    return jsonrpc_message_adapter.validate_python(error, by_name=False)


async def _send(fields: dict[bytes, bytes], stream_id: str, send: EventCallback) -> bool:
    """Send one replayed event if it belongs to `stream_id`; whether it was that stream's answer."""
    eid, sid, _, data = _event(fields)
    if sid != stream_id or not data or eid is None:
        return False
    message = jsonrpc_message_adapter.validate_json(data, by_name=False)
    await send(EventMessage(message, eid))
    return isinstance(message, JSONRPCResponse | JSONRPCError) and str(message.id) == stream_id


class SharedEvents(SessionEvents):
    """A session's event store when sessions are shared: this process's tail as before (a resume on the same
    replica is served from memory, as the SDK expects), each event mirrored to Redis, and a resume of an event
    this process never saw replayed from there. The GET stream's events are mirrored only by the replica the
    client's GET stream is on (or was last on), so a notification every replica sends reaches the replay once."""

    def __init__(self, shared: SharedSessions, session_id: str) -> None:
        super().__init__(prefix=os.urandom(4).hex() + ".")
        self.shared = shared
        self.session_id = session_id
        self.listening = False  # the client's GET stream is (or was last) on this replica

    async def store_event(self, stream_id: str, message: Any) -> str:
        event_id = await super().store_event(stream_id, message)
        if stream_id != GET_STREAM_KEY or self.listening:
            self.shared.mirror(self.session_id, event_id, stream_id, message)
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        if last_event_id in self._events:
            return await super().replay_events_after(last_event_id, send_callback)
        return await self.shared.replay(self.session_id, last_event_id, send_callback)


def make_shared(settings: Settings, endpoint: str) -> SharedSessions | None:
    """The endpoint's shared session state, when `mcp.sessions.shared` (or `auto` with a Redis ledger) asks."""
    cfg, budgets = settings.mcp.sessions, settings.budgets
    kind = cfg.shared
    if kind == "auto":
        kind = "redis" if budgets.ledger == "redis" else "memory"
    if kind != "redis":
        return None
    return SharedSessions(cfg.redis_url or budgets.redis_url, budgets.key_prefix, endpoint, cfg.max_age_s)
