"""The Gemini provider: OpenAI chat completions and embeddings in, Gemini's native API upstream
(`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`, `:batchEmbedContents`), OpenAI answers and
`chat.completion.chunk` streams back out (the translation lives in `gemini_translate` and `gemini_response`).
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from agentgw import jsontext
from agentgw.exchange import Result
from agentgw.llm.providers import transport
from agentgw.llm.providers.base import Call, ProviderError
from agentgw.llm.providers.chat_shapes import include_usage
from agentgw.llm.providers.gemini_response import (
    StreamTranslator,
    embeddings_to_openai,
    gemini_error,
    response_to_completion,
)
from agentgw.llm.providers.gemini_translate import embeddings_request, request_to_gemini, resource
from agentgw.registry import Provider as ProviderConfig
from agentgw.upstream import BASE_HEADERS, UpstreamPool

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_VERSION = "v1beta"


def version_root(base_url: str | None, api_version: str | None) -> str:
    """`{base}/{version}`: a base URL that already ends in /v1beta or /v1 is the version root itself."""
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    if base.endswith(("/v1beta", "/v1", "/v1alpha")):
        return base
    return f"{base}/{api_version or DEFAULT_VERSION}"


class GeminiProvider:
    def __init__(self, cfg: ProviderConfig, pool: UpstreamPool) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.pool = pool
        self.root = version_root(cfg.base_url, cfg.api_version)
        # The key goes in a header, never in the URL (`?key=`), so it cannot reach an access log or a trace.
        self.headers = {**BASE_HEADERS, "Content-Type": "application/json", **cfg.headers}
        if cfg.api_key:
            self.headers["x-goog-api-key"] = cfg.api_key
        self.secrets = [s for s in (cfg.api_key, *cfg.headers.values()) if s]

    def url(self, model: str, method: str) -> str:
        return f"{self.root}/{resource(model)}:{method}"

    async def _post(self, call: Call, url: str, body: bytes) -> aiohttp.ClientResponse:
        headers: Mapping[str, str] = {**self.headers, **call.headers} if call.headers else self.headers
        try:
            return await transport.post(
                self.pool, self.cfg, url, body, headers, stream=call.stream, secrets=self.secrets
            )
        except ProviderError as err:
            raise gemini_error(err) from None

    async def chat(self, call: Call) -> Result:
        body = jsontext.dumps(request_to_gemini(call.payload, call.model))
        if call.stream:
            resp = await self._post(call, self.url(call.model, "streamGenerateContent?alt=sse"), body)
            transport.expect_sse(resp)
            translator = StreamTranslator(call.model, include_usage(call.payload), self.secrets)
            return Result(stream=transport.translate_sse(translator, resp), media_type="text/event-stream")
        resp = await self._post(call, self.url(call.model, "generateContent"), body)
        answer = transport.json_object(await transport.read_all(resp))
        completion = response_to_completion(answer, call.model)
        return Result(body=jsontext.dumps(completion), payload=completion)

    async def embeddings(self, call: Call) -> Result:
        body = jsontext.dumps(embeddings_request(call.payload, call.model))
        resp = await self._post(call, self.url(call.model, "batchEmbedContents"), body)
        answer = transport.json_object(await transport.read_all(resp))
        out = embeddings_to_openai(answer, call.payload, call.model)
        return Result(body=jsontext.dumps(out), payload=out)
