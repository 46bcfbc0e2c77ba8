"""The audit writer: finished Exchanges are queued on the request path (a reference and a timestamp, nothing
more); a background builder turns them into records (summaries, redaction, cost, JSON bytes) within a few ms,
and a background flusher appends those bytes to the store in batches.

A full queue blocks the caller (`on_full: block`, the default) or drops with a counter (`drop`); a drop is itself
recorded in the chain as soon as the store takes writes again. A store that fails is retried with backoff; on
shutdown the queue is drained. `depth`, `written`, `dropped` and `lost` are there for /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from agentgw.audit.chain import Prepared, hasher, prepare
from agentgw.audit.checkpoints import Checkpointer, Sink, open_checkpoint_sink
from agentgw.audit.config import Audit
from agentgw.audit.factory import open_store
from agentgw.audit.record import RecordBuilder, checkpoint_record, dropped_record, identity, iso
from agentgw.audit.redact import Redactor
from agentgw.audit.store import AuditStore
from agentgw.exchange import Exchange
from agentgw.secrets import Scrubber, configured_secrets
from agentgw.settings import Settings

log = logging.getLogger("agentgw.audit")

Item = tuple[Exchange, float]  # the Exchange and perf_counter() when it finished
_YIELD_EVERY = 64  # records built between yields to the event loop
_BUILD_WAIT_S = 0.005  # the builder lets records gather this long (still warm in the caches)
_BUILD_BATCH = 64


class Writer:
    def __init__(
        self,
        cfg: Audit,
        store: AuditStore,
        builder: RecordBuilder,
        jsonl: Path | None = None,
        checkpoints: Sink | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.builder = builder
        self.link = hasher(cfg.hmac_key)
        self.block = cfg.on_full == "block"
        self.batch_size = cfg.batch_size
        self.queue: asyncio.Queue[Item] = asyncio.Queue(cfg.queue_size)
        self.jsonl = jsonl
        self.jsonl_stderr = cfg.jsonl == "-"
        self._fh: BinaryIO | None = None
        self.written = 0  # records of calls appended to the store (not the `dropped` records noting drops)
        self.dropped = 0  # records dropped because the queue was full (on_full: drop)
        self.lost = 0  # records that could not be written before shutdown gave up (logged)
        self.build_errors = (
            0  # Exchanges whose record could not be built (a minimal record is written instead)
        )
        self.store_errors = 0  # failed append attempts (each retried)
        self.failing = False  # the last append attempt failed (it is being retried)
        self.last_error: str | None = (
            None  # why the last failed append failed (kept after the store recovers)
        )
        self.pruned = 0  # records removed by retention (each pruning leaves a checkpoint record)
        self.prunes = 0  # retention passes run
        self._drop_window: tuple[int, float, float] | None = None  # unrecorded drops: count, first, last
        self._last_drop_log = 0.0
        self.blocked = 0  # callers waiting for room in the queue right now (on_full: block)
        self._changed = asyncio.Event()  # set whenever a counter above changes (see `until`)
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._pending: list[Prepared] = []  # built, not yet stored
        self._room = asyncio.Event()  # the flusher made room in _pending
        self._ready = asyncio.Event()  # the builder added to _pending (or a drop wants recording)
        self._retention: asyncio.Task[None] | None = None
        self.checkpointer = Checkpointer(checkpoints, cfg.hmac_key, cfg.checkpoints) if checkpoints else None
        self._checkpoints: asyncio.Task[None] | None = None
        self.closed = False
        self.give_up_at: float | None = None  # set on shutdown: stop retrying a dead store after this

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    @property
    def state(self) -> str:
        """`stopped` (not started), `running`, `retrying` (the store refuses appends: retried with backoff) or
        `closed` (shut down)."""
        if self.closed:
            return "closed"
        if self._task is None:
            return "stopped"
        return "retrying" if self.failing else "running"

    # -- request path -------------------------------------------------------------------------------------------

    async def submit(self, ex: Exchange, ended: float) -> None:
        if self.closed:  # after shutdown (a straggler): nobody drains the queue any more, write it directly
            await self._write([(ex, ended)])
            await self.store.aclose()
            return
        try:
            self.queue.put_nowait((ex, ended))
            return
        except asyncio.QueueFull:
            pass
        if self.block and self._task is not None:
            self.blocked += 1
            self._bump()
            try:
                await self.queue.put((ex, ended))  # backpressure: this caller waits for the writer
            finally:
                self.blocked -= 1
                self._bump()
        else:
            self._note_drop()
            self._bump()

    def _bump(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds, re-checking whenever the writer's counters change (for tests and
        operators' tooling: no polling)."""
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    def use_secrets(self, secrets: list[str]) -> None:
        """A registry reload changed the configured secrets: every record built from now on scrubs them."""
        self.builder.use_secrets(secrets)

    def record_drops(self, count: int, first: float, last: float) -> None:
        """Drops decided elsewhere (the gateway side of a writer process, which counts them): put on the record."""
        self._ready.set()
        n, start, _ = self._drop_window or (0, first, last)
        self._drop_window = (n + count, start, last)
        self._bump()

    def _note_drop(self) -> None:
        self._ready.set()  # the flusher records the drop even with nothing else to write
        now = time.time()
        self.dropped += 1
        count, first, _ = self._drop_window or (0, now, now)
        self._drop_window = (count + 1, first, now)
        if now - self._last_drop_log > 10:
            self._last_drop_log = now
            log.warning(
                "audit queue full (%d): records are being dropped (%d so far)",
                self.queue.maxsize,
                self.dropped,
            )

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.jsonl.open("ab")
        self._task = asyncio.create_task(self._build_loop(), name="audit-builder")
        self._flusher = asyncio.create_task(self._flush_loop(), name="audit-flusher")
        if self.cfg.retention.max_age_days is not None:
            self._retention = asyncio.create_task(self._retain(), name="audit-retention")
        if self.checkpointer is not None:
            await self.checkpointer.sink.open()
            self._checkpoints = asyncio.create_task(self.checkpointer.run(), name="audit-checkpoints")

    async def flush(self) -> None:
        """Wait until everything queued so far is in the store."""
        if self._task is None:
            items = [self.queue.get_nowait() for _ in range(self.queue.qsize())]
            for _ in items:
                self.queue.task_done()
            await self._write(items)
            return
        await self.queue.join()

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Drain the queue into the store (retrying a failing store for up to `timeout_s`), then close."""
        self.give_up_at = time.monotonic() + timeout_s
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        await self.flush()
        if self._drop_window is not None:
            await self._store([])
        self.closed = True
        for task in (self._task, self._flusher, self._checkpoints):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._flusher = self._checkpoints = None
        if self.checkpointer is not None:
            await self.checkpointer.write()  # the last records stored are vouched for too
            await self.checkpointer.sink.aclose()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        await self.store.aclose()
        log.info(
            "audit writer closed: %d written, %d dropped, %d lost", self.written, self.dropped, self.lost
        )

    # -- the background tasks -----------------------------------------------------------------------------------
    # The builder turns queued Exchanges into records within 5 ms of their arrival (while they are still warm in
    # the CPU's caches: building them 100 ms later cost 1.5× as much; waking once per record cost more than
    # gathering for 5 ms), keeping only their bytes; the flusher appends
    # those to the store in batches of up to `batch_size`, at most every `batch_wait_ms`. A queue item counts
    # as done once its record is in the store, so `flush()` (queue.join) waits for the store.

    async def _build_loop(self) -> None:
        q = self.queue
        while True:
            while len(self._pending) >= self.batch_size:  # the store is behind: let the queue fill up
                self._room.clear()
                await self._room.wait()
            items = [await q.get()]
            if self.give_up_at is None and q.qsize() < _BUILD_BATCH:
                await asyncio.sleep(_BUILD_WAIT_S)  # one wake-up per few ms, not one per record
            while len(items) + len(self._pending) < self.batch_size and not q.empty():
                items.append(q.get_nowait())
            try:
                self._pending += await self._build(items)
            except Exception:  # never let the builder die: the queue would stop draining
                self.lost += len(items)
                log.exception("audit records of %d calls could not be built", len(items))
                for _ in items:
                    q.task_done()
            self._ready.set()

    async def _flush_loop(self) -> None:
        wait = self.cfg.batch_wait_ms / 1000
        while True:
            while not self._pending and self._drop_window is None:
                self._ready.clear()
                await self._ready.wait()
            if wait and len(self._pending) < self.batch_size and self.give_up_at is None:
                await asyncio.sleep(wait)  # fewer, larger batches: each is a transaction
            n = min(len(self._pending), self.batch_size)
            try:
                await self._store(self._pending[:n])
            except Exception:  # never let the flusher die: the queue would stop draining
                self.lost += n
                log.exception("audit batch of %d records could not be stored", n)
                self._spill(self._pending[:n])
            finally:
                del self._pending[:n]
                self._room.set()
                for _ in range(n):
                    self.queue.task_done()

    async def _build(self, items: list[Item]) -> list[Prepared]:
        out: list[Prepared] = []
        for i, (ex, ended) in enumerate(items):
            if i and not i % _YIELD_EVERY:
                await asyncio.sleep(0)
            try:
                out.append(self.builder.prepared(ex, ended))
            except Exception:
                self.build_errors += 1
                log.exception("audit record could not be built; writing a minimal one")
                out.append(prepare(minimal_record(ex)))
        return out

    async def _write(self, items: list[Item]) -> None:
        """Build and store directly (no background tasks: before start, after close)."""
        await self._store(await self._build(items))

    async def _store(self, prepared: list[Prepared]) -> None:
        """Append (with the record of any drops), retrying a failing store; at shutdown, give up after the
        deadline and spill the records to stderr."""
        drops = self._drop_window
        if drops is not None:
            self._drop_window = None
            prepared = [*prepared, prepare(dropped_record(*drops))]
        if not prepared:
            return
        delay = 0.1
        while True:
            try:
                head = await self.store.append(prepared, self.link)
                break
            except Exception as exc:
                self.store_errors += 1
                self.failing, self.last_error = True, f"{type(exc).__name__}: {exc}"
                self._bump()
                if self.give_up_at is not None and time.monotonic() > self.give_up_at:
                    self.lost += len(prepared)
                    log.error(
                        "audit store unavailable at shutdown (%s): %d records were not written",
                        exc,
                        len(prepared),
                    )
                    self._spill(prepared)
                    return
                log.warning("audit store append failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.written += len(prepared) - (drops is not None)  # submitted = written + dropped + lost + depth
        self.failing = False
        self._bump()
        if self.checkpointer is not None and head is not None:
            await self.checkpointer.advanced(head)
        if self._fh is not None or self.jsonl_stderr:
            try:
                await asyncio.to_thread(self._append_lines, prepared)
            except OSError as exc:  # the copy only: the records are in the store
                log.error("audit JSON-lines copy failed: %s", exc)

    def _append_lines(self, prepared: list[Prepared]) -> None:
        data = b"".join(p.data + b"\n" for p in prepared)
        out = self._fh if self._fh is not None else sys.stderr.buffer
        out.write(data)
        out.flush()

    def _spill(self, prepared: list[Prepared]) -> None:
        """Records the store never took: to stderr as JSON lines, so an operator can recover them."""
        for p in prepared:
            sys.stderr.write("agentgw audit unwritten: " + p.data.decode() + "\n")

    async def _retain(self) -> None:
        days = self.cfg.retention.max_age_days
        assert days is not None
        while True:
            try:
                await self.prune(time.time() - days * 86400)
            except Exception as exc:
                log.warning("audit retention failed: %s", exc)
            await asyncio.sleep(self.cfg.retention.check_interval_s)

    async def prune(self, cutoff: float) -> int:
        def checkpoint(seq: int, h: str, n: int, cut: float) -> Prepared:
            return prepare(checkpoint_record(seq, h, n, cut))

        n = await self.store.prune(cutoff, self.link, checkpoint)
        self.pruned += n
        self.prunes += 1
        self._bump()
        if n:
            log.info("audit retention: pruned %d records older than %s (checkpoint recorded)", n, iso(cutoff))
        return n


def minimal_record(ex: Exchange) -> dict[str, Any]:
    return {**identity(ex), "incomplete": "the full record could not be built"}


class RecordSink(Protocol):
    """Where the audit stage hands finished calls: the in-process Writer, or the gateway's side of the writer
    process (process.py). Both count what they did for /metrics and /readyz."""

    cfg: Audit
    builder: RecordBuilder
    store: AuditStore
    store_errors: int

    @property
    def depth(self) -> int: ...
    @property
    def written(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def last_error(self) -> str | None: ...

    async def submit(self, ex: Exchange, ended: float) -> None: ...
    def use_secrets(self, secrets: list[str]) -> None: ...
    async def start(self) -> None: ...
    async def flush(self) -> None: ...
    async def aclose(self, timeout_s: float = 30.0) -> None: ...
    async def until(self, condition: Callable[[], bool]) -> None: ...


def open_sink(settings: Settings) -> RecordSink | None:
    """What the gateway records through: the writer process (the default) or the in-process Writer."""
    writer = open_writer(settings)
    if writer is None or settings.audit.writer == "inline":
        return writer
    from agentgw.audit.process import ProcessWriter  # the worker process itself uses the Writer

    return ProcessWriter(
        settings.audit, settings.path, writer.store, writer.builder, writer.builder.redactor.known
    )


def open_writer(settings: Settings) -> Writer | None:
    """The writer for `settings.audit` (None when audit is off), its store not yet opened."""
    cfg = settings.audit
    if not cfg.enabled:
        return None
    pricing = {f"llm:{m.name}": m.pricing for m in settings.registry_data.llm.models if m.pricing}
    key = cfg.hmac_key.encode() if cfg.hmac_key else None
    secrets = configured_secrets(settings)
    builder = RecordBuilder(cfg, pricing, Redactor(cfg.redaction, secrets, key), Scrubber(secrets))
    jsonl = settings.resolve(cfg.jsonl) if cfg.jsonl and cfg.jsonl != "-" else None
    sink = open_checkpoint_sink(cfg.checkpoints, settings.resolve)
    return Writer(cfg, open_store(cfg, settings.resolve), builder, jsonl, sink)
