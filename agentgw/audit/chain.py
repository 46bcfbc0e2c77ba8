"""The hash chain over a store's records, and its verification.

Each record is stored as JSON bytes; its hash covers the previous record's hash and those bytes
(SHA-256, or HMAC-SHA-256 with `audit.hmac_key`). `verify` walks the chain in order and names the first record
that was edited, deleted, reordered or inserted, checks the indexed columns against the hashed bytes, and the
chain head against the last record (a truncated tail). Pruning leaves a checkpoint record in the chain that
accounts for the records it removed, so a pruned chain still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS = "0" * 64
INDEX = (
    "record_id",
    "kind",
    "ts",
    "task_id",
    "parent_task_id",
    "child_task_id",
    "principal",
    "status",
    "tokens",
    "cost_usd",
    "trace_id",
    "parent_span_id",
)  # the columns every store keeps beside the bytes, for queries; all derived from the record


@dataclass(slots=True)
class Prepared:
    """A record ready to append: its canonical bytes and the indexed columns derived from them."""

    data: bytes
    columns: tuple[Any, ...]


@dataclass(slots=True)
class Row:
    seq: int
    columns: tuple[Any, ...]  # in INDEX order
    data: bytes
    prev_hash: str
    hash: str


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes stored and hashed. Verification hashes the stored bytes as they are (it never re-serializes),
    so no sorted-key canonical form is needed."""
    return orjson.dumps(record)


def index_columns(record: dict[str, Any]) -> tuple[Any, ...]:
    usage = record.get("usage") or {}
    cost = record.get("cost") or {}
    return (
        record.get("record_id"),
        record.get("kind", "call"),
        record.get("ts"),
        record.get("task_id"),
        record.get("parent_task_id"),
        record.get("child_task_id"),
        record.get("principal"),
        record.get("status"),
        int(usage.get("total_tokens") or 0),
        cost.get("usd"),
        record.get("trace_id"),
        record.get("parent_span_id"),
    )


def prepare(record: dict[str, Any]) -> Prepared:
    return Prepared(canonical(record), index_columns(record))


def hasher(key: str | None) -> Callable[[str, bytes], str]:
    """link(prev_hash, data) → this record's hash."""
    if key:
        k = key.encode()

        def keyed(prev: str, data: bytes) -> str:
            return hmac.new(k, prev.encode() + b"\n" + data, hashlib.sha256).hexdigest()

        return keyed

    def plain(prev: str, data: bytes) -> str:
        return hashlib.sha256(prev.encode() + b"\n" + data).hexdigest()

    return plain


# -- verification -------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    ok: bool
    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None
    problem: str | None = None  # edited | deleted | reordered | inserted | truncated
    seq: int | None = None  # the first record found wrong
    record_id: str | None = None
    detail: str = ""

    def line(self) -> str:
        if self.ok:
            if not self.count:
                return "OK: the audit chain is empty"
            return (
                f"OK: {self.count} records verified (seq {self.first_seq}–{self.last_seq}), head {self.head}"
            )
        where = f"record seq {self.seq}" + (f" (id {self.record_id})" if self.record_id else "")
        return f"FAILED: {where}: {self.problem}: {self.detail}"


def _columns_match(row: Row, record: dict[str, Any]) -> bool:
    expected = index_columns(record)
    for a, b in zip(expected, row.columns, strict=True):
        if isinstance(a, float) or isinstance(b, float):
            if a is None or b is None or abs(float(a) - float(b)) > 1e-6:
                return False
        elif a != b:
            return False
    return True


Rows = Callable[[], AsyncIterable[Row]]


