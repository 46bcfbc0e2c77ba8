"""Server-sent events as bytes: split a byte stream into whole frames (agentgw.sse), check that an upstream's
answer is what the API promises, and meter OpenAI chat chunk streams.

Frames are relayed as the upstream sent them; only the routing view (usage, content for estimates) is parsed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from agentgw import jsontext
from agentgw.errors import GatewayError, UpstreamError, UpstreamInvalidResponse
from agentgw.exchange import Exchange, Usage
from agentgw.llm.errors import error_body
from agentgw.llm.providers.base import ProviderError, invalid_response
from agentgw.llm.usage import estimate, usage_from_openai
from agentgw.sse import SSEDecoder, SSEError
from agentgw.tokens import count_tokens

if TYPE_CHECKING:
    from agentgw.llm.mediation.guard_stream import ChatContentGuard
    from agentgw.llm.mediation.tool_stream import ToolCallGuard

DONE = b"data: [DONE]\n\n"


async def frames(chunks: AsyncIterator[bytes], *, check_first: bool = False) -> AsyncIterator[bytes]:
    """Whole SSE blocks (line endings normalised, each ending in a blank line) from arbitrary byte chunks, by the
    WHATWG rules (agentgw.sse): an unfinished block at the end of the stream is dropped. With `check_first`
    (OpenAI chunk streams) the first message must be a JSON object or `[DONE]`: it is read before the stream
    is committed, so a broken stream still gets a 502; later ones are checked by the meter, which parses them
    anyway."""
    decoder = SSEDecoder()
    try:
        async for chunk in chunks:
            for event in decoder.feed(chunk):
                if check_first and event.data:
                    check_first = False
                    _check_json(event.data)
                yield event.raw
    except SSEError as exc:
        raise invalid_response(str(exc)) from None
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _check_json(data: bytes) -> None:
    if data == b"[DONE]":
        return
    try:
        ok = isinstance(orjson.loads(data), dict)
    except orjson.JSONDecodeError:
        ok = False
    if not ok:
        raise invalid_response("a stream frame is not a JSON object")


def frame_data(frame: bytes) -> bytes | None:
    """The `data` of one block from `frames` (multi-line data joined), or None when it has no data field
    (comments, a lone `event`, `id` or `retry`)."""
    if frame.startswith(b"data: ") and frame.count(b"\n") == 2:  # the common case: one data line
        return frame[6:-2]
    events = SSEDecoder().feed(frame)
    return events[0].data if events else None


STREAM_FAILURES = (ProviderError, aiohttp.ClientError, TimeoutError)  # an upstream stream that broke mid-way


def stream_failure(exc: BaseException) -> GatewayError:
    """The client's error for an upstream stream that broke after it was committed (502, invalid or not)."""
    if isinstance(exc, ProviderError):
        return UpstreamInvalidResponse(exc.message) if exc.invalid else UpstreamError(exc.message)
    return UpstreamError(f"upstream stream failed: {type(exc).__name__}")


def _comments_only(frame: bytes) -> bool:
    return all(line.startswith(b":") for line in frame.rstrip(b"\n").split(b"\n"))


