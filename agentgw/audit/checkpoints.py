"""Signed checkpoints of the audit chain kept outside its store: every `every_records` records or `every_s`
seconds the writer appends (seq, hash, count, time) and a MAC under `audit.hmac_key` to a sink (a JSON-lines
file, or a table in a second PostgreSQL database). `agentgw audit verify` checks the chain against them, so
deleting the newest records (and rolling the head back with them) is found without an `--anchor`."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from agentgw.audit.chain import Head, hasher
from agentgw.audit.config import Checkpoints

log = logging.getLogger("agentgw.audit")


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    seq: int
    hash: str
    count: int
    ts: float
    mac: str

    def line(self) -> bytes:
        return orjson.dumps(
            {"seq": self.seq, "hash": self.hash, "count": self.count, "ts": self.ts, "mac": self.mac}
        )


def _mac(link: Callable[[str, bytes], str], seq: int, h: str, count: int, ts: float) -> str:
    return link(f"checkpoint {seq} {count} {ts!r}", h.encode())  # a label no record hash can take


def sign(key: str | None, head: Head, ts: float) -> SignedCheckpoint:
    count = head.records if head.records is not None else 0
    return SignedCheckpoint(head.seq, head.hash, count, ts, _mac(hasher(key), head.seq, head.hash, count, ts))


def authentic(cp: SignedCheckpoint, key: str | None) -> bool:
    import hmac

    return hmac.compare_digest(cp.mac, _mac(hasher(key), cp.seq, cp.hash, cp.count, cp.ts))


def parse(line: bytes) -> SignedCheckpoint:
    d = orjson.loads(line)
    return SignedCheckpoint(int(d["seq"]), str(d["hash"]), int(d["count"]), float(d["ts"]), str(d["mac"]))


class Sink(Protocol):
    async def open(self) -> None: ...
    async def append(self, cp: SignedCheckpoint) -> None: ...
    async def read(self) -> list[SignedCheckpoint]:
        """Every checkpoint kept; raises ValueError naming a line that cannot be read."""

    async def aclose(self) -> None: ...


class FileSink:
    """One JSON line per checkpoint, appended with O_APPEND (each line one write: writers never interleave)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def append(self, cp: SignedCheckpoint) -> None:
        def write() -> None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, cp.line() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)

        await asyncio.to_thread(write)

    async def read(self) -> list[SignedCheckpoint]:
        if not self.path.exists():
            return []
        out: list[SignedCheckpoint] = []
        for n, line in enumerate((await asyncio.to_thread(self.path.read_bytes)).splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(parse(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise ValueError(f"{self.path}: line {n} is not a checkpoint") from None
        return out

    async def aclose(self) -> None:
        return None


class PostgresSink:
    """A table `agentgw_audit_checkpoints` in a second PostgreSQL database (not the one holding the chain)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        import asyncpg

        if self._conn is None:
            self._conn = await asyncpg.connect(self.dsn, timeout=10)
            await self._conn.execute(
                "CREATE TABLE IF NOT EXISTS agentgw_audit_checkpoints ("
                "seq BIGINT NOT NULL, hash TEXT NOT NULL, count BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, "
                "mac TEXT NOT NULL)"
            )

    async def append(self, cp: SignedCheckpoint) -> None:
        async with self._lock:
            await self._conn.execute(
                "INSERT INTO agentgw_audit_checkpoints (seq, hash, count, ts, mac) VALUES ($1, $2, $3, $4, $5)",
                cp.seq,
                cp.hash,
                cp.count,
                cp.ts,
                cp.mac,
            )

    async def read(self) -> list[SignedCheckpoint]:
        async with self._lock:
            rows = await self._conn.fetch("SELECT seq, hash, count, ts, mac FROM agentgw_audit_checkpoints")
        return [SignedCheckpoint(int(r[0]), str(r[1]), int(r[2]), float(r[3]), str(r[4])) for r in rows]

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def open_checkpoint_sink(cfg: Checkpoints, resolve: Callable[[str], Path]) -> Sink | None:
    if cfg.sink is None:
        return None
    if cfg.sink.startswith(("postgresql://", "postgres://")):
        return PostgresSink(cfg.sink)
    return FileSink(resolve(cfg.sink))


class Checkpointer:
    """Decides when the writer leaves a checkpoint: after `every_records` records since the last one, or when
    `every_s` have passed and the head moved, and once more on close. A sink that fails is logged and counted;
    the records themselves are already stored."""

    def __init__(self, sink: Sink, key: str | None, cfg: Checkpoints) -> None:
        self.sink = sink
        self.key = key
        self.every_records = cfg.every_records
        self.every_s = cfg.every_s
        self.head: Head | None = None  # the newest head this writer appended
        self.last: SignedCheckpoint | None = None
        self.last_at = time.monotonic()
        self.written = 0
        self.errors = 0

    async def advanced(self, head: Head) -> None:
        """After an append that moved the head to `head`."""
        if self.head is None or head.seq > self.head.seq:
            self.head = head
        since = head.seq - (self.last.seq if self.last is not None else 0)
        if since >= self.every_records or time.monotonic() - self.last_at >= self.every_s:
            await self.write()

    async def write(self) -> None:
        """A checkpoint of the newest head, unless the last one already covers it."""
        head = self.head
        if head is None or (self.last is not None and self.last.seq >= head.seq):
            return
        cp = sign(self.key, head, round(time.time(), 6))
        self.last_at = time.monotonic()
        try:
            await self.sink.append(cp)
        except Exception as exc:
            self.errors += 1
            log.error("audit checkpoint at seq %d could not be written to its sink: %s", head.seq, exc)
            return
        self.last = cp
        self.written += 1

    async def run(self) -> None:
        """The periodic part: a checkpoint every `every_s` when records were appended since the last one."""
        while True:
            await asyncio.sleep(self.every_s)
            await self.write()
