"""Pure-ASGI helpers shared by the planes: headers, bounded body reads, JSON and streamed responses, and the
disconnect watcher that turns a client going away into cancellation of the upstream call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from agentgw.errors import PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def header_dict(scope: Scope) -> dict[str, str]:
    """Lower-cased request headers; a repeated header keeps its first value."""
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        name = k.decode("latin-1").lower()
        if name not in out:
            out[name] = v.decode("latin-1")
    return out


def client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


class ClientGone(Exception):
    """The client disconnected before the body was read."""


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """Read the whole body, refusing more than `limit` bytes (by Content-Length up front, then as it arrives)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def encode_headers(extra: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (extra or {}).items()]


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]] = JSON_HEADERS,
    extra: dict[str, str] | None = None,
) -> None:
    raw = [*headers, (b"content-length", str(len(body)).encode()), *encode_headers(extra)]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_stream(
    send: Send,
    status: int,
    frames: AsyncIterator[bytes],
    headers: Iterable[tuple[bytes, bytes]] = SSE_HEADERS,
    extra: dict[str, str] | None = None,
) -> None:
    """Relay frames as they come; always closes the iterator (so its cleanup runs even on disconnect)."""
    try:
        await send(
            {"type": "http.response.start", "status": status, "headers": [*headers, *encode_headers(extra)]}
        )
        async for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        close = getattr(frames, "aclose", None)
        if close is not None:
            await close()


_watchers: set[asyncio.Task[None]] = set()


async def cancel_on_disconnect(
    receive: Receive, work: Awaitable[None], on_disconnect: Callable[[], None] | None = None
) -> bool:
    """Run `work` in this task; if the client disconnects first, call `on_disconnect` (to record why) and
    cancel it. Returns False when the client went away.

    One watcher task per request and no cancellation on the normal path: once the response is complete the
    server answers the watcher's pending `receive()` with `http.disconnect`, and the watcher ends by itself.
    """
    current = asyncio.current_task()
    assert current is not None
    state = {"done": False, "cut": False}

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not state["done"]:
            state["cut"] = True
            if on_disconnect is not None:
                on_disconnect()
            current.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    _watchers.add(watcher)  # the loop keeps only weak references to tasks
    watcher.add_done_callback(_watchers.discard)
    try:
        await work
        return True
    except asyncio.CancelledError:
        if state["cut"]:
            current.uncancel()
            return False
        raise
    finally:
        state["done"] = True  # the watcher sees this when the server answers its receive() and just ends
