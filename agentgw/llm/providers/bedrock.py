"""The AWS Bedrock provider: OpenAI chat completions in, Converse / ConverseStream upstream (SigV4-signed by
botocore's signer, sent on the shared aiohttp pool), OpenAI answers and chunk streams out (translation in
`bedrock_translate` and `bedrock_stream`). Owns the AWS credentials: explicit, or botocore's default chain."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from yarl import URL

from agentgw import jsontext
from agentgw.exchange import Result
from agentgw.llm.providers import transport
from agentgw.llm.providers.base import Call, ProviderError, invalid_response
from agentgw.llm.providers.bedrock_stream import StreamTranslator, translate
from agentgw.llm.providers.bedrock_translate import (
    bedrock_error,
    converse_to_completion,
    error_message,
    request_to_converse,
)
from agentgw.llm.providers.chat_shapes import include_usage
from agentgw.registry import Provider as ProviderConfig
from agentgw.upstream import BASE_HEADERS, UpstreamPool

SERVICE = "bedrock"  # the SigV4 signing name of bedrock-runtime (its service model's `signingName`)
EVENT_STREAM = "application/vnd.amazon.eventstream"
RESOLVE_RETRY_S = 30.0

# botocore's signer logs the canonical request, the string to sign and the signature at DEBUG: never those,
# even when the gateway runs with DEBUG logging (the secret key itself is never logged by botocore).
logging.getLogger("botocore.auth").setLevel(logging.INFO)


def default_credentials(region: str) -> Any:
    """botocore's default credential chain (environment, shared config and credentials files, SSO, web
    identity, container and instance metadata), as a session resolves it. Blocking: run in a worker thread."""
    session = botocore.session.get_session()
    session.set_config_variable("region", region)
    return session.get_credentials()


class BedrockProvider:
    """Credentials: the registry's `aws_access_key_id` / `aws_secret_access_key` (/ `aws_session_token`) when
    set; else botocore's default chain, resolved once, lazily (the first call resolves it in a worker thread,
    never at import or construction, never per request; if it finds nothing, again at most every
    RESOLVE_RETRY_S).
    Refreshable credentials (assumed roles, SSO, instance roles) are refreshed by botocore in a worker thread
    when they near expiry; otherwise signing does no I/O."""

    def __init__(self, cfg: ProviderConfig, pool: UpstreamPool) -> None:
        if not cfg.region:
            raise ValueError(f"provider {cfg.name!r} (kind bedrock) needs region")
        if bool(cfg.aws_access_key_id) != bool(cfg.aws_secret_access_key):
            raise ValueError(
                f"provider {cfg.name!r}: set aws_access_key_id and aws_secret_access_key together"
            )
        self.name = cfg.name
        self.cfg = cfg
        self.pool = pool
        self.region = cfg.region
        self.base = (cfg.base_url or f"https://bedrock-runtime.{cfg.region}.amazonaws.com").rstrip("/")
        self._credentials: Any = None
        self._retry_at = 0.0
        self._failure = ""
        if cfg.aws_access_key_id and cfg.aws_secret_access_key:
            self._credentials = Credentials(
                cfg.aws_access_key_id, cfg.aws_secret_access_key, cfg.aws_session_token or None
            )
        self._lock = asyncio.Lock()
        self._urls: dict[tuple[str, str], tuple[str, str]] = {}
        self._secrets = [
            s for s in (cfg.aws_secret_access_key, cfg.aws_session_token, *cfg.headers.values()) if s
        ]

    # -- credentials and signing ---------------------------------------------------------------------------

    async def _frozen(self) -> Any:
        """This call's credentials (access_key, secret_key, token)."""
        if self._credentials is None:
            await self._resolve()
        creds = self._credentials
        if creds is None:
            raise ProviderError(
                f"Provider '{self.name}' has no AWS credentials ({self._failure}): set aws_access_key_id and "
                "aws_secret_access_key, or provide them to botocore's default chain (AWS_* environment "
                "variables, a profile, an instance role).",
                retryable=True,
            )
        refresh_needed = getattr(creds, "refresh_needed", None)
        if refresh_needed is None or not refresh_needed():
            return creds.get_frozen_credentials()  # no I/O
        async with (
            self._lock
        ):  # one refresh at a time; botocore's refresh is blocking I/O: in a worker thread
            try:
                return await asyncio.to_thread(creds.get_frozen_credentials)
            except Exception as exc:
                raise ProviderError(
                    f"Provider '{self.name}' could not refresh its AWS credentials ({type(exc).__name__})",
                    retryable=True,
                ) from None

    async def _resolve(self) -> None:
        """botocore's default chain, once; a chain that found nothing (instance metadata can time out) is
        asked again after RESOLVE_RETRY_S, never more often."""
        async with self._lock:
            if self._credentials is not None or time.monotonic() < self._retry_at:
                return
            try:
                self._credentials = await asyncio.to_thread(default_credentials, self.region)
                self._failure = "the default chain found none"
            except Exception as exc:  # a broken profile, an unreachable SSO or STS endpoint
                self._failure = f"the default chain failed: {type(exc).__name__}"
            if self._credentials is None:
                self._retry_at = time.monotonic() + RESOLVE_RETRY_S

    def _url(self, model: str, action: str) -> tuple[str, str]:
        """The URL exactly as aiohttp sends it (yarl's normal form: what gets signed) and its Host header."""
        hit = self._urls.get((model, action))
        if hit is None:
            url = URL(f"{self.base}/model/{quote(model, safe='')}/{action}")
            hit = (str(url), url.host_port_subcomponent or "")
            if len(self._urls) < 1024:
                self._urls[(model, action)] = hit
        return hit

    def _sign(self, frozen: Any, url: str, host: str, body: bytes) -> dict[str, str]:
        """The signed headers for one POST of `body` to `url`: Host, Content-Type, the configured headers,
        X-Amz-Date, X-Amz-Security-Token (temporary credentials) and Authorization."""
        request = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={"Host": host, "Content-Type": "application/json", **self.cfg.headers},
        )
        SigV4Auth(frozen, SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())

    async def _post(
        self, call: Call, action: str, body: bytes, stream: bool
    ) -> tuple[aiohttp.ClientResponse, list[str]]:
        frozen = await self._frozen()
        secrets = [*self._secrets, frozen.secret_key, *([frozen.token] if frozen.token else [])]
        url, host = self._url(call.model, action)
        headers = {**BASE_HEADERS, **call.headers, **self._sign(frozen, url, host, body)}
        try:
            resp = await transport.post(
                self.pool, self.cfg, url, body, headers, stream=stream, secrets=secrets
            )
        except ProviderError as err:
            if err.status is None:  # timeout or connection failure: as it is
                raise
            message, kind = error_message(err.body)
            raise bedrock_error(err.status, message or err.message, kind, secrets) from None
        return resp, secrets

    # -- chat ----------------------------------------------------------------------------------------------

    async def chat(self, call: Call) -> Result:
        body = jsontext.dumps(request_to_converse(call.payload))
        action = "converse-stream" if call.stream else "converse"
        resp, secrets = await self._post(call, action, body, call.stream)
        request_id = resp.headers.get("x-amzn-RequestId")
        completion_id = f"chatcmpl-{request_id}" if request_id else "chatcmpl-bedrock"
        if call.stream:
            kind = resp.headers.get("Content-Type", "")
            if not kind.lower().startswith(EVENT_STREAM):
                resp.close()
                raise invalid_response(f"a stream was asked for, the content type is {kind[:60]!r}")
            translator = StreamTranslator(call.model, include_usage(call.payload), secrets, completion_id)
            return Result(stream=translate(translator, resp), media_type="text/event-stream")
        answer = transport.json_object(await transport.read_all(resp))
        return Result(body=jsontext.dumps(converse_to_completion(answer, call.model, completion_id)))

    # -- embeddings (Titan text embeddings through InvokeModel) --------------------------------------------

    async def embeddings(self, call: Call) -> Result:
        if "titan-embed-text" not in call.model:
            raise ProviderError(
                f"Provider '{self.name}' is Bedrock: embeddings are served for Amazon Titan text embedding "
                f"models only, not {call.model!r}; route other embeddings models to an OpenAI-compatible "
                "provider.",
                status=400,
                retryable=False,
                body={
                    "message": "Bedrock embeddings are served for Titan text embedding models only.",
                    "type": "invalid_request_error",
                    "code": "embeddings_not_supported",
                },
            )
        raw = call.payload.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise ProviderError(
                "Titan embeddings take a non-empty string or an array of non-empty strings as input.",
                status=400,
                retryable=False,
                body={
                    "message": "input must be text for Titan.",
                    "type": "invalid_request_error",
                    "code": "unsupported",
                },
            )
        dims = call.payload.get("dimensions")
        answers = await asyncio.gather(*(self._embed(call, t, dims) for t in texts))
        as_base64 = call.payload.get("encoding_format") == "base64"
        data, tokens = [], 0
        for index, (vector, count) in enumerate(answers):
            tokens += count
            value: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": value})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return Result(
            body=jsontext.dumps({"object": "list", "data": data, "model": call.model, "usage": usage})
        )

    async def _embed(self, call: Call, text: str, dims: Any) -> tuple[list[float], int]:
        request: dict[str, Any] = {"inputText": text}
        if isinstance(dims, int) and not isinstance(dims, bool):
            request["dimensions"] = dims
        resp, _ = await self._post(call, "invoke", jsontext.dumps(request), False)
        answer = transport.json_object(await transport.read_all(resp))
        vector, count = answer.get("embedding"), answer.get("inputTextTokenCount")
        if not isinstance(vector, list) or not all(isinstance(v, int | float) for v in vector):
            raise invalid_response("the Titan answer has no embedding")
        return [float(v) for v in vector], count if isinstance(count, int) else 0
