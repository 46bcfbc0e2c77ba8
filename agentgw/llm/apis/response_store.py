"""Stored responses of the Responses API (for `previous_response_id` and `GET /v1/responses/{id}`): in this
process or in Redis, each bound to the principal that created it."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from agentgw import jsontext
from agentgw.errors import GatewayError, NotFound
from agentgw.settings import Settings

log = logging.getLogger("agentgw.llm")


@dataclass(slots=True)
class Stored:
    principal: str
    response: dict[str, Any]
    conversation: list[dict[str, Any]]  # the chat messages up to and including this response's answer
    native: bool = (
        False  # answered by a provider's own Responses API: it holds the conversation (apis/native.py)
    )


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", code="response_not_found")


class ResponseStore(Protocol):
    """Responses kept for `previous_response_id` and `GET /v1/responses/{id}`, each bound to the principal that
    created it: anyone else is told it does not exist (404 `response_not_found`)."""

    async def put(self, stored: Stored) -> None: ...

    async def get(self, response_id: str, principal: str) -> Stored: ...

    async def delete(self, response_id: str, principal: str) -> None: ...

    async def aclose(self) -> None: ...


class MemoryResponses:
    """In this process, bounded (the oldest go first)."""

    def __init__(self, size: int = 10_000, ttl_s: float = 24 * 3600.0) -> None:
        self.size, self.ttl_s = size, ttl_s
        self._items: OrderedDict[str, tuple[float, Stored]] = OrderedDict()

    async def put(self, stored: Stored) -> None:
        self._items[stored.response["id"]] = (time.monotonic(), stored)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    async def get(self, response_id: str, principal: str) -> Stored:
        found = self._items.get(response_id)
        if found is None or found[1].principal != principal or time.monotonic() - found[0] > self.ttl_s:
            raise _not_found(response_id)
        return found[1]

    async def delete(self, response_id: str, principal: str) -> None:
        await self.get(response_id, principal)
        del self._items[response_id]

    async def aclose(self) -> None:
        return None


class ResponsesUnavailable(GatewayError):
    status, code, type = 503, "responses_store_unavailable", "api_error"


class RedisResponses:
    """In Redis, shared by every worker and replica, each response under its own key with the TTL. A Redis that
    fails makes a continuation or a read fail with 503 (never a wrong answer); keeping a new response is best
    effort (logged)."""

    def __init__(self, url: str, prefix: str, ttl_s: float) -> None:
        import redis.asyncio as aioredis

        self.prefix, self.ttl_ms = prefix, max(1, int(ttl_s * 1000))
        self.redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, timeout=2))

    async def put(self, stored: Stored) -> None:
        value = jsontext.dumps(
            {"p": stored.principal, "r": stored.response, "c": stored.conversation, "n": stored.native}
        )
        try:
            await self.redis.set(self.prefix + stored.response["id"], value, px=self.ttl_ms)
        except Exception as exc:
            log.warning("a response could not be stored in Redis: %s", type(exc).__name__)

    async def get(self, response_id: str, principal: str) -> Stored:
        try:
            raw = await self.redis.get(self.prefix + response_id)
        except Exception as exc:
            raise ResponsesUnavailable(
                f"Stored responses cannot be read ({type(exc).__name__}); try again."
            ) from None
        found = jsontext.loads(raw) if isinstance(raw, bytes) else None
        if not isinstance(found, dict) or found.get("p") != principal:
            raise _not_found(response_id)
        return Stored(principal, found["r"], found["c"], bool(found.get("n")))

    async def delete(self, response_id: str, principal: str) -> None:
        await self.get(response_id, principal)
        try:
            await self.redis.delete(self.prefix + response_id)
        except Exception as exc:
            raise ResponsesUnavailable(
                f"The stored response cannot be deleted ({type(exc).__name__}); try again."
            ) from None

    async def aclose(self) -> None:
        await self.redis.aclose()


def make_responses(settings: Settings) -> ResponseStore:
    cfg, budgets = settings.llm.responses, settings.budgets
    kind = cfg.store
    if kind == "auto":
        kind = "redis" if budgets.ledger == "redis" else "memory"
    if kind == "redis":
        return RedisResponses(
            cfg.redis_url or budgets.redis_url, f"{budgets.key_prefix}:responses:", cfg.ttl_s
        )
    return MemoryResponses(cfg.max_entries, cfg.ttl_s)
