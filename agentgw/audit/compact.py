"""The stored form of an audit record (format 1): its JSON, the bytes the chain hashes, with the values the store
already keeps as columns cut out (read back from those columns), deflated against a built-in dictionary of typical
records. `expand` gives back exactly the hashed bytes; a row stored before this form (plain JSON, first byte `{`)
reads as it is. Hashes are stored as their 32 raw bytes and read back as hex."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import orjson

from agentgw.audit.chain import INDEX, Prepared
from agentgw.audit.zdict import ZDICT_1

FORMAT_1 = 1  # any first byte other than `{`: plain JSON records always start with it
STORED = (*INDEX, "target")  # the columns a row keeps beside its stored form, in the order `pack` reads them
# The record's key each column is read from (chain.index_columns): its value there is cut out and read back.
_KEYS = tuple({"tokens": "total_tokens", "cost_usd": "usd"}.get(c, c) for c in STORED)
_NEEDLES = tuple(b'"' + k.encode() + b'":' for k in _KEYS)
# Raw control bytes stand for the cut values: JSON text never holds one (orjson escapes them in strings).
_MARKS = tuple(bytes([i + 1]) for i in range(len(_KEYS)))
# Level 6 (9 finds nothing more in ~1 KB records), a 16 KiB window (the dictionary and a record fit in it) and
# small hash tables: measured 20-30 µs per record, most of it setting up a compressor, so each record starts
# from a copy of one that has already read the dictionary.
_PRIMED = zlib.compressobj(6, zlib.DEFLATED, -14, 6, zlib.Z_DEFAULT_STRATEGY, ZDICT_1)


def columns_of(p: Prepared) -> tuple[Any, ...]:
    """The values a row keeps in its STORED columns."""
    return (*p.columns, p.target)


def cut(data: bytes, columns: Sequence[Any]) -> bytes:
    """The JSON with each column's value, where it appears exactly once under its key, replaced by its mark."""
    body = data
    for needle, mark, value in zip(_NEEDLES, _MARKS, columns, strict=True):
        if value is None or isinstance(value, bool):
            continue
        full = needle + orjson.dumps(value)
        at = body.find(full)
        if at >= 0 and body.find(full, at + 1) < 0:
            body = body[: at + len(needle)] + mark + body[at + len(full) :]
    return body


def pack(data: bytes, columns: Sequence[Any]) -> bytes:
    """The stored form of a record's JSON `data` whose row holds `columns` (STORED order). Checked on the way:
    what does not read back to exactly `data` is stored as `data` itself (the chain hashes those bytes)."""
    z = _PRIMED.copy()
    out = bytes((FORMAT_1,)) + z.compress(cut(data, columns)) + z.flush()
    return out if expand(out, columns) == data else data


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
    for mark, value in zip(_MARKS, columns, strict=False):
        if mark in body:
            body = body.replace(mark, orjson.dumps(value))
    return body


def hash_bytes(h: str) -> bytes:
    return bytes.fromhex(h)


def hash_hex(value: Any) -> str:
    """A stored hash as hex: 32 raw bytes, or hex text in a row from before."""
    return value if isinstance(value, str) else bytes(value).hex()
