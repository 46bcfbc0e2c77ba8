"""The audit hook: records every Exchange once, in `on_finish`, for allowed, denied, failed and cancelled calls.

It never fails the request: a sink error is logged and the record counted as lost.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from agentgw.audit.record import build_record
from agentgw.exchange import Exchange
from agentgw.pipeline import Stage

log = logging.getLogger("agentgw.audit")


class AuditSink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class AuditStage(Stage):
    name = "audit"

    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink
        self.lost = 0

    async def on_finish(self, exchange: Exchange) -> None:
        try:
            self.sink.write(build_record(exchange))
        except Exception:
            self.lost += 1
            log.exception("audit record lost")
