"""The PostgreSQL audit store (asyncpg): any number of gateway replicas append to one chain. Each batch is one
transaction that locks the chain-head row (`SELECT … FOR UPDATE`), links the batch after it, copies it in and
moves the head, so concurrent writers serialize their appends and the chain stays verifiable; the same transaction
adds the batch to the usage rollup (usage.py). Records are stored compact (compact.py) and expanded on read; rows
written before that read as they are, and a table created before it keeps its hex hash columns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from agentgw.audit.chain import GENESIS, INDEX, Head, Prepared, Row
from agentgw.audit.compact import STORED, expand, hash_bytes, hash_hex, pack_all
from agentgw.audit.config import PostgresStore as PostgresConfig
from agentgw.audit.store import (
    PAGE,
    Checkpoint,
    Link,
    TaskFilter,
    link_batch,
    paged,
    task_list_sql,
    task_row,
)
from agentgw.audit.usage import COLUMNS as USAGE_COLUMNS
from agentgw.audit.usage import METRICS, RollupRow, UsagePlan, UsageQuery, rollup
from agentgw.audit.usage import PAGE as USAGE_PAGE

COLUMNS = ["seq", *STORED, "data", "prev_hash", "hash"]


def _row(r: Any) -> Row:
    stored = tuple(r[i] for i in range(1, len(STORED) + 1))
    return Row(
        r[0],
        stored[: len(INDEX)],
        expand(bytes(r["data"]), stored),
        hash_hex(r["prev_hash"]),
        hash_hex(r["hash"]),
    )


class PostgresStore:
    kind = "postgres"

    def __init__(self, cfg: PostgresConfig) -> None:
        self.cfg = cfg
        self.schema = cfg.schema_name
        self.records_name = f"{cfg.table_prefix}_records"
        self.records = f'"{self.schema}"."{self.records_name}"'
        self.head_table = f'"{self.schema}"."{cfg.table_prefix}_head"'
        self.usage_table = f'"{self.schema}"."{cfg.table_prefix}_usage"'
        types = ("int", "text", "bigint", "text", *["bigint"] * len(METRICS))
        self.add_usage = (  # one statement per batch: the rows as arrays, unnested
            f"INSERT INTO {self.usage_table} AS u ({', '.join(USAGE_COLUMNS)}) SELECT * FROM unnest("
            + ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
            + ") ON CONFLICT (grain, dim, bucket, key) DO UPDATE SET "
            + ", ".join(f"{m} = u.{m} + excluded.{m}" for m in METRICS)
        )
        self.select = f"SELECT {', '.join(COLUMNS)} FROM {self.records}"
        self._pool: asyncpg.Pool | None = None
        self._binary = True  # hashes as 32 bytes (False: a table created before, with hex text columns)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL audit store is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = await asyncpg.create_pool(
            self.cfg.dsn, min_size=1, max_size=self.cfg.pool_size, timeout=self.cfg.connect_timeout_s
        )
        p, r, h = self.cfg.table_prefix, self.records, self.head_table
        ddl = f"""
            CREATE SCHEMA IF NOT EXISTS "{self.schema}";
            CREATE TABLE IF NOT EXISTS {r} (
                seq BIGINT PRIMARY KEY,
                record_id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                task_id TEXT,
                parent_task_id TEXT,
                child_task_id TEXT,
                principal TEXT,
                status TEXT,
                tokens BIGINT NOT NULL DEFAULT 0,
                cost_usd DOUBLE PRECISION,
                trace_id TEXT,
                parent_span_id TEXT,
                target TEXT,
                data BYTEA NOT NULL,
                prev_hash BYTEA NOT NULL,
                hash BYTEA NOT NULL
            );
            ALTER TABLE {r} ADD COLUMN IF NOT EXISTS target TEXT;  -- NULL in rows from before (their JSON has it)
            CREATE INDEX IF NOT EXISTS {p}_task ON {r} (task_id, principal);
            CREATE INDEX IF NOT EXISTS {p}_parent ON {r} (parent_task_id) WHERE parent_task_id IS NOT NULL;
            CREATE INDEX IF NOT EXISTS {p}_child ON {r} (child_task_id) WHERE child_task_id IS NOT NULL;
            CREATE INDEX IF NOT EXISTS {p}_ts ON {r} (ts);
            CREATE INDEX IF NOT EXISTS {p}_span ON {r} (parent_span_id) WHERE parent_span_id IS NOT NULL;
            CREATE TABLE IF NOT EXISTS {h} (
                id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL
            );
            ALTER TABLE {h} ADD COLUMN IF NOT EXISTS count BIGINT;  -- NULL: a head from before heads were signed
            ALTER TABLE {h} ADD COLUMN IF NOT EXISTS mac TEXT;  -- over (seq, count, hash) under the chain's key
            INSERT INTO {h} (id, seq, hash) VALUES (1, 0, '{GENESIS}') ON CONFLICT (id) DO NOTHING;
        """
        try:
            async with pool.acquire() as conn, conn.transaction():
                # Replicas starting together would race on CREATE … IF NOT EXISTS: one at a time.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", ddl_lock(self.schema))
                fresh = await conn.fetchval("SELECT to_regclass($1)", r) is None
                await conn.execute(ddl)
                if fresh:  # a rollup left behind by a dropped records table counts nothing of the new one
                    await conn.execute(f"DROP TABLE IF EXISTS {self.usage_table}")
                if await conn.fetchval("SELECT to_regclass($1)", self.usage_table) is None:
                    await self._build_usage(conn)
                self._binary = (
                    await conn.fetchval(
                        "SELECT data_type FROM information_schema.columns WHERE table_schema = $1 "
                        "AND table_name = $2 AND column_name = 'hash'",
                        self.schema,
                        self.records_name,
                    )
                    == "bytea"
                )
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def _build_usage(self, conn: Any) -> None:
        """The usage rollup of a store from before it (or a new one), counting every record. The chain head is
        locked meanwhile: no replica appends until the rollup holds everything before its batch."""
        await conn.execute(
            f"""CREATE TABLE {self.usage_table} (
                grain INTEGER NOT NULL,
                dim TEXT NOT NULL,
                bucket BIGINT NOT NULL,
                key TEXT NOT NULL,
                calls BIGINT NOT NULL,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                total_tokens BIGINT NOT NULL,
                cost_nanos BIGINT NOT NULL,
                denied BIGINT NOT NULL,
                errors BIGINT NOT NULL,
                PRIMARY KEY (grain, dim, bucket, key)
            )"""
        )
        await self._locked_head(conn)
        await self._count_usage(conn, None, 1)

    async def _add_usage(self, conn: Any, rows: list[RollupRow]) -> None:
        if rows:
            await conn.execute(self.add_usage, *(list(col) for col in zip(*rows, strict=True)))

    async def _count_usage(self, conn: Any, through: int | None, sign: int) -> None:
        """Add (sign 1) or take out (-1) the call records with seq <= `through` (None: all), read in pages."""
        after = -1
        while True:
            got = await conn.fetch(
                f"{self.select} WHERE seq > $1 AND seq <= $2 AND kind = 'call' ORDER BY seq LIMIT $3",
                after,
                through if through is not None else 2**62,
                USAGE_PAGE,
            )
            if got:
                await self._add_usage(conn, rollup([_row(r).data for r in got], sign))
            if len(got) < USAGE_PAGE:
                return
            after = got[-1][0]

    # -- writing ------------------------------------------------------------------------------------------------

    async def _locked_head(self, conn: Any) -> tuple[Head | None, int]:
        """The head, locked for this transaction (None: an empty chain), and the records the chain holds."""
        r = await conn.fetchrow(
            f"SELECT seq, hash, count, mac FROM {self.head_table} WHERE id = 1 FOR UPDATE"
        )
        head = Head(int(r[0]), str(r[1]), r[2], r[3]) if r is not None and r[0] else None
        if head is None:
            return None, 0
        if head.records is not None:
            return head, int(head.records)
        return head, int(await conn.fetchval(f"SELECT count(*) FROM {self.records}"))  # a legacy head

    async def _append(
        self,
        conn: Any,
        batch: list[Prepared],
        link: Link,
        locked: tuple[Head | None, int],
        usage: list[RollupRow] | None = None,
    ) -> Head:
        """`usage`: the batch's rollup rows (None: made here)."""
        pack_all(batch)  # no-op for a batch packed before the lock was taken
        rows, new = link_batch(locked[0], batch, link, locked[1])
        if self._binary:
            n = len(STORED) + 2
            rows = [(*r[:n], hash_bytes(r[n]), hash_bytes(r[n + 1])) for r in rows]
        await conn.copy_records_to_table(
            self.records_name, records=rows, columns=COLUMNS, schema_name=self.schema
        )
        await self._add_usage(conn, rollup([p.data for p in batch]) if usage is None else usage)
        await conn.execute(
            f"UPDATE {self.head_table} SET seq = $1, hash = $2, count = $3, mac = $4 WHERE id = 1",
            new.seq,
            new.hash,
            new.records,
            new.mac,
        )
        return new

    async def append(self, batch: list[Prepared], link: Link) -> Head | None:
        if not batch:
            return None
        usage = rollup([p.data for p in batch])  # made (and the batch packed) before the chain is locked
        await asyncio.to_thread(pack_all, batch)  # deflate lets go of the GIL: records keep being built
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._append(conn, batch, link, await self._locked_head(conn), usage)

    async def prune(self, cutoff: float, link: Link, checkpoint: Checkpoint) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            head, count = await self._locked_head(conn)  # the chain lock: no append runs while we prune
            if head is None:
                return 0
            newer = await conn.fetchval(f"SELECT min(seq) FROM {self.records} WHERE ts >= $1", cutoff)
            last = newer - 1 if newer is not None else head[0]
            h = await conn.fetchval(f"SELECT hash FROM {self.records} WHERE seq = $1", last)
            if h is None:
                return 0
            h = hash_hex(h)
            await self._count_usage(conn, int(last), -1)  # the rollup counts what the chain still holds
            await conn.execute(f"DELETE FROM {self.usage_table} WHERE calls = 0")
            status = await conn.execute(f"DELETE FROM {self.records} WHERE seq <= $1", last)
            n = int(status.split()[-1])
            await self._append(conn, [checkpoint(int(last), str(h), n, cutoff)], link, (head, count - n))
            return n

    # -- reading ------------------------------------------------------------------------------------------------

    def rows(self) -> AsyncIterator[Row]:
        sql = f"{self.select} WHERE seq > $1 ORDER BY seq LIMIT $2"
        return paged(lambda after: self.pool.fetch(sql, after, PAGE), _row)

    async def head(self) -> Head | None:
        r = await self.pool.fetchrow(f"SELECT seq, hash, count, mac FROM {self.head_table} WHERE id = 1")
        return Head(int(r[0]), str(r[1]), r[2], r[3]) if r is not None and r[0] else None

    async def record(self, record_id: str) -> Row | None:
        r = await self.pool.fetchrow(f"{self.select} WHERE record_id = $1", record_id)
        return _row(r) if r is not None else None

    async def present(self, record_ids: list[str]) -> set[str]:
        got = await self.pool.fetch(
            f"SELECT record_id FROM {self.records} WHERE record_id = ANY($1::text[])", record_ids
        )
        return {str(r[0]) for r in got}

    async def task_records(self, task_id: str, principal: str | None) -> list[Row]:
        if principal is None:
            got = await self.pool.fetch(f"{self.select} WHERE task_id = $1 ORDER BY seq", task_id)
        else:
            got = await self.pool.fetch(
                f"{self.select} WHERE task_id = $1 AND principal = $2 ORDER BY seq", task_id, principal
            )
        return [_row(r) for r in got]

    async def task_principals(self, task_id: str) -> list[str]:
        got = await self.pool.fetch(
            f"SELECT DISTINCT principal FROM {self.records} WHERE task_id = $1 AND principal IS NOT NULL "
            "ORDER BY principal",
            task_id,
        )
        return [str(r[0]) for r in got]

    async def declared_children(self, task_id: str, principal: str | None) -> list[tuple[str, str]]:
        sql = f"SELECT DISTINCT task_id, principal FROM {self.records} WHERE parent_task_id = $1"
        if principal is None:
            got = await self.pool.fetch(sql + " ORDER BY task_id", task_id)
        else:
            got = await self.pool.fetch(sql + " AND principal = $2 ORDER BY task_id", task_id, principal)
        return [(str(r[0]), str(r[1])) for r in got]

    async def span_children(self, trace_id: str, span_ids: list[str]) -> list[tuple[str, str, str]]:
        if not span_ids:
            return []
        got = await self.pool.fetch(
            f"SELECT DISTINCT parent_span_id, task_id, principal FROM {self.records} "
            "WHERE parent_span_id = ANY($1::text[]) AND trace_id = $2 AND task_id IS NOT NULL "
            "AND principal IS NOT NULL",
            span_ids,
            trace_id,
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in got]

    async def tasks(self, flt: TaskFilter) -> list[dict[str, Any]]:
        target = (
            "CASE WHEN target IS NOT NULL THEN target "
            "WHEN get_byte(data, 0) = 123 THEN convert_from(data, 'UTF8')::jsonb ->> 'target' END"
        )
        sql, args = task_list_sql(flt, lambda n: f"${n}", self.records, target)
        return [task_row(r) for r in await self.pool.fetch(sql, *args)]

    async def usage(self, q: UsageQuery) -> dict[str, Any]:
        plan = UsagePlan(q, lambda n: f"${n}", self.usage_table)
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            sql, args = plan.first()  # both reads see one snapshot
            nxt = plan.then(await conn.fetch(sql, *args))
            rows = await conn.fetch(nxt[0], *nxt[1]) if nxt is not None else []
        return plan.answer(rows)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def ddl_lock(schema: str) -> str:
    """The advisory lock every store takes around its CREATE … IF NOT EXISTS in `schema`: replicas (and the audit
    and approval stores of one gateway) starting together would otherwise race in PostgreSQL's catalog
    (duplicate key in pg_type / pg_namespace)."""
    return f"agentgw-ddl-{schema}"
