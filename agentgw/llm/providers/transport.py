"""One POST to an LLM upstream over the shared aiohttp pool, for every HTTP provider kind: timeouts and
connection failures become retryable ProviderErrors, error statuses go through `upstream_error`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp
import orjson

from agentgw import jsontext
from agentgw.llm.providers.base import ProviderError, invalid_response, upstream_error
from agentgw.llm.sse import frame_data, frames
from agentgw.registry import Provider as ProviderConfig
from agentgw.upstream import UpstreamPool, timeout


async def post(
    pool: UpstreamPool,
    cfg: ProviderConfig,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    stream: bool,
    secrets: list[str],
) -> aiohttp.ClientResponse:
    """Send the request; return the response when its status is < 400, else raise (scrubbed)."""
    try:
        resp = await pool.session.post(
            url,
            data=data,
            headers=headers,
            timeout=timeout(cfg.timeout_s, cfg.connect_timeout_s, stream),
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
        raise upstream_error(resp.status, raw, secrets)
    return resp


async def read_all(resp: aiohttp.ClientResponse) -> bytes:
    """The whole body of a non-streaming answer; a timeout or broken read is retryable."""
    try:
        return await resp.read()
    except TimeoutError:
        resp.close()
        raise ProviderError("upstream timed out", retryable=True, timeout=True) from None
    except aiohttp.ClientError as exc:
        resp.close()
        raise ProviderError(f"upstream read failed: {type(exc).__name__}", retryable=True) from None


async def body_chunks(resp: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
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


def json_object(raw: bytes) -> dict[str, Any]:
    """A non-streaming answer's JSON object, or ProviderError(invalid)."""
    try:
        parsed = jsontext.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise invalid_response("the body is not a JSON object")
    return parsed


def expect_sse(resp: aiohttp.ClientResponse) -> None:
    """A stream was asked for: anything but `text/event-stream` is a broken answer (closed, ProviderError)."""
    kind = resp.headers.get("Content-Type", "")
    if not kind.lower().startswith("text/event-stream"):
        resp.close()
        raise invalid_response(f"a stream was asked for, the content type is {kind[:60]!r}")


class SSETranslator(Protocol):
    """Turns the `data` of each upstream SSE event into the OpenAI frames to send (`feed`), and the end of the
    body into the last ones or a ProviderError (`end`); `done` once what follows cannot change the answer."""

    @property
    def done(self) -> bool: ...

    def feed(self, data: bytes) -> list[bytes]: ...

    def end(self) -> list[bytes]: ...


async def translate_sse(translator: SSETranslator, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The OpenAI frames for an upstream SSE body, fed event by event as the bytes arrive, then
    `translator.end()`. The body is read to its end, also after `done` (Gemini's usage may follow its finish),
    so the connection goes back to the pool; once the translator is `done`, a read failure no longer matters."""
    chunks = body_chunks(resp)
    try:
        async for frame in frames(chunks):
            data = frame_data(frame)
            if data is None:
                continue
            for out in translator.feed(data):
                yield out
    except Exception:
        if not translator.done:
            raise
    finally:
        await chunks.aclose()
    for out in translator.end():
        yield out
