"""The Anthropic Messages provider: OpenAI chat completions in, `POST /v1/messages` upstream, OpenAI answers and
`chat.completion.chunk` streams back out (the translation itself lives in `anthropic_translate`).
"""

from __future__ import annotations

from agentgw import jsontext
from agentgw.exchange import Result
from agentgw.llm.providers import transport
from agentgw.llm.providers.anthropic_translate import (
    StreamTranslator,
    message_to_completion,
    request_to_messages,
)
from agentgw.llm.providers.base import Call, ProviderError, upstream_error
from agentgw.llm.providers.chat_shapes import include_usage
from agentgw.llm.sse import frames
from agentgw.registry import Provider as ProviderConfig
from agentgw.upstream import BASE_HEADERS, UpstreamPool

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"


class AnthropicProvider:
    def __init__(self, cfg: ProviderConfig, pool: UpstreamPool) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.pool = pool
        base = (cfg.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        self.headers = {
            **BASE_HEADERS,
            "Content-Type": "application/json",
            "anthropic-version": cfg.api_version or DEFAULT_VERSION,
            **cfg.headers,
        }
        if cfg.api_key:
            self.headers["x-api-key"] = cfg.api_key
        self.secrets = [s for s in (cfg.api_key, *cfg.headers.values()) if s]
        self.native_apis = frozenset({"messages"})  # passed through when nothing needs the chat view

    async def native(self, call: Call) -> Result:
        """The client's own Messages request, as it came but for the model; the answer as Anthropic sent it."""
        assert call.native is not None
        headers = {**self.headers, **call.headers} if call.headers else self.headers
        beta = call.exchange.headers.get("anthropic-beta")
        if beta:  # the client's opt-in to beta features is part of its request
            headers = {**headers, "anthropic-beta": beta}
        body = call.native.for_model(call.model)
        resp = await transport.post(
            self.pool, self.cfg, self.url, body, headers, stream=call.stream, secrets=self.secrets
        )
        if call.stream:
            transport.expect_sse(resp)
            return Result(stream=frames(transport.body_chunks(resp)), media_type="text/event-stream")
        raw = await transport.read_all(resp)
        msg = transport.json_object(raw)
        if msg.get("type") == "error":
            raise upstream_error(502, raw, self.secrets)
        return Result(body=raw, payload=msg)

    async def chat(self, call: Call) -> Result:
        body = jsontext.dumps(request_to_messages(call.payload, call.model))
        headers = {**self.headers, **call.headers} if call.headers else self.headers
        resp = await transport.post(
            self.pool, self.cfg, self.url, body, headers, stream=call.stream, secrets=self.secrets
        )
        if call.stream:
            transport.expect_sse(resp)
            translator = StreamTranslator(call.model, include_usage(call.payload), self.secrets)
            return Result(stream=transport.translate_sse(translator, resp), media_type="text/event-stream")
        raw = await transport.read_all(resp)
        msg = transport.json_object(raw)
        if msg.get("type") == "error":
            raise upstream_error(502, raw, self.secrets)
        return Result(body=jsontext.dumps(message_to_completion(msg, call.model)))

    async def embeddings(self, call: Call) -> Result:
        raise ProviderError(
            f"Provider '{self.name}' is Anthropic, which has no embeddings API; "
            "route embeddings models to an OpenAI-compatible provider.",
            status=400,
            retryable=False,
            body={
                "message": "Anthropic has no embeddings API.",
                "type": "invalid_request_error",
                "code": "embeddings_not_supported",
            },
        )
