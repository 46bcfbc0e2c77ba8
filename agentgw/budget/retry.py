"""Ledger writes that could not be made (Redis unreachable: a settle, a release, or the undo of a reservation whose
reply was lost), retried in order until they land. One consumer only, the retry task: flush() wakes it and waits
for it, so no write is applied by two loops at once or popped twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from agentgw.budget.ledger import Amount, Ledger, Window

log = logging.getLogger("agentgw.budget")


@dataclass(slots=True)
class Pending:
    """A ledger write that failed (Redis unreachable) and is retried until it lands."""

    chain: list[str]
    reserved: Amount
    actual: Amount
    op: str
    undo: bool = False  # give back a reservation whose reply was lost
    windows: list[Window] = field(default_factory=list)
    forget: bool = False


class RetryQueue:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.pending: deque[Pending] = deque()
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.retry_delay_s = 0.2  # the first retry's delay (doubled after each failure, up to 5 s)

    async def apply(self, job: Pending) -> None:
        if job.undo:
            await self.ledger.undo(job.chain, job.op)
        elif job.actual:
            await self.ledger.settle(job.chain, job.reserved, job.actual, job.op, job.windows, job.forget)
        else:
            await self.ledger.release(job.chain, job.reserved, job.op, job.windows, job.forget)

    def later(self, job: Pending) -> None:
        self.pending.append(job)
        self._consumer()

    def _consumer(self) -> asyncio.Task[None]:
        """The retry task, started if it is not running."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._retry())
        return self.task

    async def _retry(self) -> None:
        """Apply pending jobs in order, waiting (with backoff) after a failure; only this task pops `pending`."""
        delay = self.retry_delay_s
        while self.pending:
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            while self.pending:
                try:
                    await self.apply(self.pending[0])
                except Exception:
                    delay = min(max(delay, 0.05) * 2, 5.0)
                    break
                self.pending.popleft()
                delay = self.retry_delay_s

    async def flush(self, timeout_s: float = 5.0) -> None:
        """On shutdown: give pending settlements a last chance to land (the retry task is woken and awaited)."""
        if self.pending:
            task = self._consumer()
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.pending:
            log.error(
                "%d budget settlements could not be written; their reservations stay until the tasks expire",
                len(self.pending),
            )
