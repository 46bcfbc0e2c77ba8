"""A scriptable Anthropic Messages upstream for tests: a real Starlette app served on loopback.

It records every request and answers with scripted Messages objects (as JSON, or streamed as the event
sequence Anthropic sends for them), scripted raw event sequences, or error statuses with Anthropic's error body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

DEFAULT_USAGE = {
    "input_tokens": 12,
    "output_tokens": 5,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def message(
    *blocks: dict[str, Any], stop_reason: str = "end_turn", usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A complete Messages answer with the given content blocks."""
    return {
        "id": "msg_01test",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": list(blocks),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {**DEFAULT_USAGE, **(usage or {})},
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _pieces(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)]


def events_for(msg: dict[str, Any], piece: int = 4) -> list[dict[str, Any]]:
    """The stream Anthropic sends for `msg`: usage (with cache fields) in message_start, text and tool input
    in small deltas (tool input as partial JSON, starting with an empty piece), cumulative output tokens in
    message_delta, and a ping."""
    usage = msg["usage"]
    start = {**msg, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(msg["content"]):
        if block["type"] == "text":
            events.append({"type": "content_block_start", "index": index, "content_block": text("")})
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"], piece)]
        else:
            opening = {**block, "input": {}}
            events.append({"type": "content_block_start", "index": index, "content_block": opening})
            json_text = orjson.dumps(block["input"]).decode() if block["input"] else ""
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in ["", *_pieces(json_text, piece)]
            ]
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events


def sse(events: list[dict[str, Any]]) -> list[bytes]:
    return [f"event: {e['type']}\n".encode() + b"data: " + orjson.dumps(e) + b"\n\n" for e in events]


@dataclass
class FakeAnthropic:
    replies: list[dict[str, Any]] = field(default_factory=lambda: [message(text("hello from claude"))])
    streams: list[list[dict[str, Any]]] = field(default_factory=list)  # raw event scripts, used first
    failures: list[int] = field(default_factory=list)  # statuses to answer with, in order, before succeeding
    error_message: str = "scripted failure"
    hang: anyio.Event | None = None  # when set: hold every request until this event fires
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self.messages, methods=["POST"])])

    def _next_reply(self) -> dict[str, Any]:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    async def messages(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append({"headers": dict(request.headers), "body": body, "path": request.url.path})
        if self.hang is not None:
            await self.hang.wait()
        if self.failures:
            status = self.failures.pop(0)
            return JSONResponse(anthropic_error(status, self.error_message), status_code=status)
        if not body.get("stream"):
            return JSONResponse(self._next_reply())
        events = self.streams.pop(0) if self.streams else events_for(self._next_reply())
        return StreamingResponse(_relay(sse(events)), media_type="text/event-stream")


async def _relay(frames: list[bytes]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame
