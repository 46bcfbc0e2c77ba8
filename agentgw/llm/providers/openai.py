"""OpenAI-compatible providers (OpenAI, vLLM, Ollama, Groq, …) and Azure OpenAI (deployment URLs, `api-key`).

The request bytes are forwarded as they came unless the model name or stream options had to change; answers
come back as bytes (non-streaming) or as whole SSE frames (streaming).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from agentgw.exchange import Result
from agentgw.llm.providers.base import Call, ProviderError, upstream_error
from agentgw.llm.sse import frames
from agentgw.registry import Provider as ProviderConfig
from agentgw.upstream import UpstreamPool, timeout


class OpenAIProvider:
    def __init__(self, cfg: ProviderConfig, pool: UpstreamPool) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.pool = pool
        self.base = (cfg.base_url or "").rstrip("/")
        self.headers = {"Content-Type": "application/json", **cfg.headers, **self.auth_headers()}
        self.secrets = [s for s in (cfg.api_key, *cfg.headers.values()) if s]

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cfg.api_key}"} if self.cfg.api_key else {}

    def url(self, operation: str, model: str) -> str:
        return f"{self.base}/{'chat/completions' if operation == 'chat' else 'embeddings'}"

    async def chat(self, call: Call) -> Result:
        return await self.post(call)

    async def embeddings(self, call: Call) -> Result:
        return await self.post(call)

    async def post(self, call: Call) -> Result:
        headers = {**self.headers, **call.headers} if call.headers else self.headers
        try:
            resp = await self.pool.session.post(
                self.url(call.operation, call.model),
                data=call.body_for_upstream(),
                headers=headers,
                timeout=timeout(self.cfg.timeout_s, self.cfg.connect_timeout_s, call.stream),
            )
        except TimeoutError:
            raise ProviderError("upstream timed out", retryable=True, timeout=True) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(f"upstream connection failed: {type(exc).__name__}", retryable=True) from None
        if resp.status >= 400:
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                raw = b""
            finally:
                resp.release()
            raise upstream_error(resp.status, raw, self.secrets)
        if not call.stream:
            try:
                body = await resp.read()
            except TimeoutError:
                resp.close()
                raise ProviderError("upstream timed out", retryable=True, timeout=True) from None
            except aiohttp.ClientError as exc:
                resp.close()
                raise ProviderError(f"upstream read failed: {type(exc).__name__}", retryable=True) from None
            return Result(status=200, body=body)
        return Result(status=200, stream=frames(_body(resp)), media_type="text/event-stream")


async def _body(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The response body as it arrives; closes the connection (the upstream sees it) unless fully read."""
    complete = False
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
        complete = True
    finally:
        if complete:
            resp.release()
        else:
            resp.close()


class AzureProvider(OpenAIProvider):
    """Azure OpenAI: `{base_url}/openai/deployments/{deployment}/…?api-version=…`, key in `api-key`."""

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.cfg.api_key} if self.cfg.api_key else {}

    def url(self, operation: str, model: str) -> str:
        path = "chat/completions" if operation == "chat" else "embeddings"
        return f"{self.base}/openai/deployments/{model}/{path}?api-version={self.cfg.api_version}"
