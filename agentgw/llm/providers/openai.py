"""OpenAI-compatible providers (OpenAI, vLLM, Ollama, Groq, …) and Azure OpenAI (deployment URLs, `api-key`).

The request bytes are forwarded as they came unless the model name or stream options had to change; answers
come back as bytes (non-streaming) or as whole SSE frames (streaming).
"""

from __future__ import annotations

from agentgw.exchange import Result
from agentgw.identity import Credentials
from agentgw.llm.providers import transport
from agentgw.llm.providers.base import Call
from agentgw.llm.sse import frames
from agentgw.registry import Provider as ProviderConfig
from agentgw.upstream import BASE_HEADERS, UpstreamPool


class OpenAIProvider:
    def __init__(
        self, cfg: ProviderConfig, pool: UpstreamPool, credentials: Credentials | None = None
    ) -> None:
        self.cfg = cfg
        self.credentials = credentials  # the registry's `identity:`: per-caller headers (docs/identity.md)
        self.name = cfg.name
        self.pool = pool
        self.base = (cfg.base_url or "").rstrip("/")
        self.headers = {
            **BASE_HEADERS,
            "Content-Type": "application/json",
            **cfg.headers,
            **self.auth_headers(),
        }
        self.secrets = [s for s in (cfg.api_key, *cfg.headers.values()) if s]
        # APIs the upstream serves itself, passed through when nothing needs the chat view (apis/native.py)
        self.native_apis = frozenset({"responses"} if cfg.responses_api else ())

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cfg.api_key}"} if self.cfg.api_key else {}

    def url(self, operation: str, model: str) -> str:
        return f"{self.base}/{'chat/completions' if operation == 'chat' else 'embeddings'}"

    async def chat(self, call: Call) -> Result:
        return await self.post(call)

    async def embeddings(self, call: Call) -> Result:
        return await self.post(call)

    async def native(self, call: Call) -> Result:
        """`POST {base}/responses` with the client's own Responses request (apis/native.py)."""
        assert call.native is not None
        return await self.post(call, f"{self.base}/responses", call.native.for_model(call.model), False)

    async def post(
        self, call: Call, url: str | None = None, body: bytes | None = None, check: bool = True
    ) -> Result:
        headers = {**self.headers, **call.headers} if call.headers else self.headers
        if self.credentials is not None:  # who the caller is, as the gateway vouches for it (never its token)
            ex = call.exchange
            headers = {**headers, **await self.credentials.headers(ex.principal, ex.outbound_task)}
        resp = await transport.post(
            self.pool,
            self.cfg,
            url or self.url(call.operation, call.model),
            body if body is not None else call.body_for_upstream(),
            headers,
            stream=call.stream,
            secrets=self.secrets,
        )
        if not call.stream:
            body = await transport.read_all(resp)
            return Result(status=200, body=body, payload=transport.json_object(body))
        transport.expect_sse(resp)
        stream = frames(transport.body_chunks(resp), check_first=check)
        return Result(status=200, stream=stream, media_type="text/event-stream")


class AzureProvider(OpenAIProvider):
    """Azure OpenAI: `{base_url}/openai/deployments/{deployment}/…?api-version=…`, key in `api-key`."""

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.cfg.api_key} if self.cfg.api_key else {}

    def url(self, operation: str, model: str) -> str:
        path = "chat/completions" if operation == "chat" else "embeddings"
        return f"{self.base}/openai/deployments/{model}/{path}?api-version={self.cfg.api_version}"
