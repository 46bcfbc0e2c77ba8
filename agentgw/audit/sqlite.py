"""The SQLite audit store (the default): one file in WAL mode, used from a worker thread (the stdlib driver is
blocking). Appends run in `BEGIN IMMEDIATE`, so several gateway workers sharing the file keep one chain; the usage
rollup (usage.py) is written in the same transaction as the records it counts. Records are stored compact
(compact.py) and expanded on read; rows written before that read as they are."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from agentgw.audit.chain import INDEX, Head, Prepared, Row
from agentgw.audit.compact import STORED, expand, hash_bytes, hash_hex, pack_all
from agentgw.audit.store import (
    PAGE,
    Checkpoint,
    Link,
    TaskFilter,
    link_batch,
    paged,
    record_time,
    task_list_sql,
    task_row,
)
from agentgw.audit.usage import COLUMNS as USAGE_COLUMNS
from agentgw.audit.usage import METRICS, RollupRow, UsagePlan, UsageQuery, rollup
from agentgw.audit.usage import PAGE as USAGE_PAGE

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    record_id TEXT NOT NULL,  -- time-ordered: found through the ts index (see `record`), no index of its own
    kind TEXT NOT NULL,
    ts REAL NOT NULL,
    task_id TEXT,
    parent_task_id TEXT,
    child_task_id TEXT,
    principal TEXT,
    status TEXT,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,
    trace_id TEXT,
    parent_span_id TEXT,
    target TEXT,  -- NULL in rows from before the compact form (their JSON says it)
    data BLOB NOT NULL,  -- compact.py (JSON text in rows from before)
    prev_hash BLOB NOT NULL,  -- 32 bytes (hex text in rows from before)
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_task ON records (task_id, principal);
CREATE INDEX IF NOT EXISTS records_parent ON records (parent_task_id) WHERE parent_task_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_child ON records (child_task_id) WHERE child_task_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE INDEX IF NOT EXISTS records_span ON records (parent_span_id) WHERE parent_span_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS chain_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    count INTEGER,  -- records in the chain (NULL on a head written before heads were signed)
    mac TEXT  -- over (seq, count, hash) under the chain's key
);
"""
COLS = ", ".join(("seq", *STORED, "data", "prev_hash", "hash"))
# A whole batch is one multi-row INSERT (one statement step): the driver releases the GIL once per step, so
# row-by-row executemany would hand the GIL back and forth with the event loop for every row (measured: a third
# of the gateway's CPU per request went to that convoy). Statements are cached per batch size.
_WIDTH = len(STORED) + 4
_ROW = "(" + ", ".join("?" * _WIDTH) + ")"
_MAX_ROWS = 32_766 // _WIDTH  # SQLite's default limit on parameters per statement (older builds)


def _insert(rows: int) -> str:
    return f"INSERT INTO records ({COLS}) VALUES " + ", ".join([_ROW] * rows)


# The usage rollup (usage.py): one row per (grain, dimension, bucket, key), clustered on its key (WITHOUT ROWID),
# so a query reads one contiguous range per grain. A store without it gets it, built from its records, when opened.
USAGE_SCHEMA = """
CREATE TABLE usage_rollup (
    grain INTEGER NOT NULL,
    dim TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    key TEXT NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    denied INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (grain, dim, bucket, key)
) WITHOUT ROWID
"""
_U_ROW = "(" + ", ".join("?" * len(USAGE_COLUMNS)) + ")"
_U_MAX_ROWS = 32_766 // len(USAGE_COLUMNS)
_U_ADD = ", ".join(f"{m} = {m} + excluded.{m}" for m in METRICS)


def _add_usage(db: sqlite3.Connection, rows: list[RollupRow]) -> None:
    """Add rollup rows (negative ones take records back out), a multi-row upsert per statement."""
    for start in range(0, len(rows), _U_MAX_ROWS):
        part = rows[start : start + _U_MAX_ROWS]
        db.execute(
            f"INSERT INTO usage_rollup ({', '.join(USAGE_COLUMNS)}) VALUES {', '.join([_U_ROW] * len(part))} "
            f"ON CONFLICT (grain, dim, bucket, key) DO UPDATE SET {_U_ADD}",
            [v for r in part for v in r],
        )


def _count_usage(db: sqlite3.Connection, through: int | None, sign: int) -> None:
    """Add (sign 1) or take out (-1) the call records with seq <= `through` (None: all), read in pages."""
    after = -1
    while True:
        got = db.execute(
            f"{SELECT} WHERE seq > ? AND seq <= ? AND kind = 'call' ORDER BY seq LIMIT ?",
            (after, through if through is not None else 2**62, USAGE_PAGE),
        ).fetchall()
        if got:
            _add_usage(db, rollup([_row(r).data for r in got], sign))
        if len(got) < USAGE_PAGE:
            return
        after = got[-1][0]


def _has_usage(db: sqlite3.Connection) -> bool:
    return bool(
        db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage_rollup'").fetchone()
    )


