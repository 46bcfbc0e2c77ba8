"""The compact stored form of audit records (compact.py) on both stores: every record reads back byte for byte as
the JSON the chain hashed, a store written before the form still reads, verifies and grows, tampering with the
compact form is found, and a typical call stays small on disk."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from agentgw.audit.chain import GENESIS, INDEX, Prepared, hasher, prepare, signed_head
from agentgw.audit.compact import FORMAT_1, STORED, columns_of, expand, pack
from agentgw.audit.record import checkpoint_record, dropped_record
from agentgw.audit.store import TaskFilter
from agentgw.audit.writer import Writer
from agentgw.audit.zdict import ZDICT_1
from agentgw.exchange import Attempt, Decision, Exchange, Principal, Result, task_from_headers
from tests.audit.support import (
    STORES,
    audit_settings,
    check,
    finished,
    pg_connect,
    running_writer,
    write,
)
from tests.audit.test_chain import Raw


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def mcp_call(i: int) -> Exchange:
    headers = {"x-agentgw-task": f"mcp-{i}"}
    ex = Exchange("mcp", "tools/call", "mcp:docs/search", headers, "127.0.0.1")
    ex.task, ex.principal, ex.status = task_from_headers(headers), Principal("tester", ("agents",)), "ok"
    ex.payload = {"name": "search", "arguments": {"query": f"question {i} ünïcödé \u2028", "limit": 5}}
    ex.decisions = [Decision("authz", "allow", "policy.csv:3: p, role:agents, mcp:*, call, allow")]
    ex.attempts = [Attempt(1, "docs", "ok", 200, 12.5)]
    ex.result = Result(payload={"content": [{"type": "text", "text": "found: tester, ok"}], "isError": False})
    return ex


def a2a_send(i: int) -> Exchange:
    headers = {"x-agentgw-task": f"a2a-{i}"}
    ex = Exchange("a2a", "SendMessage", "a2a:researcher", headers, "127.0.0.1")
    ex.task, ex.principal, ex.status = task_from_headers(headers), Principal("tester", ("agents",)), "ok"
    ex.payload = {
        "message": {"messageId": f"m{i}", "role": "user", "parts": [{"kind": "text", "text": "go"}]}
    }
    ex.attrs["a2a"] = {"task_id": f"a2a-{i}", "state": "completed"}  # the same id as the caller's task
    ex.result = Result(payload={"task": {"id": f"a2a-{i}", "status": {"state": "completed"}}})
    return ex


def typical(i: int) -> Exchange:
    """A chat completion, an MCP tool call, an A2A message, in turn."""
    if i % 3 == 0:
        return finished(task=f"chat-{i}")
    return mcp_call(i) if i % 3 == 1 else a2a_send(i)


async def write_typical(writer: Writer, n: int) -> None:
    for i in range(n):
        await writer.submit(typical(i), time.perf_counter())
    await writer.flush()


async def test_every_record_reads_back_from_the_store_byte_for_byte_as_the_json_the_chain_hashed(
    tmp_path: Path, kind: str
) -> None:
    async with audit_settings(kind, jsonl="copy.jsonl") as audit, running_writer(tmp_path, audit) as w:
        await write_typical(w, 30)
        await write(w, 2, status="denied")
        assert await w.prune(time.time() - 3600) == 0  # nothing that old: no checkpoint
        rows = [r async for r in w.store.rows()]
        by_task = await w.store.task_records("mcp-1", None)
        one = await w.store.record(str(rows[4].columns[0]))
        v = await check(w)
        raw = Raw(w)
        stored = [r[0] for r in await raw.run("SELECT data FROM records ORDER BY seq")]
    hashed = (tmp_path / "copy.jsonl").read_bytes().splitlines()  # the writer's copy of each record's bytes
    assert [r.data for r in rows] == hashed and len(hashed) == 32
    assert v.ok, v.line()
    assert by_task[0].data == hashed[1] and one is not None and one.data == hashed[4]
    assert all(bytes(s)[0] == FORMAT_1 for s in stored)
    assert all(len(bytes(s)) < len(h) / 2 for s, h in zip(stored, hashed, strict=True))


def test_the_compact_form_round_trips_records_whose_column_values_repeat_or_are_odd() -> None:
    records: list[dict[str, Any]] = [
        checkpoint_record(12, "ab" * 32, 12, time.time()),
        dropped_record(3, time.time(), time.time()),
        {
            "v": 1,
            "kind": "call",
            "record_id": "x",
            "ts": 1.5,
            "task_id": "t",
            "parent_task_id": "t",
            "principal": "t",
            "status": "ok",
            "note": {"status": "ok", "task_id": "t"},
            "target": 'llm:\x01"q"',
            "usage": {"total_tokens": 0},
            "cost": {"usd": 1e-9},
            "trace_id": None,
        },
        {"v": 1, "kind": "call", "ts": 1767225600.123456, "principal": "é\u2028\U0001f600", "status": True},
    ]
    for rec in records:
        p = prepare(rec)
        stored = pack(p.data, columns_of(p))
        assert stored[0] == FORMAT_1
        assert expand(stored, columns_of(p)) == p.data
    plain = prepare(records[0])
    assert expand(plain.data, columns_of(plain)) == plain.data  # a row from before: JSON as it is


def test_the_format_1_dictionary_and_column_order_never_change() -> None:
    # Rows stored in format 1 need exactly these to read back: a change is a new format, not an edit.
    assert (
        hashlib.sha256(ZDICT_1).hexdigest()
        == "8109fe792c23017281533ce7abffdba036e2bbbcd170063ff12a9d0a898b3900"
    )
    assert STORED == (
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
        "target",
    )


async def test_a_flipped_byte_of_the_compact_form_is_found_as_an_edit(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        await write_typical(w, 6)
        raw = Raw(w)
        for seq, at in ((2, 9), (5, -1)):  # inside the deflate stream; its last byte
            [(stored,)] = await raw.run("SELECT data FROM records WHERE seq = ?", seq)
            b = bytearray(bytes(stored))
            b[at] ^= 0x10
            await raw.run("UPDATE records SET data = ? WHERE seq = ?", bytes(b), seq)
        v = await check(w)
        rows = [r async for r in w.store.rows()]  # still readable: the edited form reads as it is
    assert (v.ok, v.problem, v.seq) == (False, "edited", 2)
    assert len(rows) == 6


# -- a store written before the compact form ---------------------------------------------------------------

OLD_SQLITE = """
CREATE TABLE records (
    seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL, kind TEXT NOT NULL, ts REAL NOT NULL, task_id TEXT,
    parent_task_id TEXT, child_task_id TEXT, principal TEXT, status TEXT, tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL, trace_id TEXT, parent_span_id TEXT, data TEXT NOT NULL, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE chain_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL,
    count INTEGER, mac TEXT);
