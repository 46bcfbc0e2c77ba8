"""A scriptable OpenAI-compatible upstream for tests: a real Starlette app served on loopback.

It records every request, can fail with scripted statuses, hang, stream slowly, and signals when a streaming
client went away, so tests can wait on events rather than sleep.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class FakeOpenAI:
    failures: list[int] = field(default_factory=list)  # statuses to answer with, in order, before succeeding
    hang: bool = False  # never answer (for timeouts)
    reply: str = "hello from upstream"
    chunks: int = 3
    chunk_gate: anyio.Event | None = None  # streams wait on this before the 2nd chunk
    die_after: int | None = None  # a stream breaks off (the connection drops) after this many chunks
    usage: dict[str, Any] | None = field(
        default_factory=lambda: {
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    )
    error_body: dict[str, Any] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnected: anyio.Event = field(default_factory=anyio.Event)
    started: anyio.Event = field(default_factory=anyio.Event)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/openai/deployments/{dep}/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    async def _common(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        raw = await request.body()
        body = orjson.loads(raw)
        self.requests.append(
            {
                "headers": dict(request.headers),
                "body": body,
                "raw": raw,
                "path": request.url.path,
                "query": str(request.url.query),
            }
        )
        self.started.set()
        if self.hang:  # never answer; report when the caller goes away
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
            return body, Response(status_code=499)
        if self.failures:
            status = self.failures.pop(0)
            err = self.error_body or {
                "error": {
                    "message": f"scripted {status}",
                    "type": "server_error",
                    "code": f"scripted_{status}",
                }
            }
            return body, JSONResponse(err, status_code=status)
        return body, None

    async def chat(self, request: Request) -> Response:
        body, failed = await self._common(request)
        if failed is not None:
            return failed
        model = body.get("model")
        if not body.get("stream"):
            out: dict[str, Any] = {
                "id": "chatcmpl-up",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": self.reply},
                    }
                ],
            }
            if self.usage is not None:
                out["usage"] = self.usage
            return JSONResponse(out)
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(self._stream(request, model, include), media_type="text/event-stream")

    async def _stream(self, request: Request, model: Any, include_usage: bool) -> AsyncIterator[bytes]:
        base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": model}
        words = [self.reply] if self.chunks <= 1 else [f"w{i} " for i in range(self.chunks)]
        try:
            for i, word in enumerate(words):
                if self.die_after is not None and i == self.die_after:
                    raise RuntimeError("upstream died mid-stream")
                if i == 1 and self.chunk_gate is not None:
                    await self.chunk_gate.wait()
                chunk = {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            yield (
                b"data: "
                + orjson.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                + b"\n\n"
            )
            if include_usage and self.usage is not None:
                yield b"data: " + orjson.dumps({**base, "choices": [], "usage": self.usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"
        except BaseException:
            self.disconnected.set()
            raise

    async def embeddings(self, request: Request) -> Response:
        body, failed = await self._common(request)
        if failed is not None:
            return failed
        return JSONResponse(
            {
                "object": "list",
                "model": body.get("model"),
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        )
