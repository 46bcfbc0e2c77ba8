"""Provider kinds: how the plane talks to one kind of LLM API. `build_provider` picks the class by `kind`."""

from __future__ import annotations

from agentgw.identity import Credentials
from agentgw.llm.providers.anthropic import AnthropicProvider
from agentgw.llm.providers.base import Call, Provider, ProviderError
from agentgw.llm.providers.mock import MockProvider
from agentgw.llm.providers.openai import AzureProvider, OpenAIProvider
from agentgw.registry import Provider as ProviderConfig
from agentgw.upstream import UpstreamPool

__all__ = ["Call", "Provider", "ProviderError", "build_provider"]


def build_provider(
    cfg: ProviderConfig, pool: UpstreamPool, credentials: Credentials | None = None
) -> Provider:
    if cfg.kind == "mock":
        return MockProvider(cfg)
    if cfg.kind == "anthropic":
        return AnthropicProvider(cfg, pool)
    if cfg.kind == "gemini":
        from agentgw.llm.providers.gemini import GeminiProvider

        return GeminiProvider(cfg, pool)
    if cfg.kind == "bedrock":  # botocore (its SigV4 signer and event-stream parser) is imported only here
        from agentgw.llm.providers.bedrock import BedrockProvider

        return BedrockProvider(cfg, pool)
    if cfg.kind == "azure":
        return AzureProvider(cfg, pool, credentials)
    return OpenAIProvider(cfg, pool, credentials)
