"""The hash chain over a store's records, and its verification.

Each record is stored as JSON bytes; its hash covers the previous record's hash and those bytes
(SHA-256, or HMAC-SHA-256 with `audit.hmac_key`). `verify` walks the chain in order and names the first record
that was edited, deleted, reordered or inserted, checks the indexed columns against the hashed bytes, and the
chain head against the last record (a truncated tail). The head carries (seq, count, last hash) and a MAC over
them under the same key, so with `hmac_key` a head rewritten to hide deleted records is found; signed checkpoints
kept in a second store (checkpoints.py) catch a rollback of records and head together. Pruning leaves a checkpoint
record in the chain that accounts for the records it removed, so a pruned chain still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

if TYPE_CHECKING:
    from agentgw.audit.checkpoints import SignedCheckpoint

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
    target: str | None = None  # a column of its own in the stores (not in INDEX: rows from before lack it)
    stored: bytes | None = None  # the stored form (compact.py), made by the store


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
    target = record.get("target")
    return Prepared(canonical(record), index_columns(record), target if isinstance(target, str) else None)


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


class Head(NamedTuple):
    """The chain head row: the last record's seq and hash, how many records the chain holds, and a MAC over the
    three (None on a head written before heads carried one)."""

    seq: int
    hash: str
    records: int | None = None
    mac: str | None = None


def head_mac(link: Callable[[str, bytes], str], seq: int, count: int, last_hash: str) -> str:
    """The head's MAC: the chain's own link function over a label no record hash can take (hashes are hex)."""
    return link(f"head {seq} {count}", last_hash.encode())


def signed_head(link: Callable[[str, bytes], str], seq: int, count: int, last_hash: str) -> Head:
    return Head(seq, last_hash, count, head_mac(link, seq, count, last_hash))


# -- verification -------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    ok: bool
    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None
    problem: str | None = None  # edited | deleted | reordered | inserted | truncated | head | checkpoint
    seq: int | None = None  # the first record found wrong
    record_id: str | None = None
    detail: str = ""
    checkpoint: int | None = None  # the latest signed checkpoint confirmed (its seq)

    def line(self) -> str:
        if self.ok:
            if not self.count:
                return "OK: the audit chain is empty"
            line = (
                f"OK: {self.count} records verified (seq {self.first_seq}–{self.last_seq}), head {self.head}"
            )
            return line + (
                f"; signed checkpoint at seq {self.checkpoint} confirmed" if self.checkpoint else ""
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


def check_rows(rows: Sequence[Row], head: Head | None, key: str | None) -> list[dict[str, Any]]:
    """Some records checked on their own (a task's, for the console): each one's hash recomputes from its content
    and the hash before it, its index columns say what its content says, and the signed head lies at or past it.
    The links between records of other tasks are `verify`'s business (the whole chain)."""
    link = hasher(key)
    out: list[dict[str, Any]] = []
    for row in rows:
        problem = None
        if link(row.prev_hash, row.data) != row.hash:
            problem = "edited: its content does not match its hash"
        else:
            try:
                record = orjson.loads(row.data)
            except orjson.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not _columns_match(row, record):
                problem = "edited: its index columns disagree with its content"
            elif head is None or head.seq < row.seq:
                problem = "truncated: the signed head does not reach it"
        out.append(
            {
                "seq": row.seq,
                "hash": row.hash,
                "prev_hash": row.prev_hash,
                "ok": problem is None,
                "problem": problem,
            }
        )
    return out


async def verify(
    rows: Rows,
    head: Head | None,
    key: str | None = None,
    checkpoints: Sequence[SignedCheckpoint] = (),
) -> Verdict:
    """Walk the chain (`rows()` yields it in seq order; it is called again to explain a break), then check the
    head (present when records are, its MAC, its count) and the signed checkpoints of a second store (each must
    match the record at its seq; the latest must not lie beyond the chain's end)."""
    link = hasher(key)
    v = Verdict(ok=True)
    prev: Row | None = None
    first: Row | None = None
    anchors: dict[int, str] = {}  # checkpoint records: pruned through seq → the hash there
    broken: tuple[int, Row] | None = None  # (position, row) where the links first disagree
    vouched = {c.seq: c for c in checkpoints}
    seen: dict[int, Row] = {}  # the rows at the seqs the checkpoints vouch for
    pos = -1
    async for row in rows():
        pos += 1
        v.count += 1
        if first is None:
            first = row
        if row.seq in vouched:
            seen[row.seq] = row
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
    bad = _checkpoint_problem(v, checkpoints, seen, anchors, first, prev, key)
    if bad is not None:
        return bad
    if prev is None:
        if head is not None:
            return Verdict(
                False, problem="truncated", seq=head[0], detail="the chain head names a record that is gone"
            )
        return v
    if head is None:
        detail = "records are stored but the chain head is missing: it was deleted (with the newest records?)"
        return _fail(v, prev, "head", detail)
    if head.mac is None or head.records is None:
        if key:  # a keyed chain's head always carries its MAC
            return _fail(
                v, prev, "head", "the chain head carries no MAC: it was rewritten outside the gateway"
            )
    elif head.mac != head_mac(link, head.seq, head.records, head.hash):
        detail = "the chain head does not match its " + (
            "MAC: it was rewritten without the key" if key else "checksum: it was rewritten"
        )
        return _fail(v, prev, "head", detail)
    if head[0] < prev.seq:
        detail = f"it comes after the chain head (seq {head[0]}): it was added outside the gateway"
        return _fail(v, await _row_at_seq(rows, head[0] + 1), "inserted", detail)
    if head[0] != prev.seq or head[1] != prev.hash:
        detail = (
            f"the chain head is seq {head[0]} but the last record is seq {prev.seq}: records were deleted"
        )
        return _fail(v, prev, "truncated", detail)
    if head.records is not None and head.records != v.count:
        detail = f"the chain head counts {head.records} records but {v.count} are stored"
        return _fail(v, prev, "truncated" if head.records > v.count else "inserted", detail)
    v.first_seq, v.last_seq, v.head = first.seq if first else None, prev.seq, prev.hash
    v.checkpoint = max(vouched) if vouched else None
    return v


def _checkpoint_problem(
    v: Verdict,
    checkpoints: Sequence[SignedCheckpoint],
    seen: dict[int, Row],
    anchors: dict[int, str],
    first: Row | None,
    last: Row | None,
    key: str | None,
) -> Verdict | None:
    """The chain against the checkpoints kept elsewhere: each one authentic, each matching the record at its
    seq (or the pruning checkpoint that removed it), none beyond the chain's last record."""
    from agentgw.audit.checkpoints import authentic

    ordered = sorted(checkpoints, key=lambda c: c.seq)
    for cp in ordered:
        if not authentic(cp, key):
            v.ok, v.problem, v.seq = False, "checkpoint", cp.seq
            v.detail = "a checkpoint in the checkpoint store is not signed with this chain's key (forged)"
            return v
    if ordered and (last is None or ordered[-1].seq > last.seq):
        cp = ordered[-1]  # the newest: the strongest evidence of how far the chain reached
        v.ok, v.problem, v.seq = False, "truncated", cp.seq
        end = f"ends at seq {last.seq}" if last is not None else "is empty"
        v.detail = (
            f"a signed checkpoint vouches for seq {cp.seq} (hash {cp.hash[:16]}…) but the chain {end}: "
            "the newest records were deleted"
        )
        return v
    for cp in ordered:
        row = seen.get(cp.seq)
        if row is None:
            if (
                first is not None
                and cp.seq < first.seq
                and (cp.seq not in anchors or anchors[cp.seq] == cp.hash)
            ):
                continue  # pruned by retention (the pruning checkpoint record accounts for it)
            v.ok, v.problem, v.seq = False, "deleted", cp.seq
            v.detail = "a signed checkpoint vouches for this record and it is gone"
            return v
        if row.hash != cp.hash:
            return _fail(
                v, row, "edited", "its hash differs from the signed checkpoint: the chain was rewritten"
            )
    return None


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
