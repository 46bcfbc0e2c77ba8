"""The audit store protocol (SQLite and PostgreSQL implement it), the task-list query both share, and
`open_store(settings)` (factory.py). A store appends batches to its one hash chain under a lock (several writers, one
chain), prunes behind a checkpoint, and answers the trace and usage queries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agentgw.audit.chain import GENESIS, Head, Prepared, Row, signed_head
from agentgw.audit.usage import UsageQuery

if TYPE_CHECKING:
    pass

Link = Callable[[str, bytes], str]
Checkpoint = Callable[[int, str, int, float], Prepared]  # (pruned through seq, its hash, count, cutoff)

STATUSES = ("ok", "error", "denied", "cancelled")


@dataclass(frozen=True, slots=True)
class TaskFilter:
    principal: str | None = None
    since: float | None = None  # epoch seconds
    status: str | None = None  # tasks with at least one record of this status
    denied: bool = False  # tasks with at least one denied record
    limit: int = 100
    until: float | None = None  # epoch seconds: tasks that started before
    target: str | None = None  # glob (`llm:gpt-*`, `mcp:docs/*`, `a2a:researcher`): tasks with a step on one
    min_cost: float | None = None  # USD: tasks that cost at least this much


class AuditStore(Protocol):
    kind: str

    async def open(self) -> None:
        """Create the tables if needed."""

    async def append(self, batch: list[Prepared], link: Link) -> Head | None:
        """Append to the chain atomically: read the head under the store's lock, link, insert, move the head
        (signed: seq, count and last hash under the chain's key). Returns the new head (None: empty batch)."""

    async def prune(self, cutoff: float, link: Link, checkpoint: Checkpoint) -> int:
        """Delete the oldest records (a prefix of the chain, all older than `cutoff`) and append a checkpoint
        record that accounts for them. Returns how many were deleted."""

    def rows(self) -> AsyncIterator[Row]:
        """The whole chain in seq order, fetched in pages."""

    async def head(self) -> Head | None: ...

    async def record(self, record_id: str) -> Row | None: ...

    async def present(self, record_ids: list[str]) -> set[str]:
        """Which of these record ids are in the store (what a writer that died had stored before it could say)."""

    async def task_records(self, task_id: str, principal: str | None) -> list[Row]:
        """Records of one task (of one principal, or of every principal with None), in seq order."""

    async def task_principals(self, task_id: str) -> list[str]: ...

    async def declared_children(self, task_id: str, principal: str | None) -> list[tuple[str, str]]:
        """(task id, principal) of tasks whose callers named `task_id` as their parent task."""

    async def span_children(self, trace_id: str, span_ids: list[str]) -> list[tuple[str, str, str]]:
        """(parent span id, task id, principal) of records whose callers carried W3C trace context pointing at
        one of these spans of `trace_id`: downstream agents calling back with the `traceparent` they were sent."""

    async def tasks(self, flt: TaskFilter) -> list[dict[str, Any]]: ...

    async def usage(self, q: UsageQuery) -> dict[str, Any]:
        """Calls, tokens, cost, denials and errors of the call records in [q.since, q.until), by `q.group_by`
        and time bucket (usage.py), read from the rollup the store keeps in step with its records."""

    async def aclose(self) -> None: ...


def record_time(record_id: str) -> float | None:
    """The time a record id carries (its first 16 hex digits are microseconds since the epoch), or None."""
    if len(record_id) != 32:
        return None
    try:
        return int(record_id[:16], 16) / 1_000_000
    except ValueError:
        return None


async def paged(
    fetch: Callable[[int], Awaitable[Sequence[Any]]], to_row: Callable[[Any], Row]
) -> AsyncIterator[Row]:
    """The chain in seq order: `fetch(after_seq)` returns the next page (a short page is the last)."""
    after = -1
    while True:
        got = await fetch(after)
        for r in got:
            yield to_row(r)
        if len(got) < PAGE:
            return
        after = got[-1][0]


PAGE = 1000


def link_batch(
    head: Head | None, batch: list[Prepared], link: Link, count: int
) -> tuple[list[tuple[Any, ...]], Head]:
    """Rows to insert after `head`: (seq, *columns, target, stored form, prev_hash, hash), hashes in hex, and the
    signed head after them. `count`: records in the chain before the batch."""
    seq, prev = (head.seq, head.hash) if head is not None else (0, GENESIS)
    out: list[tuple[Any, ...]] = []
    for item in batch:
        seq += 1
        h = link(prev, item.data)  # the chain hashes the record's JSON, whatever form stores it
        stored = item.stored if item.stored is not None else item.data
        out.append((seq, *item.columns, item.target, stored, prev, h))
        prev = h
    return out, signed_head(link, seq, count + len(batch), prev)


def task_list_sql(
    flt: TaskFilter, ph: Callable[[int], str], table: str, target: str = "NULL"
) -> tuple[str, list[Any]]:
    """One row per (task, principal): when, how many records, denied/errors, tokens, cost (standard SQL for
    both stores). `ph(n)` renders the n-th placeholder; `target` is the store's SQL for a record's target (its
    column; in rows from before it had one, read from their JSON: only a filtered list pays for that)."""
    args: list[Any] = []
    where = ["kind = 'call'", "task_id IS NOT NULL"]

    def arg(value: Any) -> str:
        args.append(value)
        return ph(len(args))

    if flt.principal is not None:
        where.append(f"principal = {arg(flt.principal)}")
    if flt.since is not None:
        where.append(f"ts >= {arg(flt.since)}")
    having: list[str] = []
    if flt.status is not None:
        having.append(f"sum(CASE WHEN status = {arg(flt.status)} THEN 1 ELSE 0 END) > 0")
    if flt.denied:
        having.append(f"sum({_DENIED}) > 0")
    if flt.until is not None:
        having.append(f"min(ts) < {arg(flt.until)}")
    if flt.target is not None:
        having.append(
            f"sum(CASE WHEN {target} LIKE {arg(glob_like(flt.target))} ESCAPE '\\' THEN 1 ELSE 0 END) > 0"
        )
    if flt.min_cost is not None:
        having.append(f"coalesce(sum(cost_usd), 0) >= {arg(flt.min_cost)}")
    sql = (
        f"SELECT task_id, principal, min(ts), max(ts), count(*), sum({_DENIED}), "
        f"sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), sum(tokens), sum(cost_usd) "
        f"FROM {table} WHERE {' AND '.join(where)} GROUP BY task_id, principal"
        + (f" HAVING {' AND '.join(having)}" if having else "")
        + f" ORDER BY min(ts) DESC LIMIT {arg(flt.limit)}"
    )
    return sql, args


_DENIED = "CASE WHEN status = 'denied' THEN 1 ELSE 0 END"


def glob_like(pattern: str) -> str:
    """A glob (`*` any run, `?` one character) as a LIKE pattern with `\\` as its escape."""
    out = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return out.replace("*", "%").replace("?", "_")


def task_row(r: tuple[Any, ...] | Any) -> dict[str, Any]:
    return {
        "task_id": r[0],
        "principal": r[1],
        "started": r[2],
        "ended": r[3],
        "records": int(r[4]),
        "denied": int(r[5] or 0),
        "errors": int(r[6] or 0),
        "tokens": int(r[7] or 0),
        "cost_usd": float(r[8]) if r[8] is not None else None,
    }
