"""The audit hook: records every Exchange once, in `on_finish`, for allowed, denied, failed and cancelled calls.

On the request path it only hands the finished Exchange to the writer (the writer process, audit/process.py, or
the in-process audit/writer.py), which builds and stores the record in the background. It never fails the
request: an error here is logged and counted. Unauthenticated refusals are the exception: anyone can send them,
so they are tallied (Refusals) into one record per source, plane and window, with a count and no payload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from agentgw.audit.record import iso
from agentgw.audit.writer import RecordSink
from agentgw.errors import GatewayError
from agentgw.exchange import Exchange
from agentgw.pipeline import Stage

log = logging.getLogger("agentgw.audit")

REFUSAL_WINDOW_S = 60.0  # one record per source and plane per this long, however many refusals it holds
_MAX_SOURCES = 10_000  # open windows; refusals from further sources share one overflow window per plane


class AuditStage(Stage):
    name = "audit"

    def __init__(self, writer: RecordSink) -> None:
        self.writer = writer
        self.lost = 0
        self.refusals = Refusals(self)

    async def on_finish(self, exchange: Exchange) -> None:
        err = exchange.error
        if err is not None and err.status == 401 and exchange.principal is None:
            self.refusals.note(exchange)  # anonymous: counted, never stored one by one
            return
        await self.submit(exchange, time.perf_counter())

    async def submit(self, exchange: Exchange, ended: float) -> None:
        try:
            await self.writer.submit(exchange, ended)
        except Exception:
            self.lost += 1
            log.exception("audit record lost")


class Refusals:
    """Decides how refusals made before authentication reach the audit store (401s, and the front door's
    Host/Origin and connection-limit refusals): per (source address, plane), the first refusal
    opens a window of REFUSAL_WINDOW_S; when it closes (or the gateway stops) one record is written with the count,
    the error codes seen and the window's first and last time. No payload, body or header is kept, so the store
    grows with authenticated work, not with what anonymous callers send."""

    def __init__(self, stage: AuditStage) -> None:
        self.stage = stage
        self.open: dict[tuple[str, str], Exchange] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, ex: Exchange) -> None:
        err = ex.error
        self.count(ex.client, ex.plane, err.code if err else "unauthenticated", err.status if err else 401)

    def count(self, client: str | None, plane: str, code: str, status: int) -> None:
        """One refusal of `client` on `plane` (also those made before any Exchange exists: Host/Origin, the
        connection limits). Synchronous and allocation-bounded: callable from a protocol callback."""
        key = (client or "unknown", plane)
        agg = self.open.get(key)
        if agg is None and len(self.open) >= _MAX_SOURCES:
            key = ("*", plane)
            agg = self.open.get(key)
        now = time.time()
        if agg is None:
            agg = Exchange(plane, "unauthenticated", f"{plane}:*", {}, key[0])
            agg.status = "denied"
            agg.attrs["refused"] = {"count": 0, "codes": {}, "first": iso(agg.started), "last": ""}
            self.open[key] = agg
            asyncio.get_running_loop().call_later(REFUSAL_WINDOW_S, self._close, key)
        tally: dict[str, Any] = agg.attrs["refused"]
        tally["count"] += 1
        tally["codes"][code] = tally["codes"].get(code, 0) + 1
        tally["last"] = iso(now)
        agg.error = GatewayError(
            f"{tally['count']} requests refused before authentication.", status=status, code=code
        )

    def _close(self, key: tuple[str, str]) -> None:
        agg = self.open.pop(key, None)
        if agg is not None:
            task = asyncio.get_running_loop().create_task(self.stage.submit(agg, time.perf_counter()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Record every open window now (at shutdown, before the writer drains)."""
        while self.open:
            _, agg = self.open.popitem()
            await self.stage.submit(agg, time.perf_counter())
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class CapturingAuditStage(AuditStage):
    """Used instead when some target's full response is captured (`audit.payloads`): keeps the stream frames of
    those targets, up to the rule's size, for the writer to reassemble. (A separate class, so streams of
    gateways without capture pay no per-chunk hook.)"""

    async def on_chunk(self, exchange: Exchange, chunk: bytes) -> bytes | None:
        rule = self.writer.builder.capture_for(exchange.target)
        if rule is not None and rule.response:
            frames: list[bytes] = exchange.attrs.setdefault("audit_frames", [])
            size = exchange.attrs.get("audit_frames_size", 0)
            if size < rule.max_bytes:
                frames.append(chunk)
                exchange.attrs["audit_frames_size"] = size + len(chunk)
        return chunk
