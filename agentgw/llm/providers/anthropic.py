"""Anthropic Messages provider (being written)."""

from __future__ import annotations

from agentgw.exchange import Result
from agentgw.llm.providers.base import Call, ProviderError
from agentgw.registry import Provider as ProviderConfig
from agentgw.upstream import UpstreamPool


class AnthropicProvider:
    def __init__(self, cfg: ProviderConfig, pool: UpstreamPool) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.pool = pool

    async def chat(self, call: Call) -> Result:
        raise ProviderError("not yet", retryable=False, status=501)

    async def embeddings(self, call: Call) -> Result:
        raise ProviderError("Anthropic has no embeddings API", retryable=False, status=400)