"""  # the schema as the gateway created it before the compact form (JSON text, hex hashes, no target)


def old_rows(n: int) -> tuple[list[tuple[Any, ...]], tuple[int, str, int, str | None]]:
    """Records as the gateway stored them before: (seq, *INDEX, JSON, prev_hash, hash) hex, and the head."""
    link, prev, rows = hasher(None), GENESIS, []
    for i in range(n):
        p: Prepared = prepare(
            {
                "i": i,
                "kind": "call",
                "record_id": f"{i:032x}",
                "ts": 1767225600.0 + i,
                "task_id": "old",
                "principal": "tester",
                "target": f"llm:old-{i % 2}",
                "status": "ok",
            }
        )
        h = link(prev, p.data)
        rows.append((i + 1, *p.columns, p.data, prev, h))
        prev = h
    head = signed_head(link, n, n, prev)
    return rows, (head.seq, head.hash, n, head.mac)


async def make_old_store(tmp: Path, audit: dict[str, Any], n: int) -> list[bytes]:
    rows, head = old_rows(n)
    cols = ", ".join(("seq", *INDEX, "data", "prev_hash", "hash"))
    marks = ", ".join("?" * (len(INDEX) + 4))
    if audit["store"] == "sqlite":
        db = sqlite3.connect(tmp / "audit.db", isolation_level=None)
        db.executescript(OLD_SQLITE)
        db.executemany(
            f"INSERT INTO records ({cols}) VALUES ({marks})",
            [(*r[:-3], r[-3].decode(), *r[-2:]) for r in rows],
        )
        db.execute("INSERT INTO chain_head VALUES (1, ?, ?, ?, ?)", head)
        db.close()
    else:
        schema, conn = audit["postgres"]["schema_name"], await pg_connect()
        t = f'"{schema}".agentgw_audit'
        try:
            await conn.execute(
                f'CREATE SCHEMA "{schema}"; CREATE TABLE {t}_records (seq BIGINT PRIMARY KEY, record_id TEXT '
                "NOT NULL UNIQUE, kind TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, task_id TEXT, parent_task_id "
                "TEXT, child_task_id TEXT, principal TEXT, status TEXT, tokens BIGINT NOT NULL DEFAULT 0, cost_usd "
                "DOUBLE PRECISION, trace_id TEXT, parent_span_id TEXT, data BYTEA NOT NULL, prev_hash TEXT NOT "
                f"NULL, hash TEXT NOT NULL); CREATE TABLE {t}_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq "
                "BIGINT NOT NULL, hash TEXT NOT NULL, count BIGINT, mac TEXT)"
            )
            await conn.copy_records_to_table(
                "agentgw_audit_records", records=rows, schema_name=schema, columns=cols.split(", ")
            )
            await conn.execute(f"INSERT INTO {t}_head VALUES (1, $1, $2, $3, $4)", *head)
        finally:
            await conn.close()
    return [r[-3] for r in rows]


async def test_a_store_written_before_the_compact_form_still_reads_verifies_and_grows(
    tmp_path: Path, kind: str
) -> None:
    async with audit_settings(kind) as audit:
        old = await make_old_store(tmp_path, audit, 5)
        async with running_writer(tmp_path, audit) as w:
            before = await check(w)
            await write_typical(w, 4)
            after = await check(w)
            rows = [r async for r in w.store.rows()]
            targets = [
                (await w.store.tasks(TaskFilter(target=glob)))[0]["records"]
                for glob in ("llm:old-1", "mcp:*")
            ]
            raw = Raw(w)
            await raw.run("UPDATE records SET principal = ? WHERE seq = ?", "someone-else", 2)
            tampered = await check(w)
    assert before.ok and before.count == 5, before.line()
    assert after.ok and after.count == 9, after.line()
    assert [r.data for r in rows[:5]] == old  # the old rows read as they were stored
    assert targets == [5, 1]  # the target filter reads old rows' JSON and new rows' column
    assert (tampered.ok, tampered.problem, tampered.seq) == (False, "edited", 2)
    assert "indexed columns" in tampered.detail  # an old row: its JSON is intact, its column is not


# -- size ---------------------------------------------------------------------------------------------------


async def test_a_typical_chat_record_takes_under_600_bytes_of_sqlite_and_800_of_postgresql(
    tmp_path: Path, kind: str
) -> None:
    n = 2000
    async with audit_settings(kind, batch_size=500) as audit, running_writer(tmp_path, audit) as w:
        for i in range(n):
            await w.submit(finished(task=f"t-{i:024x}"), time.perf_counter())
        await w.flush()
        if kind == "postgres":
            store: Any = w.store
            size = await store.pool.fetchval("SELECT pg_total_relation_size($1)", store.records)
            stored = await store.pool.fetchval(f"SELECT sum(octet_length(data)) FROM {store.records}")
    if kind == "sqlite":
        db = sqlite3.connect(tmp_path / "audit.db")
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = db.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'records%'").fetchone()[0]
            stored = db.execute("SELECT sum(length(data)) FROM records").fetchone()[0]
        finally:
            db.close()
    # The records table with its indexes (and TOAST); before the compact form ~2,100 bytes per record on both.
    assert size / n < (600 if kind == "sqlite" else 800), size / n
    assert stored / n < 250
