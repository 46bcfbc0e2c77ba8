"""Task ownership: which principal created each A2A task id and context id, per agent, so no other principal can
read, cancel, subscribe to or list it. In this process's memory (bounded, with a TTL), or in Redis when replicas
share it. First binder wins and a binding is never moved; an unreachable Redis fails closed (503)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agentgw.errors import Unavailable

if TYPE_CHECKING:
    from agentgw.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 200_000  # ~50 MB of ids at most; the oldest binding goes first past it


class OwnershipUnavailable(Unavailable):
    """The shared store cannot answer: the plane refuses the call rather than serve an unbound task."""

    code = "ownership_unavailable"


class Ownership(Protocol):
    async def bind(
        self, owner: str, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> bool:
        """Bind the given ids that are not bound yet to `owner`, all or none: True when every given id is now
        `owner`'s (their TTL refreshed), False (nothing written) when one already belongs to someone else."""
        ...

    async def owner(
        self, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> str | None:
        """The principal that owns every given id; None when one is unbound or they belong to different ones."""
        ...

    async def owners(self, agent: str, task_ids: Sequence[str]) -> dict[str, str | None]:
        """The owner of each task id (None: unbound), in one round trip."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def _ids(task_id: str | None, context_id: str | None) -> list[tuple[str, str]]:
    """The (kind, id) pairs asked about: tasks and contexts are separate name spaces of an agent."""
    ids = [("t", task_id)] if task_id is not None else []
    if context_id is not None:
        ids.append(("c", context_id))
    return ids


def _common(found: Sequence[str | None]) -> str | None:
    first = found[0]
    return first if first is not None and all(f == first for f in found) else None


class MemoryOwnership:
    """One process's bindings: an insertion-ordered map where a (re)bind moves its entry to the end, so with one
    TTL for all the front is always the next to expire and, past `max_entries`, the oldest to evict."""

    def __init__(
        self,
        ttl_s: float = 7 * 86400.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._map: OrderedDict[tuple[str, str, str], tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._map)

    def _purge(self, now: float) -> None:
        while self._map:
            _, (_, expires) = next(iter(self._map.items()))
            if expires > now:
                return
            self._map.popitem(last=False)

    def _get(self, key: tuple[str, str, str], now: float) -> str | None:
        got = self._map.get(key)
        return got[0] if got is not None and got[1] > now else None

    async def bind(
        self, owner: str, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> bool:
        now = self.clock()
        self._purge(now)
        keys = [(agent, kind, ident) for kind, ident in _ids(task_id, context_id)]
        if any(self._get(k, now) not in (None, owner) for k in keys):
            return False
        for k in keys:
            self._map[k] = (owner, now + self.ttl)
            self._map.move_to_end(k)
        while len(self._map) > self.max_entries:
            self._map.popitem(last=False)
        return True

    async def owner(
        self, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> str | None:
        ids = _ids(task_id, context_id)
        if not ids:
            raise ValueError("owner() needs a task_id or a context_id")
        now = self.clock()
        return _common([self._get((agent, kind, ident), now) for kind, ident in ids])

    async def owners(self, agent: str, task_ids: Sequence[str]) -> dict[str, str | None]:
        now = self.clock()
        return {t: self._get((agent, "t", t), now) for t in task_ids}

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self._map.clear()


# KEYS: the ids' keys. ARGV: owner, TTL in ms. One script, so a task and its context are bound together or not
# at all, and two replicas binding the same id at once cannot both win.
_BIND = """
for _, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held and held ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
return 1
"""


class RedisOwnership:
    """Bindings shared by every replica: `<prefix>t:<n>:<agent>:<task id>` and `<prefix>c:<n>:<agent>:<context
    id>` string keys holding the owner, with an expiry (`n` is the agent name's length, so no agent name or id
    can be read as another pair)."""

    def __init__(
        self, url: str, prefix: str = "agentgw:a2a:", ttl_s: float = 7 * 86400.0, max_connections: int = 32
    ) -> None:
        import redis.asyncio as aioredis  # only deployments that use Redis import its client

        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5,
            decode_responses=True,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=30,
        )
        self.client: Any = aioredis.Redis(connection_pool=pool)
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._bind = self.client.register_script(_BIND)

    def key(self, agent: str, kind: str, ident: str) -> str:
        return f"{self.prefix}{kind}:{len(agent)}:{agent}:{ident}"

    async def _call(self, what: str, op: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await op
        except (RedisError, OSError, TimeoutError) as exc:
            # The cause stays in the log: a Redis URL or error text is nothing to show a caller.
            log.warning("a2a ownership: Redis %s failed: %s", what, type(exc).__name__)
            raise OwnershipUnavailable("Task ownership is unavailable; try again later.") from exc

    async def bind(
        self, owner: str, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> bool:
        keys = [self.key(agent, kind, ident) for kind, ident in _ids(task_id, context_id)]
        if not keys:
            return True
        got = await self._call("bind", self._bind(keys=keys, args=[owner, self.ttl_ms]))
        return int(got) == 1

    async def owner(
        self, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> str | None:
        ids = _ids(task_id, context_id)
        if not ids:
            raise ValueError("owner() needs a task_id or a context_id")
        found = await self._call("read", self.client.mget([self.key(agent, k, i) for k, i in ids]))
        return _common(found)

    async def owners(self, agent: str, task_ids: Sequence[str]) -> dict[str, str | None]:
        if not task_ids:
            return {}
        found = await self._call("read", self.client.mget([self.key(agent, "t", t) for t in task_ids]))
        return dict(zip(task_ids, found, strict=True))

    async def start(self) -> None:
        """Load the script now if Redis answers; if it does not, calls fail closed until it does."""
        with contextlib.suppress(OwnershipUnavailable):
            await self._call("script load", self.client.script_load(_BIND))

    async def aclose(self) -> None:
        await self.client.aclose()


def make_ownership(settings: Settings) -> Ownership:
    cfg, budgets = settings.a2a, settings.budgets
    kind = cfg.ownership
    if kind == "auto":
        kind = "redis" if budgets.ledger == "redis" else "memory"
    if kind == "redis":
        return RedisOwnership(
            cfg.redis_url or budgets.redis_url, f"{budgets.key_prefix}:a2a:", cfg.ownership_ttl_s
        )
    return MemoryOwnership(cfg.ownership_ttl_s)
