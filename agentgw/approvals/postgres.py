"""The approvals store in the audit store's PostgreSQL database (`audit.store: postgres`): a table
`<table_prefix>_approvals` beside the records, shared by every worker and replica."""

from __future__ import annotations

from typing import Any

import asyncpg

from agentgw.approvals.store import APPROVED, COLUMNS, EXPIRED, PENDING, Approval, from_row, to_row
from agentgw.audit.config import PostgresStore as PostgresConfig
from agentgw.audit.postgres import ddl_lock


class PostgresStore:
    def __init__(self, cfg: PostgresConfig) -> None:
        self.cfg = cfg
        self.table = f'"{cfg.schema_name}"."{cfg.table_prefix}_approvals"'
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL approvals store is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = await asyncpg.create_pool(
            self.cfg.dsn, min_size=1, max_size=2, timeout=self.cfg.connect_timeout_s
        )
        t, p = self.table, self.cfg.table_prefix
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", ddl_lock(self.cfg.schema_name))
            await conn.execute(
                f"""
            CREATE SCHEMA IF NOT EXISTS "{self.cfg.schema_name}";
            CREATE TABLE IF NOT EXISTS {t} (
                id TEXT PRIMARY KEY,
                principal TEXT NOT NULL,
                target TEXT NOT NULL,
                action TEXT NOT NULL,
                digest TEXT NOT NULL,
                rule TEXT,
                created DOUBLE PRECISION NOT NULL,
                expires DOUBLE PRECISION NOT NULL,
                state TEXT NOT NULL,
                task_id TEXT,
                trace_id TEXT,
                span_id TEXT,
                arguments TEXT,
                decided DOUBLE PRECISION,
                approver TEXT,
                reason TEXT,
                used BOOLEAN NOT NULL DEFAULT FALSE,
                extra TEXT
            );
            CREATE INDEX IF NOT EXISTS {p}_approvals_created ON {t} (created);
            CREATE INDEX IF NOT EXISTS {p}_approvals_call ON {t} (principal, target, digest);
            """
            )

    async def insert(self, a: Approval) -> None:
        row = to_row(a)
        marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
        await self.pool.execute(f"INSERT INTO {self.table} ({COLUMNS}) VALUES ({marks})", *row)

    async def get(self, approval_id: str) -> Approval | None:
        r = await self.pool.fetchrow(f"SELECT {COLUMNS} FROM {self.table} WHERE id = $1", approval_id)
        return from_row(r) if r is not None else None

    async def list(self, state: str | None, limit: int, now: float) -> list[Approval]:
        sel = f"SELECT {COLUMNS} FROM {self.table}"
        args: list[Any]
        if state is None:
            sql, args = f"{sel} ORDER BY created DESC LIMIT $1", [limit]
        elif state == PENDING:
            sql, args = (
                f"{sel} WHERE state = $1 AND expires > $2 ORDER BY created DESC LIMIT $3",
                [state, now, limit],
            )
        elif state == EXPIRED:
            sql = f"{sel} WHERE state = $1 OR (state = $2 AND expires <= $3) ORDER BY created DESC LIMIT $4"
            args = [EXPIRED, PENDING, now, limit]
        else:
            sql, args = f"{sel} WHERE state = $1 ORDER BY created DESC LIMIT $2", [state, limit]
        return [from_row(r).shown(now) for r in await self.pool.fetch(sql, *args)]

    async def decide(
        self, approval_id: str, state: str, approver: str, reason: str | None, now: float, expires: float
    ) -> Approval | None:
        r = await self.pool.fetchrow(
            f"UPDATE {self.table} SET state = $1, approver = $2, reason = $3, decided = $4, expires = $5 "
            f"WHERE id = $6 AND state = $7 AND expires > $4 RETURNING {COLUMNS}",
            state,
            approver,
            reason,
            now,
            expires,
            approval_id,
            PENDING,
        )
        return from_row(r) if r is not None else None

    async def find(self, principal: str, target: str, digest: str, now: float) -> Approval | None:
        r = await self.pool.fetchrow(
            f"SELECT {COLUMNS} FROM {self.table} WHERE principal = $1 AND target = $2 AND digest = $3 "
            "AND expires > $4 AND (state = $5 OR (state = $6 AND NOT used)) ORDER BY created DESC LIMIT 1",
            principal,
            target,
            digest,
            now,
            PENDING,
            APPROVED,
        )
        return from_row(r) if r is not None else None

    async def use(self, approval_id: str, now: float) -> bool:
        status = await self.pool.execute(
            f"UPDATE {self.table} SET used = TRUE WHERE id = $1 AND state = $2 AND NOT used AND expires > $3",
            approval_id,
            APPROVED,
            now,
        )
        return bool(status == "UPDATE 1")

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
