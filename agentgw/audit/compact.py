"""The stored form of an audit record (format 1): its JSON, the bytes the chain hashes, with the values the store
already keeps as columns cut out (read back from those columns), deflated against a built-in dictionary of typical
records. `expand` gives back exactly the hashed bytes; a row stored before this form (plain JSON, first byte `{`)
reads as it is. Hashes are stored as their 32 raw bytes and read back as hex."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import orjson

from agentgw.audit.chain import INDEX, Prepared
from agentgw.audit.zdict import ZDICT_1

FORMAT_1 = 1  # any first byte other than `{`: plain JSON records always start with it
STORED = (*INDEX, "target")  # the columns a row keeps beside its stored form, in the order `pack` reads them
# The values cut out: those of the columns that are ids, names or times (the rest cost a byte or two deflated),
# each (its column's place in STORED, its key in the record, its type there; a value of another type stays put,
# so what the column gives back on read is what was cut out). Raw control bytes stand for them: JSON text never
# holds one (orjson escapes them in strings).
_CUT = tuple(
    (i, b'"' + c.encode() + b'":', bytes((i + 1,)), float if c == "ts" else str)
    for i, c in enumerate(STORED)
    if c not in ("kind", "status", "tokens", "cost_usd")
)
_ANY_MARK = re.compile(b"[\x01-\x1f]")
# Level 6: measured on typical records, 17 µs and 220 B per record against level 2's 13 µs and 240 B (which
# made SQLite rows 56 B larger: fewer per page) and level 9's nothing more. An 8 KiB window (the dictionary and a
# typical record fit in it) and small hash tables; each record starts from a copy of a compressor that has
# already read the dictionary (setting one up costs more).
_PRIMED = zlib.compressobj(6, zlib.DEFLATED, -13, 5, zlib.Z_DEFAULT_STRATEGY, ZDICT_1)


def columns_of(p: Prepared) -> tuple[Any, ...]:
    """The values a row keeps in its STORED columns."""
    return (*p.columns, p.target)


def cut(data: bytes, columns: Sequence[Any]) -> bytes:
    """The JSON with each cut column's value, where it first appears under its key (the record's top level, near
    the start), replaced by its mark: the mark stands for exactly those bytes, wherever they were."""
    body = data
    for i, needle, mark, kind in _CUT:
        value = columns[i]
        if type(value) is kind:
            full = needle + orjson.dumps(value)
            at = body.find(full)
            if at >= 0:
                body = body[: at + len(needle)] + mark + body[at + len(full) :]
    return body


def pack(data: bytes, columns: Sequence[Any]) -> bytes:
    """The stored form of a record's JSON `data` whose row holds `columns` (STORED order). Reads back to exactly
    `data` (the bytes the chain hashes): a mark replaced exactly the bytes its column gives back, and deflate is
    lossless. JSON with a raw control byte in it (not orjson's) is stored as it is."""
    if _ANY_MARK.search(data):
        return data
    z = _PRIMED.copy()
    return bytes((FORMAT_1,)) + z.compress(cut(data, columns)) + z.flush()


def pack_all(batch: list[Prepared]) -> None:
    """Fill in each record's stored form (done outside the store's write lock)."""
    for p in batch:
        if p.stored is None:
            p.stored = pack(p.data, columns_of(p))


def expand(stored: bytes, columns: Sequence[Any]) -> bytes:
    """The record's JSON (the hashed bytes) from its stored form and its row's STORED columns. A form that does
    not decompress is returned as it is: it then fails the hash check (verify reports it as edited)."""
    if not stored or stored[0] != FORMAT_1:
        return stored
    try:
        z = zlib.decompressobj(-15, ZDICT_1)
        body = z.decompress(stored[1:])
    except zlib.error:
        return stored
    if not z.eof or z.unused_data:
        return stored
    return _fill(body, columns)


def _fill(body: bytes, columns: Sequence[Any]) -> bytes:
    """The cut-out values put back from the columns."""
    for i, _, mark, _ in _CUT:
        if mark in body:
            body = body.replace(mark, orjson.dumps(columns[i]))
    return body


def hash_bytes(h: str) -> bytes:
    return bytes.fromhex(h)


def hash_hex(value: Any) -> str:
    """A stored hash as hex: 32 raw bytes, or hex text in a row from before."""
    return value if isinstance(value, str) else bytes(value).hex()
