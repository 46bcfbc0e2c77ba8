"""The connection-level limits of every listener (`agentgw serve`: uvicorn with httptools): a request's line and
headers at most `limits.max_header_bytes` (431), all received within `limits.header_timeout_s` of the connection
or the request's first byte (408), and its body within `limits.body_timeout_s` of the headers' end (408).

uvicorn bounds a body in flight (it stops reading past 64 KiB until the app reads), but neither the head's size
nor any read's duration: a client could hold memory and a connection as long as it liked.

Each refusal is tallied in the audit store like the app's own pre-authentication refusals (note_refusal)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from agentgw.frontdoor import refusal_body
from agentgw.settings import Limits

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
# After a refusal the connection reads and discards for a while before closing (as nginx's lingering close does):
# closing with unread input would send a reset, which can destroy the answer before the client reads it.
_LINGER_S = 2.0
_LINGER_BYTES = 1 << 20


class _HeadTooLarge(Exception):
    pass


NoteRefusal = Callable[[str | None, str, int, str], None]


def refusal_tally(app: object) -> NoteRefusal | None:
    """The `note_refusal(client, path, status, code)` of the gateway inside the ASGI app uvicorn gives each
    protocol (its own middleware, e.g. proxy headers, wraps it and keeps it as `.app`), or None (another app)."""
    for _ in range(8):  # a handful of wrappers at most
        note = getattr(app, "note_refusal", None)
        if callable(note):
            return note  # type: ignore[no-any-return]
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above. Each connection holds at most one read (≤ 256 KiB)
    beyond `max_header_bytes` of head, and one timer."""

    limits: ClassVar[Limits] = Limits()  # set by configure() before serving (also in each worker process)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = 0  # bytes received since the current request's head began
        self._parsed = 0  # bytes of it parsed into the URL and headers
        self._in_head = True
        self._oversize = False
        self._refused = False
        self._discarded = 0
        self._timer: asyncio.TimerHandle | None = None

    # -- timers ---------------------------------------------------------------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, what: str) -> None:
        self._timer = None
        cycle = self.cycle
        # The app answered without waiting for the body: no refusal, only no more of this connection.
        if what == "body" and cycle is not None and cycle.response_started:
            if cycle.response_complete:
                self.transport.close()
            else:
                cycle.keep_alive = False
            return
        # A pipelined request's head behind a response in progress: the connection closes once that is sent.
        if what == "head" and cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            return
        self._refuse(408, "request_timeout", f"The request {what} was not received in time.")

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer on the connection itself (the app never saw this request, or has stopped waiting) and close it."""
        if self._refused or self.transport.is_closing():
            return
        self._disarm()
        path = self._path()
        self._tally(path, status, code)
        body = refusal_body(path, status, code, message)
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(head % (status, _REASONS[status], len(body)) + body)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # the app stops waiting for this request's body
            cycle.disconnected = True
            cycle.message_event.set()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._refused = True
        self.flow.resume_reading()
        self._timer = self.loop.call_later(_LINGER_S, self.transport.close)

    def _tally(self, path: str, status: int, code: str) -> None:
        """No request is refused without a trace in the audit store: the app's tally (aggregated, no payload)."""
        note = refusal_tally(self.app)
        if note is not None:
            note(self.client[0] if self.client else None, path, status, code)

    def _path(self) -> str:
        """The refused request's path: parsed once its head is complete, else what arrived of its target."""
        if not self._in_head and self.scope:
            return str(self.scope.get("path", ""))
        target = getattr(self, "url", b"").partition(b"?")[0].decode("latin-1")
        if "://" in target:  # the absolute form, http://host/path
            target = "/" + target.partition("://")[2].partition("/")[2]
        return target

    # -- the protocol -----------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, "head")  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered: discard what is still arriving, up to a point
            self._discarded += len(data)
            if self._discarded > _LINGER_BYTES:
                self.transport.close()
            return
        if self._in_head:
            self._head += len(data)
        super().data_received(data)
        # A head still arriving and already too big (a head within one read is measured in _counted).
        if self._in_head and self._head > self.limits.max_header_bytes:
            self._too_large()

    def send_400_response(self, msg: str) -> None:
        if self._oversize:  # the parser stopped because the head was too large (see _counted)
            self._too_large()
        else:  # uvicorn's own answer to what is not HTTP
            self._disarm()
            self._tally(self._path(), 400, "invalid_http_request")
            super().send_400_response(msg)

    def _too_large(self) -> None:
        self._refuse(
            431, "headers_too_large", f"The request head exceeds {self.limits.max_header_bytes} bytes."
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head, self._parsed = True, 0, 0
        if self._timer is None:  # the first request's deadline runs from the connection's start
            self._arm(self.limits.header_timeout_s, "head")

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._counted(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._counted(len(name) + len(value) + 4)

    def _counted(self, n: int) -> None:
        """A head that arrived in one read is measured as it is parsed."""
        self._parsed += n
        if self._parsed > self.limits.max_header_bytes:
            self._oversize = True
            raise _HeadTooLarge  # stops the parser; uvicorn's parser-error answer becomes our 431

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout_s, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def configure(limits: Limits) -> type[GuardedHttpTools]:
    """The protocol class for uvicorn's `http=`, with `limits` (a class attribute: uvicorn builds the instances)."""
    GuardedHttpTools.limits = limits
    return GuardedHttpTools
