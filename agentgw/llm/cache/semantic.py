"""The semantic layer of the response cache (`llm.cache.mode: semantic`): on an exact miss, the conversation's text
is embedded by the configured embedding model (through the plane's own router) and the nearest kept answer of its
partition (same scope, model and every other request field) is a hit above the model's threshold."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson
from usearch.index import Index

from agentgw import jsontext
from agentgw.exchange import Exchange, new_id
from agentgw.llm.cache.exact import _DELIVERY, PROBE
from agentgw.llm.providers import Call
from agentgw.llm.routing.router import Router
from agentgw.registry import Pricing
from agentgw.settings import CacheSettings

Vector = npt.NDArray[np.float32]
log = logging.getLogger(__name__)
# Message roles whose content is data rather than wording: it must match exactly (it stays in the partition).
_DATA_ROLES = frozenset({"tool", "function"})


@dataclass(slots=True)
class Probe:
    """One request's semantic lookup: where its answer goes (partition, vector) and what was found."""

    partition: str
    vector: Vector
    threshold: float
    pricing: Pricing | None
    embedding_tokens: int = 0  # what the embedding call cost (the gateway's, charged to no task)
    similarity: float | None = None  # of the nearest kept answer, hit or not
    entry: str | None = None  # the hit's entry id


def conversation(payload: dict[str, Any]) -> tuple[str, list[Any]]:
    """The text to embed (each message's text, role-tagged, in order) and the messages without that text, which
    the partition keeps: roles, names, tool calls, images and tool results must match exactly."""
    texts: list[str] = []
    skeleton: list[Any] = []
    for m in payload.get("messages") or ():
        if not isinstance(m, dict) or m.get("role") in _DATA_ROLES:
            skeleton.append(m)
            continue
        rest = {k: v for k, v in m.items() if k != "content"}
        content = m.get("content")
        if isinstance(content, str):
            texts.append(f"{m.get('role')}: {content}")
            rest["content"] = ""
        elif isinstance(content, list):
            words, parts = [], []
            for part in content:
                if (
                    isinstance(part, dict)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    words.append(part["text"])
                    parts.append({"type": "text"})
                else:
                    parts.append(part)
            texts.append(f"{m.get('role')}: " + "\n".join(words))
            rest["content"] = parts
        else:
            rest["content"] = content
        skeleton.append(rest)
    return "\n".join(texts), skeleton


def partition_of(scope: str, embedding_model: str, payload: dict[str, Any], skeleton: list[Any]) -> str:
    """Where a request's vector is kept and looked for: its scope and everything but its wording and delivery."""
    fields = {k: v for k, v in payload.items() if k not in _DELIVERY and k != "messages"}
    fields["messages"] = skeleton
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(f"{scope}\0{embedding_model}\0".encode() + canonical).hexdigest()


def entry_usage(entry: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens of a kept answer, from its body's or its stream's usage; (0, 0) if none."""
    usage: Any = None
    frames = entry.get("frames")
    try:
        if isinstance(frames, list):
            for frame in reversed(frames):
                if isinstance(frame, str) and '"usage"' in frame and frame.startswith("data: {"):
                    usage = orjson.loads(frame[6:]).get("usage")
                    if usage:
                        break
        else:
            usage = orjson.loads(str(entry.get("body") or "{}")).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return 0, 0
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


class VectorIndex(Protocol):
    async def nearest(self, partition: str, vector: Vector) -> tuple[str, str, float] | None:
        """(entry id, exact cache key, cosine similarity) of the nearest live vector of the partition."""
        ...

    async def add(self, partition: str, vector: Vector, entry_id: str, key: str) -> None: ...


class SemanticCache:
    def __init__(
        self,
        cfg: CacheSettings,
        get: Callable[[str], Awaitable[dict[str, Any] | None]],
        redis: Any = None,
    ) -> None:
        """`get`: the exact cache's read of a kept answer by its key (the vectors point at those answers);
        `redis`: the exact cache's Redis client when its store is Redis."""
        self.cfg, self.sem, self.get = cfg, cfg.semantic, get
        self.embedding_model = self.sem.embedding_model or ""
        s = self.sem
        index = s.index or cfg.store
        self.index: VectorIndex = (
            RedisIndex(redis, cfg.key_prefix + "sem:", s.max_entries, s.max_partitions, cfg.ttl_s)
            if index == "redis"
            else MemoryIndex(s.max_entries, s.max_partitions, cfg.ttl_s)
        )
        self._logged = 0.0

    def threshold(self, model: str) -> float:
        for glob, value in self.sem.thresholds.items():
            if fnmatch.fnmatchcase(model, glob):
                return value
        return self.sem.threshold

    async def lookup(
        self, ex: Exchange, router: Router, scope: str, model: str, payload: dict[str, Any], read: bool
    ) -> dict[str, Any] | None:
        """The kept answer of the nearest request in other words, or None (a miss). The probe stays on the
        Exchange so that settle keeps a missed answer under its vector (also when the client said `no-cache`)."""
        text, skeleton = conversation(payload)
        if not text or len(text) > self.sem.max_text_chars:
            return None
        embedded = await self.embed(ex, router, text)
        if embedded is None:
            return None
        found_model = router.models.get(model)
        probe = Probe(
            partition_of(scope, self.embedding_model, payload, skeleton),
            embedded[0],
            self.threshold(model),
            found_model.pricing if found_model is not None else None,
            embedded[1],
        )
        ex.attrs[PROBE] = probe
        if not read:
            return None
        found = await self.index.nearest(probe.partition, probe.vector)
        entry = None
        if found is not None:
            entry_id, key, probe.similarity = found
            if probe.similarity >= probe.threshold:
                entry = await self.get(key)  # None: the answer it points at expired or was evicted
                probe.entry = entry_id if entry is not None else None
        if entry is None:
            sim = round(probe.similarity, 4) if probe.similarity is not None else None
            ex.attrs["cache"] = {
                "kind": "miss",
                "similarity": sim,
                "threshold": probe.threshold,
                "embedding_tokens": probe.embedding_tokens,
            }
        return entry

    async def embed(self, ex: Exchange, router: Router, text: str) -> tuple[Vector, int] | None:
        """The text's unit vector from the embedding model and the tokens that cost, or None (logged, on the
        record) when that fails: a cache that cannot look is a miss, never an error to the client. The call is the
        gateway's own: on its own Exchange (its attempts are not the caller's) and charged to no task."""
        model = router.models.get(self.embedding_model)
        try:
            if model is None or not model.targets:
                raise LookupError(f"model {self.embedding_model!r} is not in the registry")
            sub = Exchange("llm", "embeddings", f"llm:{model.name}", {}, ex.client)
            sub.principal, sub.task = ex.principal, ex.task
            payload = {"model": model.name, "input": text}
            call = Call(sub, "embeddings", payload, jsontext.dumps(payload), model.targets[0].model)
            async with asyncio.timeout(self.sem.timeout_s):
                result = await router.call(model, call)
            body = result.payload if result.payload is not None else orjson.loads(result.body or b"")
            vector = np.asarray(body["data"][0]["embedding"], dtype=np.float32)
            usage = body.get("usage")
            tokens = int(usage.get("total_tokens") or 0) if isinstance(usage, dict) else 0
            norm = float(np.linalg.norm(vector)) if vector.ndim == 1 else 0.0
            if not norm or not np.isfinite(norm):
                raise ValueError("the embedding is not a non-zero vector")
        except Exception as exc:
            why = str(exc) or type(exc).__name__
            ex.attrs["cache"] = {"kind": "miss", "error": f"embedding failed: {why}"[:300]}
            now = time.monotonic()
            if now - self._logged > 10:  # at most one line per 10 s while the embedding model is down
                self._logged = now
                log.warning("semantic cache: embedding failed, a miss: %s: %s", type(exc).__name__, why)
            return None
        out: Vector = vector / np.float32(norm)
        return out, tokens

    async def add(self, probe: Probe, key: str) -> None:
        """A missed answer was kept under `key`: its vector points there from now on."""
        await self.index.add(probe.partition, probe.vector, new_id(8), key)

    def hit(self, ex: Exchange, probe: Probe, entry: dict[str, Any], rule: str) -> None:
        """On the record: the entry, its similarity and what it saved (tokens, and USD with registry pricing)."""
        tokens = int(entry.get("tokens") or 0)
        inp, out = entry_usage(entry)
        saved: dict[str, Any] = {"tokens": tokens, "input_tokens": inp, "output_tokens": out}
        p = probe.pricing
        if p is not None:
            saved["usd"] = round((inp * p.input_per_mtok + out * p.output_per_mtok) / 1_000_000, 9)
        sim = round(probe.similarity or 0.0, 4)
        ex.attrs["cache"] = {
            "kind": "semantic",
            "id": probe.entry,
            "similarity": sim,
            "threshold": probe.threshold,
            "saved": saved,
            "embedding_tokens": probe.embedding_tokens,
        }
        usd = f" (${saved['usd']:.6f})" if "usd" in saved else ""
        ex.decide(
            "cache", "info", rule, f"semantic hit {probe.entry}, similarity {sim}, saved {tokens} tokens{usd}"
        )


class _Partition:
    """One partition's vectors in a usearch index (cosine), oldest first in `entries`."""

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim
        self.index = Index(ndim=ndim, metric="cos", dtype="f32")
        self.entries: OrderedDict[int, tuple[float, str, str]] = OrderedDict()  # label → (expires, id, key)
        self.label = 0

    def drop_oldest(self) -> None:
        label, _ = self.entries.popitem(last=False)
        self.index.remove(label)


class MemoryIndex:
    """One usearch index per partition in this process, each bounded (the oldest out), the partitions too (the
    least recently used out); a vector lives `ttl_s`, as the answer it points at."""

    def __init__(self, max_entries: int, max_partitions: int, ttl_s: float) -> None:
        self.max_entries, self.max_partitions, self.ttl_s = max_entries, max_partitions, ttl_s
        self.parts: OrderedDict[str, _Partition] = OrderedDict()

    async def nearest(self, partition: str, vector: Vector) -> tuple[str, str, float] | None:
        part = self.parts.get(partition)
        if part is None or part.ndim != vector.size:
            return None
        self.parts.move_to_end(partition)
        now = time.monotonic()
        while part.entries and next(iter(part.entries.values()))[0] <= now:
            part.drop_oldest()
        if not part.entries:
            return None
        found = part.index.search(vector, count=1)
        if not len(found.keys):
            return None
        entry = part.entries.get(int(found.keys[0]))
        if entry is None:
            return None
        return entry[1], entry[2], 1.0 - float(found.distances[0])

    async def add(self, partition: str, vector: Vector, entry_id: str, key: str) -> None:
        part = self.parts.get(partition)
        if part is None or part.ndim != vector.size:  # new, or another embedding model's vectors
            part = self.parts[partition] = _Partition(vector.size)
            while len(self.parts) > self.max_partitions:
                self.parts.popitem(last=False)
        self.parts.move_to_end(partition)
        part.label += 1
        part.index.add(part.label, vector)
        part.entries[part.label] = (time.monotonic() + self.ttl_s, entry_id, key)
        while len(part.entries) > self.max_entries:
            part.drop_oldest()


# One Redis hash per partition: `n` (entries ever added), `e` (an epoch: the hash's creation), and entry number →
# expiry (unix s), id, exact key, float32 vector. Adding drops the entry `max_entries` before; the hash expires
# `ttl_s` after its last add. Each process keeps a copy and reads only the entries added since it last looked.
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[1], 'e', ARGV[1]) end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], tostring(n), ARGV[2])
local old = n - tonumber(ARGV[3])
if old > 0 then redis.call('HDEL', KEYS[1], tostring(old)) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return n
"""
_SINCE = """
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local e = redis.call('HGET', KEYS[1], 'e') or ''
local seen = tonumber(ARGV[1])
if e ~= ARGV[2] then seen = 0 end
local lo = math.max(seen, n - tonumber(ARGV[3])) + 1
local out = {n, e, lo}
for i = lo, n do out[#out + 1] = redis.call('HGET', KEYS[1], tostring(i)) or '' end
return out
"""
_HEAD = struct.Struct("<d16s64s")


class _Copy:
    """This process's copy of one Redis partition: entry number → (expires, id, key, vector)."""

    def __init__(self) -> None:
        self.epoch, self.seen = b"", 0
        self.rows: dict[int, tuple[float, str, str, Vector]] = {}
        self.matrix: tuple[list[int], Vector] | None = None

    def update(self, reply: list[Any], max_entries: int) -> None:
        n, epoch, lo, *values = reply
        if epoch != self.epoch:
            self.epoch, self.rows, self.matrix = epoch, {}, None
        for number, raw in enumerate(values, start=int(lo)):
            if len(raw) > _HEAD.size:
                expires, entry_id, key = _HEAD.unpack_from(raw)
                vector = np.frombuffer(raw, dtype=np.float32, offset=_HEAD.size)
                self.rows[number] = (expires, entry_id.decode(), key.decode(), vector)
                self.matrix = None
        for number in [k for k in self.rows if k <= int(n) - max_entries]:
            del self.rows[number]
            self.matrix = None
        self.seen = int(n)

    def nearest(self, vector: Vector) -> tuple[str, str, float] | None:
        now = time.time()
        for number in [k for k, row in self.rows.items() if row[0] <= now]:
            del self.rows[number]
            self.matrix = None
        if self.matrix is None:
            numbers = [k for k, row in self.rows.items() if row[3].size == vector.size]
            if not numbers:
                return None
            self.matrix = numbers, np.stack([self.rows[k][3] for k in numbers])
        numbers, matrix = self.matrix
        sims = matrix @ vector  # unit vectors: the dot product is the cosine
        best = int(np.argmax(sims))
        _, entry_id, key, _ = self.rows[numbers[best]]
        return entry_id, key, float(sims[best])


class RedisIndex:
    """Vectors in Redis shared by every replica (Redis 7 without a vector module: brute-force cosine with numpy
    over at most `max_entries` per partition). A Redis that fails is a miss, never an error."""

    def __init__(self, redis: Any, prefix: str, max_entries: int, max_partitions: int, ttl_s: float) -> None:
        self.prefix, self.ttl_s = prefix, ttl_s
        self.max_entries, self.max_partitions = max_entries, max_partitions
        self._add = redis.register_script(_ADD)
        self._since = redis.register_script(_SINCE)
        self.copies: OrderedDict[str, _Copy] = OrderedDict()

    async def nearest(self, partition: str, vector: Vector) -> tuple[str, str, float] | None:
        copy = self.copies.get(partition)
        if copy is None:
            copy = self.copies[partition] = _Copy()
            while len(self.copies) > self.max_partitions:
                self.copies.popitem(last=False)
        self.copies.move_to_end(partition)
        try:
            reply = await self._since(
                keys=[self.prefix + partition], args=[copy.seen, copy.epoch, self.max_entries]
            )
        except Exception as exc:
            log.debug("semantic cache: Redis failed, a miss: %s", exc)
            return None
        copy.update(reply, self.max_entries)
        return copy.nearest(vector)

    async def add(self, partition: str, vector: Vector, entry_id: str, key: str) -> None:
        head = _HEAD.pack(time.time() + self.ttl_s, entry_id.encode(), key.encode())
        value = head + vector.astype(np.float32).tobytes()
        args = [new_id(8), value, self.max_entries, int(self.ttl_s * 1000)]
        try:
            await self._add(keys=[self.prefix + partition], args=args)
        except Exception as exc:
            log.debug("semantic cache: Redis failed, not kept: %s", exc)
