"""The exact response cache of chat completions (`llm.cache`): an answer kept under the normalised request and the
caller's scope (principal, role set or everyone), replayed as it came — a streamed answer as the same stream —
for its TTL, in memory or in Redis. A hit costs the caller nothing (unless `charge`) and is on the audit record.
With `mode: semantic`, an exact miss may still hit an answer to the same request in other words (semantic.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from agentgw import jsontext
from agentgw.exchange import Exchange, Result, Usage
from agentgw.llm.routing.strategies import then
from agentgw.settings import CacheSettings

if TYPE_CHECKING:
    from agentgw.llm.cache.semantic import SemanticCache
    from agentgw.llm.routing.router import Router

# Request fields that do not change the answer (how it is delivered, who is billed).
_DELIVERY = frozenset({"stream_options", "user", "metadata", "store", "service_tier"})
MAX_ENTRY_BYTES = 1024 * 1024
PROBE = "semantic_probe"  # Exchange.attrs: the semantic cache's Probe of this request, from lookup to settle


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...


class MemoryStore:
    def __init__(self, max_entries: int) -> None:
        self.max = max_entries
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        found = self._items.get(key)
        if found is None:
            return None
        if found[0] < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return found[1]

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._items[key] = (time.monotonic() + ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max:
            self._items.popitem(last=False)


class RedisStore:
    """Shared by every worker and replica on the same Redis; a Redis that fails is a miss, never an error."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, timeout=1))

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.redis.get(self.prefix + key)
        except Exception:
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        try:
            await self.redis.set(self.prefix + key, value, px=max(1, int(ttl_s * 1000)))
        except Exception:
            return

    async def aclose(self) -> None:
        await self.redis.aclose()