async def verify(rows: Rows, head: tuple[int, str] | None, key: str | None = None) -> Verdict:
    """Walk the chain (`rows()` yields it in seq order; it is called again to explain a break)."""
    link = hasher(key)
    v = Verdict(ok=True)
    prev: Row | None = None
    first: Row | None = None
    anchors: dict[int, str] = {}  # checkpoint records: pruned through seq → the hash there
    broken: tuple[int, Row] | None = None  # (position, row) where the links first disagree
    pos = -1
    async for row in rows():
        pos += 1
        v.count += 1
        if first is None:
            first = row
        if broken is None:
            if link(row.prev_hash, row.data) != row.hash:
                return _fail(v, row, "edited", "its content does not match its hash")
            try:
                record = orjson.loads(row.data)
            except orjson.JSONDecodeError:
                return _fail(v, row, "edited", "its content is not valid JSON")
            if not isinstance(record, dict) or not _columns_match(row, record):
                return _fail(v, row, "edited", "its indexed columns do not match its hashed content")
            if record.get("kind") == "checkpoint":
                anchors[int(record["pruned_through_seq"])] = str(record["pruned_through_hash"])
            if prev is not None and (row.prev_hash != prev.hash or row.seq != prev.seq + 1):
                broken = (pos, row)
        prev = row
    if first is not None and first.prev_hash != GENESIS and anchors.get(first.seq - 1) != first.prev_hash:
        detail = f"the records before seq {first.seq} are missing and no checkpoint accounts for them"
        return _fail(v, first, "deleted", detail)
    if broken is not None:
        return await _explain(v, rows, broken[0], set(anchors.values()))
    if prev is None:
        if head is not None:
            return Verdict(
                False, problem="truncated", seq=head[0], detail="the chain head names a record that is gone"
            )
        return v
    if head is not None and head[0] < prev.seq:
        detail = f"it comes after the chain head (seq {head[0]}): it was added outside the gateway"
        return _fail(v, await _row_at_seq(rows, head[0] + 1), "inserted", detail)
    if head is not None and (head[0] != prev.seq or head[1] != prev.hash):
        detail = (
            f"the chain head is seq {head[0]} but the last record is seq {prev.seq}: records were deleted"
        )
        return _fail(v, prev, "truncated", detail)
    v.first_seq, v.last_seq, v.head = first.seq if first else None, prev.seq, prev.hash
    return v


def _fail(v: Verdict, row: Row, problem: str, detail: str) -> Verdict:
    v.ok, v.problem, v.seq, v.record_id, v.detail = False, problem, row.seq, str(row.columns[0]), detail
    return v


async def _explain(v: Verdict, rows: Rows, i: int, anchors: set[str]) -> Verdict:
    """Why the link into position `i` is broken: a second pass that knows every record's place."""
    where: dict[str, int] = {}
    window: list[Row] = []
    pos = -1
    async for row in rows():
        pos += 1
        where.setdefault(row.hash, pos)
        if i - 1 <= pos <= i + 1:
            window.append(row)
    before, row = window[0], window[1]
    after = window[2] if len(window) > 2 else None
    j = where.get(row.prev_hash)
    if j is not None and j > i:
        return _fail(
            v,
            row,
            "reordered",
            f"it names seq {await _seq_at(rows, j)} as its predecessor, which comes later",
        )
    if after is not None and after.prev_hash == before.hash:
        return _fail(v, row, "inserted", f"seq {after.seq} follows seq {before.seq} directly")
    if j is not None and j < i - 1:
        first = await _row_at(rows, j + 1)
        return _fail(v, first, "inserted", f"seq {row.seq} follows seq {await _seq_at(rows, j)} directly")
    if row.prev_hash == GENESIS or row.prev_hash in anchors:
        first = await _row_at(rows, 0)
        return _fail(v, first, "inserted", f"seq {row.seq} is the start of the chain")
    if row.prev_hash == before.hash:  # linked, but seq numbers skip: deleted, then the chain re-linked
        return _fail(v, row, "deleted", f"seq {before.seq + 1}–{row.seq - 1} are missing")
    return _fail(
        v, row, "deleted", f"the record before it (after seq {before.seq}) is missing or was replaced"
    )


async def _row_at(rows: Rows, pos: int) -> Row:
    p = -1
    async for row in rows():
        p += 1
        if p == pos:
            return row
    raise IndexError(pos)


async def _row_at_seq(rows: Rows, seq: int) -> Row:
    async for row in rows():
        if row.seq >= seq:
            return row
    raise IndexError(seq)


async def _seq_at(rows: Rows, pos: int) -> int:
    return (await _row_at(rows, pos)).seq
