"""The audit hook: records every Exchange once, in `on_finish`, for allowed, denied, failed and cancelled calls.

On the request path it only hands the finished Exchange to the writer (the writer process, audit/process.py, or
the in-process audit/writer.py), which builds and stores the record in the background. It never fails the
request: an error here is logged and counted.
"""

from __future__ import annotations

import logging
import time

from agentgw.audit.writer import RecordSink
from agentgw.exchange import Exchange
from agentgw.pipeline import Stage

log = logging.getLogger("agentgw.audit")


class AuditStage(Stage):
    name = "audit"

    def __init__(self, writer: RecordSink) -> None:
        self.writer = writer
        self.lost = 0

    async def on_finish(self, exchange: Exchange) -> None:
        try:
            await self.writer.submit(exchange, time.perf_counter())
        except Exception:
            self.lost += 1
            log.exception("audit record lost")


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