class ResponseCache:
    def __init__(self, cfg: CacheSettings) -> None:
        self.cfg = cfg
        self.store: Store = (
            RedisStore(cfg.redis_url, cfg.key_prefix)
            if cfg.store == "redis"
            else MemoryStore(cfg.max_entries)
        )
        self.semantic: SemanticCache | None = None
        if cfg.mode == "semantic":  # numpy and usearch are imported only by gateways that use them
            from agentgw.llm.cache.semantic import SemanticCache

            redis = self.store.redis if isinstance(self.store, RedisStore) else None
            self.semantic = SemanticCache(cfg, self.get, redis)

    def scope(self, ex: Exchange) -> str:
        """Whose answers this caller may be given: its own, its role set's, or everyone's."""
        p = ex.principal
        if self.cfg.scope == "principal":
            return "p:" + (p.subject if p is not None else "")
        if self.cfg.scope == "role":
            return "r:" + ",".join(sorted(p.roles if p is not None else ()))
        return "*"

    def key(self, ex: Exchange, model: str, payload: dict[str, Any]) -> str | None:
        """The request's cache key in the caller's scope, or None when the cache is not for it (its model, or the
        client's `Cache-Control: no-store`)."""
        if not any(fnmatch.fnmatchcase(model, m) for m in self.cfg.models):
            return None
        if "no-store" in ex.headers.get("cache-control", "").lower():
            return None
        request = {k: v for k, v in payload.items() if k not in _DELIVERY}
        canonical = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(self.scope(ex).encode() + b"\0" + canonical).hexdigest()

    def may_read(self, ex: Exchange) -> bool:
        return "no-cache" not in ex.headers.get("cache-control", "").lower()

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.store.get(key)
        if raw is None:
            return None
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return entry if isinstance(entry, dict) else None

    async def put_body(self, key: str, body: bytes, tokens: int) -> bool:
        if len(body) > MAX_ENTRY_BYTES:
            return False
        value = jsontext.dumps({"body": body.decode("utf-8", "replace"), "tokens": tokens, "at": time.time()})
        await self.store.put(key, value, self.cfg.ttl_s)
        return True

    def capture(
        self, key: str, frames: AsyncIterator[bytes], ex: Exchange | None = None
    ) -> AsyncIterator[bytes]:
        """The upstream's stream as it comes, kept once it ended with `[DONE]` (a cut or failed one is not); with
        the semantic cache, under the vector the lookup of `ex` computed too."""
        probe = ex.attrs.get(PROBE) if ex is not None and self.semantic is not None else None

        async def relay() -> AsyncIterator[bytes]:
            kept: list[bytes] = []
            size, complete = 0, False
            try:
                async for frame in frames:
                    if size <= MAX_ENTRY_BYTES:
                        kept.append(frame)
                        size += len(frame)
                    if frame.startswith(b"data: [DONE]"):
                        complete = True
                    yield frame
            finally:
                close = getattr(frames, "aclose", None)
                if close is not None:
                    await close()
            if complete and size <= MAX_ENTRY_BYTES:
                value = jsontext.dumps(
                    {
                        "frames": [f.decode("utf-8", "replace") for f in kept],
                        "tokens": stream_tokens(kept),
                        "at": time.time(),
                    }
                )
                await self.store.put(key, value, self.cfg.ttl_s)
                if probe is not None and self.semantic is not None:
                    await self.semantic.add(probe, key)

        return relay()

    async def lookup(
        self, ex: Exchange, model: str, payload: dict[str, Any], router: Router | None = None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """(the key, the kept answer or None); (None, None) when the cache is not for this request. With the
        semantic cache (and the `router` its embedding model is called through), an exact miss looks there."""
        key = self.key(ex, model, payload)
        if key is None:
            return None, None
        read = self.may_read(ex)  # `no-cache`: ask the provider, keep the new answer
        hit = await self.get(key) if read else None
        if hit is None and self.semantic is not None and router is not None:
            hit = await self.semantic.lookup(ex, router, self.scope(ex), model, payload, read)
        return key, hit

    async def settle(self, ex: Exchange, key: str, hit: dict[str, Any] | None, result: Result) -> None:
        """After the plane read the answer: say hit or miss; a hit is on the record and (unless `charge`) costs
        no tokens; a whole answer that missed is kept."""
        probe = ex.attrs.get(PROBE) if self.semantic is not None else None
        semantic = hit is not None and probe is not None and probe.entry is not None
        kind = "semantic-hit" if semantic else "hit" if hit is not None else "miss"
        result.headers = {**result.headers, "x-agentgw-cache": kind}
        if hit is None:
            if result.stream is None and result.status == 200 and result.body:
                kept = await self.put_body(key, result.body, ex.usage.total_tokens if ex.usage else 0)
                if kept and probe is not None and self.semantic is not None:
                    await self.semantic.add(probe, key)
            return
        if semantic and probe is not None and self.semantic is not None:
            self.semantic.hit(ex, probe, hit, f"cache:{self.cfg.scope}")
        else:
            saved = int(hit.get("tokens") or 0)
            ex.attrs["cache"] = {"kind": "exact", "key": key[:16], "saved": {"tokens": saved}}
            ex.decide("cache", "info", f"cache:{self.cfg.scope}", f"hit {key[:16]}, saved {saved} tokens")
        if self.cfg.charge:
            return
        if result.stream is None:
            ex.usage = Usage()
        else:
            result.stream = _free(result.stream, ex)

    async def aclose(self) -> None:
        close = getattr(self.store, "aclose", None)
        if close is not None:
            await close()


def embedding_problem(cfg: CacheSettings, models: Collection[str]) -> str | None:
    """Why the semantic cache cannot start (its embedding model is not a model alias of the registry), or None."""
    name = cfg.semantic.embedding_model
    if cfg.mode != "semantic" or name in models:
        return None
    return f"{name!r} is not a model of the registry (the semantic cache embeds requests with it)"


def cached(entry: dict[str, Any]) -> Result:
    """A kept answer as the provider's Result: the same body, or the same stream frame by frame."""
    frames = entry.get("frames")
    if isinstance(frames, list):
        return Result(stream=_replay([str(f) for f in frames]), media_type="text/event-stream")
    return Result(body=str(entry.get("body") or "").encode())


async def _replay(frames: list[str]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame.encode()


def _free(stream: AsyncIterator[bytes], ex: Exchange) -> AsyncIterator[bytes]:
    """A replayed stream after the meter: its usage is what the provider once charged, not this call's."""

    def free() -> None:
        ex.usage = Usage()

    return then(stream, free)


def stream_tokens(frames: list[bytes]) -> int:
    """The total tokens in a kept stream's usage chunk (the gateway asks every stream for one), or 0."""
    for frame in reversed(frames):
        if b'"usage"' in frame and frame.startswith(b"data: {"):
            try:
                usage = orjson.loads(frame[6:]).get("usage")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(usage, dict):
                return int(usage.get("total_tokens") or 0)
    return 0
