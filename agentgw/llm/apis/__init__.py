"""The LLM APIs served besides chat completions, each in terms of it: the OpenAI Responses API (responses.py) and
the Anthropic Messages API (messages.py). Both read the chat stream the plane relays through `chat_chunks`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from agentgw import jsontext


async def chat_chunks(frames: AsyncIterator[bytes]) -> AsyncGenerator[dict[str, Any], None]:
    """The chat chunks in the frames the plane relays, parsed, up to `[DONE]` (an error frame too: it has an
    `error` object). Closes `frames` when done or closed early. Frames after `[DONE]` are read and dropped, so
    the relay ends normally: closed at `[DONE]`, it would record a complete stream as the client gone."""
    from agentgw.llm.sse import frame_data

    done = False
    try:
        async for frame in frames:
            data = frame_data(frame)
            if done or not data:
                continue
            if data == b"[DONE]":
                done = True
                continue
            try:
                chunk = jsontext.loads(data)
            except ValueError:
                continue
            if isinstance(chunk, dict):
                yield chunk
    finally:
        close = getattr(frames, "aclose", None)
        if close is not None:
            await close()


class Translator(Protocol):
    """Chat chunks in, another API's stream events out (as SSE bytes)."""

    def start(self) -> bytes: ...

    def feed(self, chunk: dict[str, Any]) -> bytes: ...

    def failed(self, error: dict[str, Any]) -> bytes: ...

    def end(self) -> bytes: ...


async def translate_stream(
    frames: AsyncIterator[bytes], tr: Translator, done: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[bytes]:
    """The chat stream the plane relays, as `tr`'s API streams it; `done()` once it ended normally, before its
    last event is sent (an upstream error frame ends it with `tr.failed`)."""
    yield tr.start()
    async with contextlib.aclosing(chat_chunks(frames)) as chunks:
        async for chunk in chunks:
            if isinstance(chunk.get("error"), dict):
                yield tr.failed(chunk["error"])
                return
            out = tr.feed(chunk)
            if out:
                yield out
    last = tr.end()
    if done is not None:
        await done()
    yield last
