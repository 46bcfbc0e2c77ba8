"""The benchmark's floor: the least a Python gateway on this stack must do (uvicorn + httptools server, one pooled
aiohttp session), as a pure-ASGI pass-through proxy with no pipeline. It forwards POST bodies as bytes and relays
responses (SSE included) as they arrive; `gateway ÷ floor` is what agentgw's own code costs.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from upstream import serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    connector = aiohttp.TCPConnector(limit=8192, limit_per_host=0)
                    self.session = aiohttp.ClientSession(
                        connector=connector,
                        skip_auto_headers=("User-Agent", "Accept-Encoding"),
                        timeout=aiohttp.ClientTimeout(total=None),
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http" or self.session is None:
            return
        body = b""
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body", False):
                break
        url = self.upstream + scope["path"]
        headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-floor"}
        async with self.session.post(url, data=body, headers=headers) as resp:
            ctype = resp.headers.get("Content-Type", "application/json").encode()
            if ctype.startswith(b"text/event-stream"):
                out = [(b"content-type", ctype), (b"cache-control", b"no-cache")]
                await send({"type": "http.response.start", "status": resp.status, "headers": out})
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await resp.read()
            out = [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            await send({"type": "http.response.body", "body": data})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9200)
    ap.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9100")
    args = ap.parse_args()
    serve(Proxy(args.upstream), args.host, args.port, timeout_keep_alive=30)


if __name__ == "__main__":
    main()
