"""Pooled upstream HTTP for the LLM and A2A planes: one aiohttp ClientSession per process, keep-alive pools.

Owns the session's lifetime (opened in the app lifespan, closed on shutdown) and the timeout policy. Callers
stream response bodies as bytes and close the response on any abnormal exit, so the upstream sees a disconnect.
"""

from __future__ import annotations

import functools

import aiohttp

from agentgw.settings import Upstream as UpstreamSettings


class UpstreamPool:
    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.pool_size,
            limit_per_host=self.settings.pool_per_host,
            ttl_dns_cache=300,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,  # no proxy from the environment: upstreams come only from the registry
        )

    @property
    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("upstream pool not started")
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# Sent on every upstream request: identity bodies (the gateway meters and relays the bytes as they are) and
# a fixed User-Agent. Set here rather than left to aiohttp's auto headers, whose skip list is a slow path.
BASE_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "agentgw"}


@functools.lru_cache(maxsize=256)
def timeout(total_s: float, connect_s: float, stream: bool) -> aiohttp.ClientTimeout:
    """Non-streaming: `total_s` bounds the whole call. Streaming: it bounds each read (first byte and gaps).
    Cached: the same few values serve every request."""
    if stream:
        return aiohttp.ClientTimeout(total=None, connect=connect_s, sock_read=total_s)
    return aiohttp.ClientTimeout(total=total_s, connect=connect_s)
