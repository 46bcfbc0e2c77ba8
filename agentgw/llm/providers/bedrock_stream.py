"""ConverseStream → OpenAI `chat.completion.chunk` frames: the AWS event-stream body decoded as it arrives
(botocore's EventStreamBuffer), each event or exception message translated by `StreamTranslator`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import orjson
from botocore.eventstream import EventStreamBuffer, EventStreamMessage

from agentgw import jsontext
from agentgw.llm.providers import transport
from agentgw.llm.providers.base import ProviderError, invalid_response
from agentgw.llm.providers.bedrock_translate import (
    STREAM_EXCEPTIONS,
    bedrock_error,
    error_message,
    finish_reason,
    tool_call,
    usage_to_openai,
)
from agentgw.llm.providers.chat_shapes import ChunkWriter


class StreamTranslator(ChunkWriter):
    """Feed it each decoded event-stream message (headers, payload); it returns the OpenAI SSE frames to send.

    Bedrock sends messageStart, content blocks (a toolUse block opens with contentBlockStart; text blocks
    start with their first delta), messageStop (the stop reason), then metadata (usage). The role chunk waits
    for the first content, so an exception before any (throttling) can still be retried elsewhere. The finish
    chunk goes out at messageStop; the usage chunk and `[DONE]` at metadata (or at the end of the body,
    `close()`), when `done` turns true. An exception message raises ProviderError.
    """

    def __init__(
        self,
        model: str,
        include_usage: bool,
        secrets: list[str] | None = None,
        completion_id: str = "chatcmpl-bedrock",
        created: int | None = None,
    ) -> None:
        super().__init__(completion_id, model, include_usage, secrets, created)
        self.usage: dict[str, Any] | None = None
        self.stopped = False  # messageStop seen (the finish chunk is out)
        self.done = False  # [DONE] is out

    def feed(self, headers: Mapping[str, Any], payload: bytes) -> list[bytes]:
        if self.done:
            return []
        kind = headers.get(":message-type")
        if kind == "exception":
            name = str(headers.get(":exception-type") or "exception")
            message, _ = error_message(_object(payload, required=False))
            return self._raise(STREAM_EXCEPTIONS.get(name, 502), message or name, name)
        if kind == "error":
            code = str(headers.get(":error-code") or "error")
            return self._raise(502, str(headers.get(":error-message") or code), code)
        if kind != "event":
            return []
        event = _object(payload, required=True)
        event_type = headers.get(":event-type")
        if event_type == "contentBlockDelta":
            return self._block_delta(event)
        if event_type == "contentBlockStart":
            return self._block_start(event)
        if event_type == "contentBlockStop":
            return self._close_block(event.get("contentBlockIndex"))
        if event_type == "messageStop":
            if self.stopped:
                return []
            self.stopped = True
            return [*self._start(), self._delta({}, finish_reason(event.get("stopReason")))]
        if event_type == "metadata":
            if isinstance(event.get("usage"), dict):
                self.usage = event["usage"]
            return self.close() if self.stopped else []
        return []  # messageStart (the role waits for content) and event types added later

    def _raise(self, status: int, message: str, kind: str) -> list[bytes]:
        raise bedrock_error(status, message, kind, self.secrets)

    def _block_start(self, event: dict[str, Any]) -> list[bytes]:
        index, start = event.get("contentBlockIndex"), event.get("start")
        use = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(index, int) or not isinstance(use, dict):
            return []
        return [*self._start(), self._open_tool(index, tool_call(use, ""))]

    def _block_delta(self, event: dict[str, Any]) -> list[bytes]:
        index, delta = event.get("contentBlockIndex"), event.get("delta")
        if not isinstance(index, int) or not isinstance(delta, dict):
            return []
        if isinstance(delta.get("text"), str) and delta["text"]:
            return [*self._start(), self._delta({"content": delta["text"]})]
        use = delta.get("toolUse")
        if (
            isinstance(use, dict)
            and index in self.tools
            and isinstance(use.get("input"), str)
            and use["input"]
        ):
            return [*self._start(), self._args(index, use["input"])]
        return []  # reasoning and citation deltas have no chat completions counterpart

    def close(self) -> list[bytes]:
        """The end of the stream after messageStop: the usage chunk (when Bedrock sent usage) and `[DONE]`.
        Before messageStop the answer is incomplete: ProviderError, retryable."""
        if self.done:
            return []
        if not self.stopped:
            raise ProviderError("upstream stream ended before messageStop", status=502, retryable=True)
        self.done = True
        return self._tail(usage_to_openai(self.usage) if self.usage is not None else None)


def _object(payload: bytes, *, required: bool) -> dict[str, Any]:
    try:
        parsed = jsontext.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    if required:
        raise invalid_response("a stream event is not a JSON object")
    return {}


def _messages(buffer: EventStreamBuffer) -> Iterator[EventStreamMessage]:
    """The complete event-stream messages buffered so far; a malformed one (bad CRC, bad header) is a broken
    answer."""
    try:
        yield from buffer
    except Exception as exc:  # botocore's ParserError, or a struct/key error on a garbled header
        raise invalid_response(f"a malformed event-stream message ({type(exc).__name__})") from None


async def translate(translator: StreamTranslator, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """OpenAI frames from the ConverseStream body, decoded as the bytes arrive. After metadata the rest of the
    body is drained (normally nothing), so the connection goes back to the pool."""
    chunks = transport.body_chunks(resp)
    buffer = EventStreamBuffer()
    tail: list[bytes] = []
    try:
        async for chunk in chunks:
            if translator.done:
                continue
            buffer.add_data(chunk)
            for message in _messages(buffer):
                for out in translator.feed(message.headers, message.payload):
                    yield out
        tail = translator.close()  # no metadata after messageStop: [DONE]; no messageStop: ProviderError
    except Exception as exc:
        if translator.stopped and not translator.done and not isinstance(exc, ProviderError):
            tail = (
                translator.close()
            )  # the body broke after messageStop: the answer is whole, only usage is lost
        elif not translator.done:
            raise
    finally:
        await chunks.aclose()
    for out in tail:
        yield out
