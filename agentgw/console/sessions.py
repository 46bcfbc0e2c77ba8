"""Console sessions: a signed-in principal behind an opaque cookie (HttpOnly, SameSite=Strict), with the CSRF
token every state-changing request must echo. Held in this process's memory (a restart signs everyone out), or in
Redis, where every replica finds them (`console.sessions: redis`, or `auto` with a Redis ledger)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentgw.errors import GatewayError
from agentgw.exchange import Principal

log = logging.getLogger("agentgw.console")

COOKIE = "agentgw_console"
CSRF_HEADER = "x-csrf-token"
_MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    principal: Principal
    csrf: str
    created: float
    seen: float = field(default=0.0)


class Sessions:
    """Sessions by id. `idle_s`: signed out after this long unused; `max_s`: after this long whatever happens."""

    def __init__(self, idle_s: float = 1800.0, max_s: float = 8 * 3600.0) -> None:
        self.idle_s, self.max_s = idle_s, max_s
        self._by_id: dict[str, Session] = {}

    async def create(self, principal: Principal) -> tuple[str, Session]:
        now = time.monotonic()
        if len(self._by_id) >= _MAX_SESSIONS:
            self._expire(now)
            while len(self._by_id) >= _MAX_SESSIONS:  # still full: the oldest goes
                del self._by_id[next(iter(self._by_id))]
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), now, now)
        self._by_id[sid] = session
        return sid, session

    async def get(self, sid: str | None) -> Session | None:
        """The live session `sid` names (its idle clock restarted), or None."""
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > self.idle_s or now - session.created > self.max_s:
            del self._by_id[sid]
            return None
        session.seen = now
        return session

    async def end(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    async def aclose(self) -> None:
        return None

    def _expire(self, now: float) -> None:
        for sid, s in list(self._by_id.items()):
            if now - s.seen > self.idle_s or now - s.created > self.max_s:
                del self._by_id[sid]


class RedisSessions(Sessions):
    """Sessions every replica reads: `<prefix>:console:<digest of the id>` (the id itself, the cookie's value, is
    never a key) holding the principal, the CSRF token and when it was signed in; its expiry is the idle time,
    renewed on each use. Fails closed: with Redis down nobody is signed in (503 on sign-in)."""

    def __init__(self, url: str, prefix: str, idle_s: float = 1800.0, max_s: float = 8 * 3600.0) -> None:
        super().__init__(idle_s, max_s)
        import redis.asyncio as aioredis  # only deployments that share sessions import the client

        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=16, timeout=2, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self.redis: Any = aioredis.Redis(connection_pool=pool)
        self.prefix = f"{prefix}:console:"
        self.idle_ms = max(1000, int(idle_s * 1000))

    def _key(self, sid: str) -> str:
        return self.prefix + hashlib.sha256(sid.encode("latin-1")).hexdigest()[:40]

    async def _call(self, op: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await op
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("console sessions: Redis failed (%s)", type(exc).__name__)
            raise GatewayError(
                "Console sessions are unavailable; try again later.", status=503, code="unavailable"
            ) from exc

    async def create(self, principal: Principal) -> tuple[str, Session]:
        sid, now = secrets.token_urlsafe(32), time.time()
        session = Session(principal, secrets.token_urlsafe(32), now, now)
        p = principal
        data = {"s": p.subject, "r": list(p.roles), "a": p.auth, "k": p.key_id, "c": dict(p.claims)}
        body = orjson.dumps({"p": data, "x": session.csrf, "t": now}, default=str)
        await self._call(self.redis.set(self._key(sid), body, px=self.idle_ms))
        return sid, session

    async def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(self._key(sid))
            pipe.pexpire(self._key(sid), self.idle_ms)
            raw, _ = await self._call(pipe.execute())
        except GatewayError:
            return None  # fail closed: not signed in
        if raw is None:
            return None
        try:
            got = orjson.loads(raw)
            p = got["p"]
            principal = Principal(p["s"], tuple(p["r"]), p["a"], p["k"], p["c"])
            created = float(got["t"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        now = time.time()
        if now - created > self.max_s:
            await self.end(sid)
            return None
        return Session(principal, str(got["x"]), created, now)

    async def end(self, sid: str | None) -> None:
        if sid:
            await self._call(self.redis.delete(self._key(sid)))

    async def aclose(self) -> None:
        await self.redis.aclose()


def make_sessions(settings: Any) -> Sessions:
    """The console's sessions, in memory or in Redis as `console.sessions` (with `auto`: the ledger's) says."""
    c, budgets = settings.console, settings.budgets
    kind = c.sessions
    if kind == "auto":
        kind = "redis" if budgets.ledger == "redis" else "memory"
    if kind == "redis":
        url = c.redis_url or budgets.redis_url
        return RedisSessions(url, budgets.key_prefix, c.session_idle_s, c.session_max_s)
    return Sessions(c.session_idle_s, c.session_max_s)


def cookie_value(headers: dict[str, str], name: str = COOKIE) -> str | None:
    """The value of cookie `name` in a request's Cookie header, or None."""
    raw = headers.get("cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip() or None
    return None


def csrf_ok(session: Session, headers: dict[str, str]) -> bool:
    """Whether a state-changing request carries the session's CSRF token (a cross-site form cannot set it)."""
    given = headers.get(CSRF_HEADER, "")
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())
