"""Provider kinds: how the plane talks to one kind of LLM API. `build_provider` picks the class by `kind`; each
kind's module is imported when a provider of that kind is built (botocore only for Bedrock), and importing this
package pulls in nothing but the protocol (base.py), so the plane's wire modules can use it without a cycle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentgw.llm.providers.base import Call, Provider, ProviderError

if TYPE_CHECKING:
    from agentgw.identity import Credentials
    from agentgw.registry import Provider as ProviderConfig
    from agentgw.upstream import UpstreamPool

__all__ = ["Call", "Provider", "ProviderError", "build_provider"]


def build_provider(
    cfg: ProviderConfig, pool: UpstreamPool, credentials: Credentials | None = None
) -> Provider:
    if cfg.kind == "mock":
        from agentgw.llm.providers.mock import MockProvider

        return MockProvider(cfg)
    if cfg.kind == "anthropic":
        from agentgw.llm.providers.anthropic import AnthropicProvider

        return AnthropicProvider(cfg, pool)
    if cfg.kind == "gemini":
        from agentgw.llm.providers.gemini import GeminiProvider

        return GeminiProvider(cfg, pool)
    if cfg.kind == "bedrock":
        from agentgw.llm.providers.bedrock import BedrockProvider

        return BedrockProvider(cfg, pool)
    from agentgw.llm.providers.openai import AzureProvider, OpenAIProvider

    if cfg.kind == "azure":
        return AzureProvider(cfg, pool, credentials)
    return OpenAIProvider(cfg, pool, credentials)
