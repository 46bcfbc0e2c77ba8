"""The gateway's side of the audit writer process (`audit.writer: process`, the default): the request path only
turns a finished Exchange into a snapshot line (snapshot.py) and hands a batch of them to the worker's stdin; the
worker (worker.py) builds, chains and stores the records on another core; control lines on the same pipe tell it
of drops and of the configured secrets (first thing, and after a registry reload). Counts what the worker reports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from agentgw.audit.config import Audit
from agentgw.audit.record import RecordBuilder, record_id
from agentgw.audit.snapshot import safe_snapshot
from agentgw.audit.store import AuditStore
from agentgw.exchange import Exchange

log = logging.getLogger("agentgw.audit")

SECRETS_KEY = "secrets"  # the key of the control line that carries the configured secrets (worker.py)
_GATHER_S = 0.002  # snapshots gather this long before one write to the worker


class ProcessWriter:
    """Decides what happens to a finished call's record on the request path: handed to the worker (a few µs), or,
    with `queue_size` records already in flight, the caller waits (`on_full: block`) or the record is dropped and
    counted (`drop`; the worker puts the drop on the record). A worker that dies is started again; the records it
    held are counted as lost and logged. `store` is opened here for reading (the trace API)."""

    def __init__(
        self, cfg: Audit, config: Path, store: AuditStore, builder: RecordBuilder, secrets: Iterable[str] = ()
    ) -> None:
        self.cfg = cfg
        self.config = config
        self.store = store
        self.builder = builder  # its capture rules decide which streams keep their frames (stages/audit.py)
        self._secrets = secrets_line(list(secrets))  # what every worker is told first (one started again too)
        self.block = cfg.on_full == "block"
        self.submitted = 0  # accepted for the worker (buffered here, in its pipe, or in the worker)
        self.blocked = 0
        # The record ids written to the running worker's stdin whose fate it has not reported yet (oldest first):
        # when it dies, the store says which of them it had stored; the rest are lost. Exact, whatever moment
        # the kill lands at (between a commit and its report too).
        self._sent: deque[str] = deque()
        self._handed = 0  # written to the running worker's stdin
        self._late = 0  # stored by workers that died before reporting them
        self._dropped_here = 0  # dropped here, queue full
        self._before = (0, 0, 0)  # written, dropped, lost of workers that ended (a new one reports from zero)
        self._now = (0, 0, 0)  # the running worker's last report
        self._held_lost = 0  # records a worker held when it died, or that shutdown gave up on
        self.prunes = 0  # retention passes the worker ran (it owns the store's writes)
        self.pruned = 0
        self.store_errors = 0  # failed append attempts the worker made (each retried)
        self.failing = False  # the worker's last append attempt failed (it is retrying)
        self.last_error: str | None = None  # why the worker's last failed append failed
        self._drops: tuple[int, float, float] | None = None  # drops not yet told to the worker
        self._buf: list[bytes] = []
        self._ids: list[str] = []  # the record ids of _buf's snapshots (its control lines have none)
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self.closing = False

    @property
    def written(self) -> int:
        return self._before[0] + self._now[0] + self._late

    @property
    def dropped(self) -> int:
        return self._dropped_here + self._worker_dropped

    @property
    def _worker_dropped(self) -> int:
        """Records handed over that the worker dropped itself (its queue full)."""
        return self._before[1] + self._now[1]

    @property
    def lost(self) -> int:
        return self._before[2] + self._now[2] + self._held_lost

    @property
    def state(self) -> str:
        """`stopped` (not started), `running`, `retrying` (the worker's store refuses appends), `restarting` (the
        worker exited and is being started again) or `closed` (shut down)."""
        proc = self._proc
        if self.closing:
            return "closed"
        if proc is None:
            return "stopped"
        if proc.returncode is not None:
            return "restarting"
        return "retrying" if self.failing else "running"

    @property
    def pid(self) -> int | None:
        """The running worker's process id."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def depth(self) -> int:
        """Handed over and not yet accounted for (stored, dropped by the worker, or lost)."""
        return self.submitted - self.written - self._worker_dropped - self.lost

    # -- request path -------------------------------------------------------------------------------------------

    async def submit(self, ex: Exchange, ended: float) -> None:
        if self.depth >= self.cfg.queue_size:
            if not self.block:
                self._drop()
                return
            self.blocked += 1
            try:
                await self.until(lambda: self.depth < self.cfg.queue_size)
            finally:
                self.blocked -= 1
        rid = record_id(ex.started)
        ex.attrs["record_id"] = rid  # chosen here, so the gateway can look the record up if the worker dies
        self._buf.append(safe_snapshot(ex, ended) + b"\n")
        self._ids.append(rid)
        self.submitted += 1
        if not self._wake.is_set():
            self._wake.set()

    def use_secrets(self, secrets: list[str]) -> None:
        """A registry reload changed the configured secrets: the worker is told in the same stream as the
        snapshots, after those submitted before and before those submitted after, so every record built from
        now on scrubs them (a worker started again is told first thing)."""
        self.builder.use_secrets(secrets)
        self._secrets = secrets_line(secrets)
        self._buf.append(self._secrets)
        self._wake.set()

    def _drop(self) -> None:
        now = time.time()
        self._dropped_here += 1
        count, first, _ = self._drops or (0, now, now)
        self._drops = (count + 1, first, now)
        if count == 0:
            log.warning("audit queue full (%d in flight): records are being dropped", self.cfg.queue_size)
        self._wake.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()  # fails the start, as the in-process writer does, when the store is unusable
        await self._spawn()
        self._pump = asyncio.create_task(self._pump_loop(), name="audit-pump")

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentgw.audit.worker",
            str(self.config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C or SIGTERM to the gateway's group reaches the gateway only
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(self._secrets)  # ahead of any snapshot; drained with the first batch
        self._reader = asyncio.create_task(self._read_loop(self._proc), name="audit-reports")

    async def _pump_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(_GATHER_S)
            self._wake.clear()
            await self._send()

    async def _send(self) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return
        data, self._buf = b"".join(self._buf), []
        self._sent.extend(
            self._ids
        )  # handed over from here on, even if the write fails (the worker is dying)
        self._handed += len(self._ids)
        self._ids = []
        if self._drops is not None:
            count, first, last = self._drops
            self._drops = None
            data += orjson.dumps({"drops": count, "first": first, "last": last}) + b"\n"
        if data:
            try:
                proc.stdin.write(data)
                await proc.stdin.drain()  # the worker's queue is full: this waits (backpressure)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the reader sees the worker die and accounts for it

    async def _read_loop(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                report = orjson.loads(line)
                self._now = (int(report["written"]), int(report["dropped"]), int(report["lost"]))
                self.prunes, self.pruned = int(report.get("prunes", 0)), int(report.get("pruned", 0))
                self.store_errors = int(report.get("store_errors", 0))
                self.failing = bool(report.get("failing"))
                error = report.get("last_error")
                self.last_error = error if isinstance(error, str) else self.last_error
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            for _ in range(len(self._sent) - self._unsettled()):  # settled in order: forget the oldest
                self._sent.popleft()
            self._changed.set()
        code = await proc.wait()
        held = self._unsettled()
        ids = list(self._sent)[len(self._sent) - held :] if held > 0 else []
        (w0, d0, l0), (w1, d1, l1) = self._before, self._now
        self._before = (w0 + w1, d0 + d1, l0 + l1)
        self._now, self._sent, self._handed = (0, 0, 0), deque(), 0
        if held:  # handed over, not reported: the store knows which of them the worker stored before it died
            stored = await self._stored(ids)
            self._late += stored
            self._held_lost += held - stored
            if held - stored:
                log.error(
                    "audit writer process exited (%s) holding %d unwritten records", code, held - stored
                )
        self._changed.set()
        if not self.closing:
            log.error("audit writer process exited (%s); starting it again", code)
            await self._spawn()
            self._wake.set()

    def _unsettled(self) -> int:
        """Records the running worker was handed and has not reported stored, dropped or lost."""
        return self._handed - sum(self._now)

    async def _stored(self, ids: list[str]) -> int:
        try:
            return len(await self.store.present(ids))
        except Exception as exc:  # the store is down: none of them can be shown to be there
            log.error("audit store unavailable to count what a dead writer stored (%s)", exc)
            return 0

    async def flush(self) -> None:
        """Wait until everything handed over so far is in the store."""
        target = self.submitted
        self._wake.set()
        await self.until(lambda: self.submitted - self.depth >= target)

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Hand over what is left, let the worker drain it into the store and exit (up to `timeout_s` more than
        its own store retries), then close."""
        self.closing = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self._send()
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
            try:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    await proc.stdin.wait_closed()
                if self._reader is not None:
                    await asyncio.wait_for(self._reader, timeout_s + 5)
            except TimeoutError:
                proc.kill()
                log.error("audit writer process did not finish in time: %d records lost", self.depth)
                self._held_lost += self.depth
        await self.store.aclose()
        log.info(
            "audit writer closed: %d written, %d dropped, %d lost", self.written, self.dropped, self.lost
        )


def secrets_line(secrets: list[str]) -> bytes:
    """The control line that gives the worker the configured secret values (worker.py recognises its key). They
    travel only over the worker's stdin pipe and are never logged."""
    return orjson.dumps({SECRETS_KEY: secrets}) + b"\n"
