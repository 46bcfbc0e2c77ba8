"""The interim audit sink: one JSON line per Exchange, written in batches off the request path.

Lines go to a file (`audit.log.path`) or to stderr. `aclose()` flushes everything queued: nothing is lost on a
clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any, BinaryIO

import orjson


class JsonLinesSink:
    def __init__(self, path: Path | None = None, interval_s: float = 0.05) -> None:
        self.path = path
        self.interval_s = interval_s
        self._buf: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._fh: BinaryIO | None = None
        self.written = 0

    @property
    def depth(self) -> int:
        """Records queued, not yet written (read by the `agentgw_audit_queue_depth` gauge)."""
        return len(self._buf)

    def write(self, record: dict[str, Any]) -> None:
        self._buf.append(orjson.dumps(record) + b"\n")
        if self._task is None:  # no running loop yet (e.g. a test without lifespan): write through
            self._flush_sync()

    def _open(self) -> BinaryIO:
        if self.path is None:
            return sys.stderr.buffer
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab")
        return self._fh

    async def start(self) -> None:
        self._open()
        self._task = asyncio.create_task(self._run(), name="audit-log-writer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self._buf:
                await asyncio.to_thread(self._flush_sync)

    def _flush_sync(self) -> None:
        if not self._buf:
            return
        batch, self._buf = self._buf, []
        data = b"".join(batch)
        out = self._open()
        out.write(data)
        out.flush()
        self.written += len(batch)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._flush_sync()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class NullSink:
    """Audit switched off (benchmarks only)."""

    written = 0
    depth = 0

    def write(self, record: dict[str, Any]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