class ChatStreamMeter:
    """Reads usage (or gathers text for an estimate) from OpenAI `chat.completion.chunk` frames and drops the
    usage chunk the gateway asked for when the client did not."""

    def __init__(
        self,
        ex: Exchange,
        payload: dict[str, Any],
        strip_usage: bool,
        guard: ToolCallGuard | None = None,
        content: ChatContentGuard | None = None,
    ) -> None:
        self.ex = ex
        self.content = (
            content  # guardrails on this answer's text (agentgw/llm/mediation/guard_stream.py), else None
        )
        self.guard = guard  # llm.tool_policy on: tool calls are held until decided (agentgw/llm/mediation/tool_stream.py)
        self.payload = payload
        self.strip_usage = strip_usage
        self.usage: Usage | None = None
        self.text: list[str] = []
        self.done = False
        # Live metering (only when a budget watches this stream): output tokens so far, for a mid-stream cut.
        self.live = "stream_budget" in ex.attrs
        self.out_tokens = 0
        self.head: dict[str, Any] = {}  # id/created/model of the stream, for a clean final chunk
        self.model: str | None = None  # the model the upstream says answered
        if self.live:
            ex.attrs["cut_tail"] = self.cut_tail

    def cut_tail(self) -> bytes:
        """The clean end of a stream cut by the gateway: a last chunk with finish_reason "length", the usage
        chunk if the client asked for one (estimated), then [DONE]."""
        base = {
            "id": self.head.get("id", "chatcmpl-agentgw"),
            "object": "chat.completion.chunk",
            "created": self.head.get("created", 0),
            "model": self.head.get("model", self.payload.get("model")),
        }
        out = b"data: " + jsontext.dumps(
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        )
        out += b"\n\n"
        if not self.strip_usage and (self.payload.get("stream_options") or {}).get("include_usage"):
            u = self.final_usage()
            usage = {
                "prompt_tokens": u.input_tokens,
                "completion_tokens": u.output_tokens,
                "total_tokens": u.total_tokens,
            }
            out += b"data: " + jsontext.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
        return out + DONE

    def feed(self, frame: bytes) -> bytes | None:
        data = frame_data(frame)
        if not data:
            # Relayed: chunks and keep-alive comments. A block without a message (a lone `id` or `retry`, empty
            # data: a priming event) is dropped: OpenAI clients decode any such block as a chunk, and fail.
            return frame if data is None and _comments_only(frame) else None
        if data == b"[DONE]":
            self.done = True
            if self.content is not None:  # text of choices the upstream never finished: out before the end
                frame = self.content.flush() + frame
            if self.guard is not None:
                frame = (self.guard.finish() or b"") + frame
            return frame
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            raise invalid_response("a stream frame is not a JSON object")
        if self.model is None:
            model = obj.get("model")
            if isinstance(model, str):
                self.model = self.ex.attrs["response_model"] = model  # for the trace (gen_ai.response.model)
        usage = obj.get("usage")
        if usage:
            self.usage = usage_from_openai(usage)
            if self.strip_usage and not obj.get("choices"):
                return None
        mark = len(self.text)
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            if isinstance(content, str):
                self.text.append(content)
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    self.text.append(str(fn.get("name") or ""))
                    self.text.append(str(fn.get("arguments") or ""))
        if self.live:
            if not self.head:
                self.head = {k: obj.get(k) for k in ("id", "created", "model")}
            self.ex.attrs["out_tokens_before"] = self.out_tokens
            self.out_tokens += sum(count_tokens(t) for t in self.text[mark:])
        if self.content is not None:
            out = self.content.feed(frame, obj)
            if out is None:
                return None
            frame = out
        if self.guard is not None:
            return self.guard.feed(frame, obj)
        return frame

    def final_usage(self) -> Usage:
        return self.usage or estimate(self.payload, "".join(self.text))

    async def relay(self, upstream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Relay frames; if the upstream breaks mid-stream, tell the client in an OpenAI error frame (the SDK
        raises on it) and fail the Exchange, rather than just stopping."""
        try:
            async for frame in upstream:
                out = self.feed(frame)
                if out is not None:
                    yield out
            if self.guard is not None and not self.done:
                tail = self.guard.finish()  # an upstream that ends without [DONE]
                if tail:
                    yield tail
            if self.content is not None and not self.done:
                tail = self.content.flush()
                if tail:
                    yield tail
        except GatewayError as refused:  # a tool call the caller may not run, or one that broke the rules
            self.ex.stream_cut = refused.code
            yield b"data: " + error_body(refused) + b"\n\n"
            raise
        except STREAM_FAILURES as exc:
            err = stream_failure(exc)
            yield b"data: " + error_body(err) + b"\n\n"
            raise err from None
        finally:
            self.ex.usage = self.final_usage()
            close = getattr(upstream, "aclose", None)
            if close is not None:
                await close()
