"""The benchmark's upstream: a minimal pure-ASGI OpenAI-compatible mock served by uvicorn (uvloop + httptools).

POST /v1/chat/completions answers a fixed chat completion, or an SSE stream when `stream: true`. Stream shape
comes from the request body field `"bench": {"chunks": N, "delay_ms": D}` (the gateway forwards unknown body
fields as they are) or the headers `x-bench-chunks` / `x-bench-delay-ms`, else the command-line defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from harness import raise_nofile

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! This is a fixed benchmark reply."},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)
_CHUNK_BASE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "bench",
}
CONTENT_FRAME = (
    b"data: "
    + orjson.dumps(
        {**_CHUNK_BASE, "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}
    )
    + b"\n\n"
)
STOP_FRAME = (
    b"data: "
    + orjson.dumps({**_CHUNK_BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    + b"\n\n"
)
USAGE_FRAME = b"data: " + orjson.dumps({**_CHUNK_BASE, "choices": [], "usage": USAGE}) + b"\n\n"
DONE_FRAME = b"data: [DONE]\n\n"

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Upstream:
    def __init__(self, chunks: int, delay_ms: float) -> None:
        self.chunks = chunks
        self.delay_ms = delay_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            await _send(send, 404, b'{"error":{"message":"not found","type":"invalid_request_error"}}')
            return
        body = b""
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body", False):
                break
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            await _send(send, 400, b'{"error":{"message":"invalid JSON","type":"invalid_request_error"}}')
            return
        if not isinstance(req, dict) or req.get("stream") is not True:
            await _send(send, 200, COMPLETION)
            return
        chunks, delay_ms = self.chunks, self.delay_ms
        opts = req.get("bench")
        if isinstance(opts, dict):
            chunks = int(opts.get("chunks", chunks))
            delay_ms = float(opts.get("delay_ms", delay_ms))
        for k, v in scope["headers"]:
            if k == b"x-bench-chunks":
                chunks = int(v)
            elif k == b"x-bench-delay-ms":
                delay_ms = float(v)
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        await self.stream(send, chunks, delay_ms / 1000.0, include_usage)

    async def stream(self, send: Send, chunks: int, delay_s: float, include_usage: bool) -> None:
        """`chunks` content frames, the first at once and then one every `delay_s`; then stop, usage, [DONE]."""
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        start = time.monotonic()
        for i in range(chunks):
            if i and delay_s > 0:  # paced against the start, so scheduling lag does not accumulate
                await asyncio.sleep(max(0.0, start + i * delay_s - time.monotonic()))
            await send({"type": "http.response.body", "body": CONTENT_FRAME, "more_body": True})
        tail = STOP_FRAME + (USAGE_FRAME if include_usage else b"") + DONE_FRAME
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI lifespan scope: nothing to start or stop (the bench's mock servers)."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send(send: Send, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--chunks", type=int, default=5, help="default content frames per stream")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="default delay between stream frames")
    args = ap.parse_args()
    # keep-alive longer than any idle gap between phases: pooled connections stay valid
    serve(Upstream(args.chunks, args.delay_ms), args.host, args.port, backlog=4096, timeout_keep_alive=300)


def serve(app: Any, host: str, port: int, **options: Any) -> None:
    """A bench server on uvicorn as lean as it gets (uvloop, httptools, no access log, no Server or Date header)."""
    import uvicorn

    raise_nofile()
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        **options,
    )


if __name__ == "__main__":
    main()