# The stored form read as bytes whatever its type (JSON text in rows from before; a blob edited as text by hand).
SELECT = "SELECT " + COLS.replace("data", "CAST(data AS BLOB)") + " FROM records"


def _page(db: sqlite3.Connection, after: int) -> list[Any]:
    return db.execute(f"{SELECT} WHERE seq > ? ORDER BY seq LIMIT ?", (after, PAGE)).fetchall()


def _row(r: tuple[Any, ...]) -> Row:
    n = len(STORED)
    data = r[n + 1]
    stored = data.encode() if isinstance(data, str) else bytes(data)
    return Row(
        r[0],
        tuple(r[1 : len(INDEX) + 1]),
        expand(stored, r[1 : n + 1]),
        hash_hex(r[n + 2]),
        hash_hex(r[n + 3]),
    )


class SQLiteStore:
    kind = "sqlite"

    def __init__(self, path: Path, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used by one worker thread at a time

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a process crash without fsync
            db.execute("PRAGMA cache_size=-16384")  # 16 MiB: the indexes' hot pages stay in memory
            db.executescript(SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(chain_head)")}
            for col, kind in (("count", "INTEGER"), ("mac", "TEXT")):  # a store created by an older version
                if col not in have:
                    db.execute(f"ALTER TABLE chain_head ADD COLUMN {col} {kind}")
            if "target" not in {r[1] for r in db.execute("PRAGMA table_info(records)")}:
                db.execute("ALTER TABLE records ADD COLUMN target TEXT")  # rows before it: NULL
            if not _has_usage(db):  # a store from before the rollup: built from its records, once
                try:
                    self._tx(db, lambda: None if _has_usage(db) else self._build_usage(db))
                except BaseException:
                    db.close()
                    raise
            self._db = db
        return self._db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                return fn(self._conn())

        return await asyncio.to_thread(call)

    async def open(self) -> None:
        await self._run(lambda db: None)

    @staticmethod
    def _build_usage(db: sqlite3.Connection) -> None:
        """Inside the write transaction (no append runs meanwhile): the rollup table, counting every record."""
        db.execute(USAGE_SCHEMA)
        _count_usage(db, None, 1)

    # -- writing ------------------------------------------------------------------------------------------------

    @staticmethod
    def _head(db: sqlite3.Connection) -> Head | None:
        r = db.execute("SELECT seq, hash, count, mac FROM chain_head WHERE id = 1").fetchone()
        return Head(int(r[0]), str(r[1]), r[2], r[3]) if r else None

    @staticmethod
    def _count(db: sqlite3.Connection, head: Head | None) -> int:
        """Records in the chain: from the head, or counted (a head written before heads carried a count)."""
        if head is not None and head.records is not None:
            return int(head.records)
        return int(db.execute("SELECT count(*) FROM records").fetchone()[0])

    @staticmethod
    def _append(
        db: sqlite3.Connection,
        batch: list[Prepared],
        link: Link,
        count: int | None = None,
        usage: list[RollupRow] | None = None,
    ) -> Head:
        """Inside a write transaction. `count`: records in the chain before the batch (None: from the head);
        `usage`: the batch's rollup rows (None: made here)."""
        head = SQLiteStore._head(db)
        pack_all(batch)  # no-op for a batch packed before the lock was taken
        rows, new = link_batch(head, batch, link, SQLiteStore._count(db, head) if count is None else count)
        n = len(STORED) + 2  # the hashes: stored as their 32 bytes
        for start in range(0, len(rows), _MAX_ROWS):
            part = rows[start : start + _MAX_ROWS]
            db.execute(
                _insert(len(part)),
                [v for r in part for v in (*r[:n], hash_bytes(r[n]), hash_bytes(r[n + 1]))],
            )
        _add_usage(db, rollup([p.data for p in batch]) if usage is None else usage)
        db.execute(
            "INSERT INTO chain_head (id, seq, hash, count, mac) VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
            "SET seq = excluded.seq, hash = excluded.hash, count = excluded.count, mac = excluded.mac",
            (new.seq, new.hash, new.records, new.mac),
        )
        return new

    @staticmethod
    def _tx(db: sqlite3.Connection, body: Callable[[], T]) -> T:
        db.execute("BEGIN IMMEDIATE")  # takes the write lock now: the head read below is the head we extend
        try:
            out = body()
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return out

    async def append(self, batch: list[Prepared], link: Link) -> Head | None:
        if not batch:
            return None

        def call() -> Head:
            usage = rollup([p.data for p in batch])  # parsed and packed before the write lock is taken
            pack_all(batch)
            with self._lock:
                db = self._conn()
                return self._tx(db, lambda: self._append(db, batch, link, usage=usage))

        return await asyncio.to_thread(call)

    async def prune(self, cutoff: float, link: Link, checkpoint: Checkpoint) -> int:
        def body(db: sqlite3.Connection) -> int:
            newer = db.execute("SELECT min(seq) FROM records WHERE ts >= ?", (cutoff,)).fetchone()[0]
            last = (
                newer - 1 if newer is not None else db.execute("SELECT max(seq) FROM records").fetchone()[0]
            )
            if last is None:
                return 0
            r = db.execute("SELECT hash FROM records WHERE seq = ?", (last,)).fetchone()
            if r is None:  # already pruned through there
                return 0
            through = hash_hex(r[0])
            count = self._count(db, self._head(db))  # before the delete (a legacy head is counted)
            _count_usage(db, int(last), -1)  # the rollup counts what the chain still holds
            db.execute("DELETE FROM usage_rollup WHERE calls = 0")
            n = db.execute("DELETE FROM records WHERE seq <= ?", (last,)).rowcount
            self._append(db, [checkpoint(int(last), through, int(n), cutoff)], link, count - n)
            return int(n)

        return await self._run(lambda db: self._tx(db, lambda: body(db)))

    # -- reading ------------------------------------------------------------------------------------------------

    def rows(self) -> AsyncIterator[Row]:
        return paged(lambda after: self._run(partial(_page, after=after)), _row)

    async def head(self) -> Head | None:
        return await self._run(self._head)

    async def record(self, record_id: str) -> Row | None:
        ts = record_time(record_id)
        if ts is None:
            return None
        sql = f"{SELECT} WHERE ts BETWEEN ? AND ? AND record_id = ?"
        r = await self._run(lambda db: db.execute(sql, (ts - 0.01, ts + 0.01, record_id)).fetchone())
        return _row(r) if r else None

    async def present(self, record_ids: list[str]) -> set[str]:
        def lookup(db: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(record_ids), 500):
                part = record_ids[i : i + 500]
                times = [t for t in map(record_time, part) if t is not None]
                if times:  # ids carry their time: the ts index finds them (record_id has no index)
                    marks = ", ".join("?" * len(part))
                    sql = f"SELECT record_id FROM records WHERE ts BETWEEN ? AND ? AND record_id IN ({marks})"
                    args = [min(times) - 0.01, max(times) + 0.01, *part]
                    found.update(r[0] for r in db.execute(sql, args))
            return found

        return await self._run(lookup)

    async def task_records(self, task_id: str, principal: str | None) -> list[Row]:
        sql, args = f"{SELECT} WHERE task_id = ?", [task_id]
        if principal is not None:
            sql, args = sql + " AND principal = ?", [*args, principal]
        got = await self._run(lambda db: db.execute(sql + " ORDER BY seq", args).fetchall())
        return [_row(r) for r in got]

    async def task_principals(self, task_id: str) -> list[str]:
        got = await self._run(
            lambda db: db.execute(
                "SELECT DISTINCT principal FROM records WHERE task_id = ? AND principal IS NOT NULL "
                "ORDER BY principal",
                (task_id,),
            ).fetchall()
        )
        return [str(r[0]) for r in got]

    async def declared_children(self, task_id: str, principal: str | None) -> list[tuple[str, str]]:
        sql, args = "SELECT DISTINCT task_id, principal FROM records WHERE parent_task_id = ?", [task_id]
        if principal is not None:
            sql, args = sql + " AND principal = ?", [*args, principal]
        got = await self._run(lambda db: db.execute(sql + " ORDER BY task_id", args).fetchall())
        return [(str(r[0]), str(r[1])) for r in got]

    async def span_children(self, trace_id: str, span_ids: list[str]) -> list[tuple[str, str, str]]:
        if not span_ids:
            return []
        marks = ", ".join("?" * len(span_ids))
        sql = (
            "SELECT DISTINCT parent_span_id, task_id, principal FROM records "
            f"WHERE parent_span_id IN ({marks}) AND trace_id = ? AND task_id IS NOT NULL AND principal IS NOT NULL"
        )
        got = await self._run(lambda db: db.execute(sql, [*span_ids, trace_id]).fetchall())
        return [(str(r[0]), str(r[1]), str(r[2])) for r in got]

    async def tasks(self, flt: TaskFilter) -> list[dict[str, Any]]:
        target = "CASE WHEN target IS NOT NULL THEN target WHEN typeof(data) = 'text' THEN json_extract(data, '$.target') END"
        sql, args = task_list_sql(flt, lambda n: "?", "records", target)
        got = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [task_row(r) for r in got]

    async def usage(self, q: UsageQuery) -> dict[str, Any]:
        plan = UsagePlan(q, lambda n: "?", "usage_rollup")

        def read(db: sqlite3.Connection) -> list[Any]:
            db.execute("BEGIN")  # both reads see one snapshot (WAL)
            try:
                nxt = plan.then(db.execute(*plan.first()).fetchall())
                return db.execute(*nxt).fetchall() if nxt is not None else []
            finally:
                db.execute("COMMIT")

        return plan.answer(await self._run(read))

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)
