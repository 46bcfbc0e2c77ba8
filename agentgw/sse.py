"""Server-sent events, parsed by the WHATWG rules (HTML, "Server-sent events", 9.2.6) over bytes: the one decoder
every SSE reader in the gateway uses (MCP legs, LLM streams). Frames stay bytes so they can be relayed as received
(line endings normalised to LF); only the fields are read."""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


class SSEError(ValueError):
    """The stream cannot be read as SSE (an event larger than the reader accepts)."""


@dataclass(slots=True)
class Event:
    """One block of lines ended by a blank line.

    `data` is None when the block had no `data` field: by the WHATWG rules such a block (comments, a lone `id`,
    `retry` or `event`) dispatches nothing. `data == b""` is a dispatched event with empty data, e.g. an MCP
    server's priming event, which carries no message either. `id` is the stream's last event id at this point
    (it persists across events, as the rules say); `raw` is the block as received, ending in a blank line."""

    raw: bytes
    data: bytes | None = None
    event: bytes = b""
    id: bytes | None = None
    retry: int | None = None

    @property
    def is_message(self) -> bool:
        """Dispatched with the default type ("message") and non-empty data: something a JSON reader can read."""
        return bool(self.data) and self.event in (b"", b"message")


class SSEDecoder:
    """Incremental decoder: `feed` arbitrary byte chunks, get whole blocks back. CRLF, LF and CR all end a line
    (a CR at the end of one chunk and an LF at the start of the next are one line end); a leading UTF-8 BOM is
    dropped; an incomplete block at the end of the stream is discarded (`close`; the rules say so). Raises SSEError when
    one block grows past `max_event_bytes`."""

    __slots__ = ("_buf", "_cr", "_start", "last_id", "max_event_bytes", "retry")

    def __init__(self, max_event_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self._buf = b""
        self._cr = False  # the last chunk ended in CR: an LF opening the next one belongs to it
        self._start = True  # nothing read yet: a BOM may still come
        self.last_id: bytes | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        if self._start:
            chunk = self._buf + chunk
            self._buf = b""
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._buf = chunk  # may still become a BOM
                return []
            self._start = False
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if self._cr:
            self._cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        out: list[Event] = []
        start = 0
        while True:
            # the buffer always starts on a line boundary: blank lines there dispatch nothing
            while buf.startswith(b"\n", start):
                start += 1
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            out.append(self._block(buf[start:end]))
            start = end + 2
        self._buf = buf[start:] if start else buf
        if len(self._buf) > self.max_event_bytes:
            raise SSEError("The upstream sent an event larger than the gateway accepts.")
        return out

    def close(self) -> None:
        """The stream ended: the unfinished block is discarded, but its finished `id` and `retry` lines still
        count (they take effect when read, not when a block is dispatched)."""
        end = self._buf.rfind(b"\n")
        if end >= 0:
            self._block(self._buf[:end])
        self._buf = b""

    def _block(self, block: bytes) -> Event:
        raw = block + b"\n\n"
        if block.startswith(b"data:") and b"\n" not in block:  # the common case: one data line
            value = block[6:] if block.startswith(b" ", 5) else block[5:]
            return Event(raw, value, b"", self.last_id, self.retry)
        data: list[bytes] | None = None
        kind = b""
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                continue  # a comment
            name, colon, value = line.partition(b":")
            if colon and value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                if data is None:
                    data = []
                data.append(value)
            elif name == b"event":
                kind = value
            elif name == b"id":
                if b"\0" not in value:
                    self.last_id = value
            elif name == b"retry" and value and value.isdigit():
                self.retry = int(value)
            # any other field is ignored
        if data is None:
            return Event(raw, None, b"", self.last_id, self.retry)
        return Event(raw, b"\n".join(data), kind, self.last_id, self.retry)
