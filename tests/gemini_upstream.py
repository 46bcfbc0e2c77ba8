"""A scriptable Gemini API upstream for tests: a real Starlette app served on loopback.

It speaks the Gemini Developer API's REST wire format: `POST /{v1beta|v1}/models/{model}:generateContent` answers a
`GenerateContentResponse` as JSON; `:streamGenerateContent?alt=sse` answers the same response cut into chunks, one
SSE event each (`data: {...}` and a CRLF blank line, as the real service frames them), text in small pieces, a
`functionCall` part whole, `finishReason` and the final `usageMetadata` on the last chunk; `:batchEmbedContents`
answers `{"embeddings": [{"values": [...]}]}`; errors are google.rpc bodies `{"error": {"code", "message",
"status"}}`. The API key must come in `x-goog-api-key` (a 403 PERMISSION_DENIED otherwise, like the real API). The
shapes follow the public REST reference (ai.google.dev/api/generate-content, ai.google.dev/api/embeddings) and the
google-genai SDK's `types` (GenerateContentResponse, Candidate, Part, FunctionCall, UsageMetadata), whose
converters read these camelCase names; the tests also point that SDK straight at this app, so a shape it cannot
read fails there. Every request is recorded (path, query, headers, JSON body).
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

API_KEY = "AIzaSy-test-gemini-key-0123456789"
MODEL_VERSION = "gemini-2.5-flash-001"

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

DEFAULT_USAGE = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 5,
    "totalTokenCount": 17,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
}


def gemini_error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}


def text(value: str) -> dict[str, Any]:
    return {"text": value}


def function_call(name: str, args: dict[str, Any], signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def response(
    *parts: dict[str, Any],
    finish: str = "STOP",
    usage: dict[str, Any] | None = None,
    candidates: int = 1,
) -> dict[str, Any]:
    """A complete GenerateContentResponse whose candidates all have these parts."""
    return {
        "candidates": [
            {
                "content": {"parts": list(parts), "role": "model"},
                "finishReason": finish,
                "index": i,
            }
            for i in range(candidates)
        ],
        "usageMetadata": {**DEFAULT_USAGE, **(usage or {})},
        "modelVersion": MODEL_VERSION,
        "responseId": "resp-test-1",
    }


def blocked(reason: str = "SAFETY") -> dict[str, Any]:
    """What Gemini answers when it refuses the prompt itself: feedback, usage, no candidates."""
    return {
        "promptFeedback": {"blockReason": reason},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": MODEL_VERSION,
        "responseId": "resp-blocked",
    }


def chunks_for(answer: dict[str, Any], piece: int = 5) -> list[dict[str, Any]]:
    """The stream Gemini sends for `answer` (one candidate): text cut in pieces, a functionCall part whole, usage
    on every chunk (prompt tokens only until the last), finishReason and full usage on the last chunk."""
    if not answer.get("candidates"):
        return [answer]
    candidate = answer["candidates"][0]
    head = {"modelVersion": answer["modelVersion"], "responseId": answer["responseId"]}
    prompt_usage = {"promptTokenCount": answer["usageMetadata"]["promptTokenCount"]}
    pieces: list[dict[str, Any]] = []
    for part in candidate["content"]["parts"]:
        if "text" in part:
            value = part["text"]
            pieces += [{"text": value[i : i + piece]} for i in range(0, len(value), piece)]
        else:
            pieces.append(part)
    out = [
        {
            **head,
            "candidates": [{"content": {"parts": [p], "role": "model"}, "index": 0}],
            "usageMetadata": prompt_usage,
        }
        for p in pieces
    ]
    if not out:
        out = [{**head, "candidates": [{"content": {"parts": [], "role": "model"}, "index": 0}]}]
    out[-1]["candidates"][0]["finishReason"] = candidate["finishReason"]
    out[-1]["usageMetadata"] = answer["usageMetadata"]
    return out


def sse(chunks: list[dict[str, Any]]) -> list[bytes]:
    return [b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks]


@dataclass
class FakeGemini:
    replies: list[dict[str, Any]] = field(default_factory=lambda: [response(text("hello from gemini"))])
    streams: list[list[dict[str, Any]]] = field(default_factory=list)  # raw chunk scripts, used first
    failures: list[int] = field(default_factory=list)  # statuses to answer with, in order, before succeeding
    error_message: str = "scripted failure"
    dimensions: int = 4
    api_key: str = API_KEY
    hang: anyio.Event | None = None  # when set: hold every request until this event fires
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{version}/models/{target:path}", self.models, methods=["POST"])])

    def _next_reply(self) -> dict[str, Any]:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    async def models(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        model, _, method = request.path_params["target"].rpartition(":")
        self.requests.append(
            {
                "headers": dict(request.headers),
                "body": body,
                "path": request.url.path,
                "query": str(request.url.query),
                "model": model,
                "method": method,
            }
        )
        if self.hang is not None:
            await self.hang.wait()
        if request.headers.get("x-goog-api-key") != self.api_key:
            return JSONResponse(gemini_error(403, "API key not valid."), status_code=403)
        if self.failures:
            status = self.failures.pop(0)
            return JSONResponse(gemini_error(status, self.error_message), status_code=status)
        if method == "generateContent":
            return JSONResponse(self._next_reply())
        if method == "streamGenerateContent" and request.query_params.get("alt") == "sse":
            chunks = self.streams.pop(0) if self.streams else chunks_for(self._next_reply())
            return StreamingResponse(_relay(sse(chunks)), media_type="text/event-stream")
        if method == "batchEmbedContents":
            return JSONResponse({"embeddings": [self._embedding(r) for r in body["requests"]]})
        return JSONResponse(gemini_error(404, f"Method {method} not found."), status_code=404)

    def _embedding(self, request: dict[str, Any]) -> dict[str, Any]:
        """A deterministic vector: the text's length, then 0.5, 0.25, … (outputDimensionality honoured)."""
        size = request.get("outputDimensionality") or self.dimensions
        length = len(request["content"]["parts"][0]["text"])
        return {"values": [float(length)] + [0.5**i for i in range(1, size)]}


async def _relay(frames: list[bytes]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame
