"""Where approval requests live: the record of one request (`Approval`), the store protocol, and the memory and
SQLite stores (PostgreSQL is postgres.py). A store's `decide` is atomic (one UPDATE … WHERE state = 'pending'), so
two approvers, workers or replicas racing on one request get one winner; a pending request past its expiry reads as
`expired` wherever it is read."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

T = TypeVar("T")

PENDING, APPROVED, DENIED, EXPIRED = "pending", "approved", "denied", "expired"
STATES = (PENDING, APPROVED, DENIED, EXPIRED)


@dataclass(slots=True)
class Approval:
    """One approval request. `digest` names the call (principal, target, arguments) so a retry of the same call
    finds it; `used` is set when a call went ahead on the approval (an approval lets one call through)."""

    id: str
    principal: str
    target: str
    action: str
    digest: str
    rule: str | None
    created: float
    expires: float  # pending: when it times out; approved: until when the call may still go ahead on it
    state: str = PENDING
    task_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    arguments: Any = None  # redacted as in the audit record
    decided: float | None = None
    approver: str | None = None
    reason: str | None = None
    used: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # plane, endpoint: shown to approvers

    def shown(self, now: float) -> Approval:
        """As a reader sees it at `now`: a pending request past its expiry is expired."""
        if self.state == PENDING and self.expires <= now:
            return replace(self, state=EXPIRED)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "principal": self.principal,
            "target": self.target,
            "action": self.action,
            "arguments": self.arguments,
            "rule": self.rule,
            "task": self.task_id,
            "trace": self.trace_id,
            "span": self.span_id,
            "created": self.created,
            "expires": self.expires,
            "decided": self.decided,
            "approver": self.approver,
            "reason": self.reason,
            "used": self.used,
            **self.extra,
        }


class ApprovalStore(Protocol):
    async def open(self) -> None: ...

    async def insert(self, a: Approval) -> None: ...

    async def get(self, approval_id: str) -> Approval | None:
        """As stored (the caller applies `shown`)."""

    async def list(self, state: str | None, limit: int, now: float) -> list[Approval]:
        """Newest first, as shown at `now` (`state` filters on the shown state)."""

    async def decide(
        self, approval_id: str, state: str, approver: str, reason: str | None, now: float, expires: float
    ) -> Approval | None:
        """Pending and not expired at `now` → `state` (approved/denied/expired), atomically; the updated request,
        or None when it was not pending (unknown, decided or expired)."""

    async def find(self, principal: str, target: str, digest: str, now: float) -> Approval | None:
        """The newest request for this call that can still let it through: pending, or approved and unused, and
        not expired."""

    async def use(self, approval_id: str, now: float) -> bool:
        """Approved, unused and not expired → used, atomically: whether this call may go ahead on it."""

    async def aclose(self) -> None: ...


class MemoryStore:
    """This process only: lost on restart, invisible to other workers (`approvals.store: memory`)."""

    def __init__(self) -> None:
        self.rows: dict[str, Approval] = {}

    async def open(self) -> None:
        return None

    async def insert(self, a: Approval) -> None:
        self.rows[a.id] = replace(a)

    async def get(self, approval_id: str) -> Approval | None:
        a = self.rows.get(approval_id)
        return replace(a) if a is not None else None

    async def list(self, state: str | None, limit: int, now: float) -> list[Approval]:
        rows = sorted((a.shown(now) for a in self.rows.values()), key=lambda a: a.created, reverse=True)
        return [replace(a) for a in rows if state is None or a.state == state][:limit]

    async def decide(
        self, approval_id: str, state: str, approver: str, reason: str | None, now: float, expires: float
    ) -> Approval | None:
        a = self.rows.get(approval_id)
        if a is None or a.state != PENDING or a.expires <= now:
            return None
        a.state, a.approver, a.reason, a.decided, a.expires = state, approver, reason, now, expires
        return replace(a)

    async def find(self, principal: str, target: str, digest: str, now: float) -> Approval | None:
        found = [
            a
            for a in self.rows.values()
            if (a.principal, a.target, a.digest) == (principal, target, digest)
            and a.expires > now
            and (a.state == PENDING or (a.state == APPROVED and not a.used))
        ]
        return replace(max(found, key=lambda a: a.created)) if found else None

    async def use(self, approval_id: str, now: float) -> bool:
        a = self.rows.get(approval_id)
        if a is None or a.state != APPROVED or a.used or a.expires <= now:
            return False
        a.used = True
        return True

    async def aclose(self) -> None:
        return None


COLUMNS = (
    "id, principal, target, action, digest, rule, created, expires, state, task_id, trace_id, span_id, "
    "arguments, decided, approver, reason, used, extra"
)


def to_row(a: Approval) -> tuple[Any, ...]:
    return (
        a.id,
        a.principal,
        a.target,
        a.action,
        a.digest,
        a.rule,
        a.created,
        a.expires,
        a.state,
        a.task_id,
        a.trace_id,
        a.span_id,
        orjson.dumps(a.arguments).decode(),
        a.decided,
        a.approver,
        a.reason,
        bool(a.used),
        orjson.dumps(a.extra).decode(),
    )


def from_row(r: Any) -> Approval:
    return Approval(
        id=r[0],
        principal=r[1],
        target=r[2],
        action=r[3],
        digest=r[4],
        rule=r[5],
        created=float(r[6]),
        expires=float(r[7]),
        state=r[8],
        task_id=r[9],
        trace_id=r[10],
        span_id=r[11],
        arguments=orjson.loads(r[12]) if r[12] else None,
        decided=float(r[13]) if r[13] is not None else None,
        approver=r[14],
        reason=r[15],
        used=bool(r[16]),
        extra=orjson.loads(r[17]) if r[17] else {},
    )


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    target TEXT NOT NULL,
    action TEXT NOT NULL,
    digest TEXT NOT NULL,
    rule TEXT,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    trace_id TEXT,
    span_id TEXT,
    arguments TEXT,
    decided REAL,
    approver TEXT,
    reason TEXT,
    used INTEGER NOT NULL DEFAULT 0,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS approvals_created ON approvals (created);
CREATE INDEX IF NOT EXISTS approvals_call ON approvals (principal, target, digest);
"""


class SQLiteStore:
    """A table `approvals` in the audit store's SQLite file (WAL; the audit writer keeps its own connection).
    One connection, used from worker threads under a lock: the stdlib driver blocks, and approvals are rare."""

    def __init__(self, path: Path, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                if self._db is None:
                    raise RuntimeError("the approvals store is closed")
                with self._db:  # one transaction: committed, or rolled back on error
                    return fn(self._db)

        return await asyncio.to_thread(call)

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SQLITE_SCHEMA)
            db.commit()
            self._db = db

        await asyncio.to_thread(connect)

    async def insert(self, a: Approval) -> None:
        row = to_row(a)
        await self._run(
            lambda db: db.execute(
                f"INSERT INTO approvals ({COLUMNS}) VALUES ({', '.join('?' * len(row))})", row
            )
        )

    async def get(self, approval_id: str) -> Approval | None:
        r = await self._run(
            lambda db: db.execute(f"SELECT {COLUMNS} FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        )
        return from_row(r) if r is not None else None

    async def list(self, state: str | None, limit: int, now: float) -> list[Approval]:
        if state is None:
            sql, args = f"SELECT {COLUMNS} FROM approvals ORDER BY created DESC LIMIT ?", (limit,)
        elif state == PENDING:
            sql = f"SELECT {COLUMNS} FROM approvals WHERE state = ? AND expires > ? ORDER BY created DESC LIMIT ?"
            args = (PENDING, now, limit)  # type: ignore[assignment]
        elif state == EXPIRED:
            sql = (
                f"SELECT {COLUMNS} FROM approvals WHERE state = ? OR (state = ? AND expires <= ?) "
                "ORDER BY created DESC LIMIT ?"
            )
            args = (EXPIRED, PENDING, now, limit)  # type: ignore[assignment]
        else:
            sql = f"SELECT {COLUMNS} FROM approvals WHERE state = ? ORDER BY created DESC LIMIT ?"
            args = (state, limit)  # type: ignore[assignment]
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [from_row(r).shown(now) for r in rows]

    async def decide(
        self, approval_id: str, state: str, approver: str, reason: str | None, now: float, expires: float
    ) -> Approval | None:
        def body(db: sqlite3.Connection) -> Any:
            cur = db.execute(
                "UPDATE approvals SET state = ?, approver = ?, reason = ?, decided = ?, expires = ? "
                "WHERE id = ? AND state = ? AND expires > ?",
                (state, approver, reason, now, expires, approval_id, PENDING, now),
            )
            if cur.rowcount != 1:
                return None
            return db.execute(f"SELECT {COLUMNS} FROM approvals WHERE id = ?", (approval_id,)).fetchone()

        r = await self._run(body)
        return from_row(r) if r is not None else None

    async def find(self, principal: str, target: str, digest: str, now: float) -> Approval | None:
        r = await self._run(
            lambda db: db.execute(
                f"SELECT {COLUMNS} FROM approvals WHERE principal = ? AND target = ? AND digest = ? "
                "AND expires > ? AND (state = ? OR (state = ? AND used = 0)) ORDER BY created DESC LIMIT 1",
                (principal, target, digest, now, PENDING, APPROVED),
            ).fetchone()
        )
        return from_row(r) if r is not None else None

    async def use(self, approval_id: str, now: float) -> bool:
        cur = await self._run(
            lambda db: db.execute(
                "UPDATE approvals SET used = 1 WHERE id = ? AND state = ? AND used = 0 AND expires > ?",
                (approval_id, APPROVED, now),
            )
        )
        return bool(cur.rowcount == 1)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)
