"""The hash chain on both stores: `verify` is OK on an untouched chain (also with concurrent writers and after
pruning) and names the first record that was edited, deleted, reordered or inserted, or a truncated tail.
Tampering is done the way an intruder with database access would: plain SQL on the tables (records are stored
compact, compact.py: the intruder knows the format and writes edits in it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import orjson
import pytest

from agentgw.audit.chain import hasher
from agentgw.audit.compact import STORED, hash_bytes, hash_hex, pack
from agentgw.audit.writer import Writer
from tests.audit.support import PG_DSN, STORES, audit_settings, check, running_writer, settings_file, write

AGENTGW = str(Path(sys.executable).parent / "agentgw")


class Raw:
    """Direct SQL on a store's records table (`?` placeholders; translated for PostgreSQL)."""

    def __init__(self, writer: Writer) -> None:
        self.store: Any = writer.store
        self.pg = writer.store.kind == "postgres"
        self.table = self.store.records if self.pg else "records"

    async def run(self, sql: str, *args: Any) -> list[Any]:
        sql = sql.replace("records", self.table)
        if self.pg:
            n = 0

            def nxt(_: Any) -> str:
                nonlocal n
                n += 1
                return f"${n}"

            import re

            sql = re.sub(r"\?", nxt, sql)
            return list(await self.store.pool.fetch(sql, *args))
        return await self.store._run(lambda db: db.execute(sql, args).fetchall())  # type: ignore[no-any-return]

    async def data(self, seq: int) -> bytes:
        """The record's JSON (the hashed bytes), as the store reads it."""
        return next(iter([r.data async for r in self.store.rows() if r.seq == seq]))

    async def set_data(self, seq: int, data: bytes) -> None:
        """Store `data` as the record's JSON, in the compact form, under the row's own columns."""
        [row] = await self.run(f"SELECT {', '.join(STORED)} FROM records WHERE seq = ?", seq)
        await self.run("UPDATE records SET data = ? WHERE seq = ?", pack(data, tuple(row)), seq)

    async def hash(self, seq: int, column: str = "hash") -> str:
        [(h,)] = await self.run(f"SELECT {column} FROM records WHERE seq = ?", seq)
        return hash_hex(h)

    async def insert(self, seq: int, rec: dict[str, Any], forged: bytes, prev: str) -> None:
        """A row of the intruder's making: columns from `rec`, `forged` as its JSON, linked after `prev`."""
        columns = (rec["record_id"], "call", rec["ts"], rec["task_id"], None, None, rec["principal"])
        columns += (rec["status"], 5, None, rec["trace_id"], None, rec["target"])
        await self.run(
            f"INSERT INTO records (seq, {', '.join(STORED)}, data, prev_hash, hash) VALUES "
            f"({', '.join('?' * (len(STORED) + 4))})",
            seq,
            *columns,
            pack(forged, columns),
            hash_bytes(prev),
            hash_bytes(hasher(None)(prev, forged)),
        )

    async def move(self, seq: int, to: int) -> None:
        await self.run("UPDATE records SET seq = ? WHERE seq = ?", to, seq)


async def chain_of(writer: Writer, n: int = 6) -> Raw:
    for i in range(n):
        await write(writer, 1, task=f"job-{i}")
    return Raw(writer)


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_an_untouched_chain_verifies_with_its_count_and_head(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        await chain_of(w, 6)
        v = await check(w)
        head = await w.store.head()
    assert v.ok and v.count == 6 and (v.first_seq, v.last_seq) == (1, 6)
    assert head is not None and v.head == head[1]
    assert v.line().startswith("OK: 6 records verified")


async def test_an_edited_record_is_found(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w)
        await raw.set_data(3, (await raw.data(3)).replace(b'"status":"ok"', b'"status":"no"'))
        v = await check(w)
    assert (v.ok, v.problem, v.seq) == (False, "edited", 3)


async def test_an_edited_indexed_column_is_found_as_an_edit_of_the_record(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w)
        await raw.run("UPDATE records SET principal = ? WHERE seq = ?", "someone-else", 4)
        v = await check(w)
    assert (v.ok, v.problem, v.seq) == (False, "edited", 4)
    assert (
        "content does not match its hash" in v.detail
    )  # the stored form reads its principal from the column


async def test_a_deleted_record_is_found_at_the_record_that_follows_it(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w)
        await raw.run("DELETE FROM records WHERE seq = ?", 3)
        v = await check(w)
    assert (v.ok, v.problem, v.seq) == (False, "deleted", 4)


async def test_a_deleted_first_record_is_found(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w)
        await raw.run("DELETE FROM records WHERE seq = ?", 1)
        v = await check(w)
    assert (v.ok, v.problem, v.seq) == (False, "deleted", 2)


async def test_deleted_last_records_are_found_against_the_chain_head(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w)
        await raw.run("DELETE FROM records WHERE seq >= ?", 5)
        v = await check(w)
    assert (v.ok, v.problem, v.seq) == (False, "truncated", 4)


async def test_two_swapped_records_are_found_as_reordered(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w)
        await raw.move(2, 100)
        await raw.move(3, 2)
        await raw.move(100, 3)
        v = await check(w)
    assert (v.ok, v.problem, v.seq) == (False, "reordered", 2)


async def test_an_inserted_record_is_found_even_when_its_own_hash_is_right(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w)
        for seq in (6, 5, 4):  # make room after seq 3
            await raw.move(seq, seq + 1)
        data = (await raw.data(3)).replace(b'"status":"ok"', b'"status":"denied"')
        rec = orjson.loads(data)
        rec["record_id"] = "f" * 32
        forged = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
        await raw.insert(4, rec, forged, await raw.hash(3))
        v = await check(w)
    assert (v.ok, v.problem, v.seq, v.record_id) == (False, "inserted", 4, "f" * 32)


async def test_a_record_appended_behind_the_gateways_back_is_found_as_inserted(
    tmp_path: Path, kind: str
) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w)
        data = (await raw.data(6)).replace(b'"task_id":"job-5"', b'"task_id":"job-6"')
        rec = orjson.loads(data)
        rec["record_id"] = "e" * 32
        forged = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
        await raw.insert(7, rec, forged, await raw.hash(6))
        v = await check(w)
    assert (v.ok, v.problem, v.seq) == (False, "inserted", 7)


async def test_with_an_hmac_key_a_recomputed_plain_hash_is_found_as_an_edit(
    tmp_path: Path, kind: str
) -> None:
    key = "an-audit-key-of-32-bytes-0123456"
    async with audit_settings(kind, hmac_key=key) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w, 3)
        assert (await check(w, key)).ok
        assert not (await check(w)).ok  # the plain hash does not match a keyed chain
        data = (await raw.data(2)).replace(b'"status":"ok"', b'"status":"no"')
        prev = await raw.hash(2, "prev_hash")
        await raw.set_data(2, data)
        await raw.run("UPDATE records SET hash = ? WHERE seq = ?", hash_bytes(hasher(None)(prev, data)), 2)
        v = await check(w, key)
    assert (v.ok, v.problem, v.seq) == (False, "edited", 2)


async def test_concurrent_writers_on_one_store_keep_one_verifiable_chain(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind, batch_size=7, batch_wait_ms=0) as audit:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        if kind == "sqlite":  # two workers of one host share one file
            audit = {**audit, "sqlite": {"path": str(tmp_path / "shared.db")}}
        async with running_writer(tmp_path / "a", audit) as one, running_writer(tmp_path / "b", audit) as two:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(write, one, 150)
                    tg.start_soon(write, two, 150)
            v = await check(one)
    assert v.ok, v.line()
    assert v.count == 300


async def test_pruning_leaves_a_checkpoint_and_the_rest_still_verifies(tmp_path: Path, kind: str) -> None:
    old = time.time() - 40 * 86400
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        await write(w, 4, started=old)
        await write(w, 3)
        pruned = await w.prune(time.time() - 30 * 86400)
        after = await check(w)
        await write(w, 2)
        later = await check(w)
        raw = Raw(w)
        kinds = [r[0] for r in await raw.run("SELECT kind FROM records ORDER BY seq")]
        await raw.run("DELETE FROM records WHERE seq = ?", 5)  # the oldest record the pruning kept
        tampered = await check(w)
    assert pruned == 4
    assert kinds == ["call"] * 3 + ["checkpoint"] + ["call"] * 2
    assert after.ok and after.count == 4 and after.first_seq == 5
    assert later.ok and later.count == 6
    assert (tampered.ok, tampered.problem, tampered.seq) == (False, "deleted", 6)


async def test_audit_verify_exits_0_with_the_count_then_1_naming_the_edited_record(
    tmp_path: Path, kind: str
) -> None:
    async with audit_settings(kind) as audit:
        async with running_writer(tmp_path, audit) as w:
            raw = await chain_of(w, 4)
        cfg = settings_file(tmp_path, audit)
        ok = await anyio.run_process([AGENTGW, "audit", "verify", "--config", str(cfg)], check=False)
        if kind == "postgres":
            conn = await asyncpg.connect(PG_DSN)
            schema = audit["postgres"]["schema_name"]
            await conn.execute(
                f'UPDATE "{schema}".agentgw_audit_records SET status = $1 WHERE seq = 2', "denied"
            )
            await conn.close()
        else:
            del raw
            import sqlite3

            db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
            db.execute("UPDATE records SET status = 'denied' WHERE seq = 2")
            db.close()
        bad = await anyio.run_process(
            [AGENTGW, "audit", "verify", "--config", str(cfg)], check=False, stderr=subprocess.PIPE
        )
        head = ok.stdout.decode().split("head ")[1].strip()
        anchored = await anyio.run_process(
            [AGENTGW, "audit", "verify", "--config", str(cfg), "--anchor", head], check=False
        )
    assert (ok.returncode, ok.stdout.decode().split(" (")[0]) == (0, "OK: 4 records verified")
    assert anchored.returncode == 1  # the tampered chain fails before the anchor is looked at
    assert anchored.stdout.decode().startswith("FAILED: record seq 2")
    assert bad.returncode == 1
    assert bad.stdout.decode().startswith("FAILED: record seq 2 (id ")
    assert "edited" in bad.stdout.decode()


async def test_an_anchor_from_an_earlier_verify_must_still_be_in_the_chain(tmp_path: Path) -> None:
    async with audit_settings("sqlite") as audit:
        async with running_writer(tmp_path, audit) as w:
            await chain_of(w, 3)
            first = await check(w)
            await write(w, 2)
        cfg = str(settings_file(tmp_path, audit))
        kept = await anyio.run_process(
            [AGENTGW, "audit", "verify", "--config", cfg, "--anchor", str(first.head)]
        )
        import sqlite3

        db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        db.execute("DELETE FROM records WHERE seq <= 3")  # and rewrite the start to look pruned:
        db.execute("UPDATE records SET prev_hash = ? WHERE seq = 4", ("0" * 64,))
        db.close()
        gone = await anyio.run_process(
            [AGENTGW, "audit", "verify", "--config", cfg, "--anchor", str(first.head)], check=False
        )
    assert kept.stdout.decode().startswith("OK: 5 records verified")
    assert gone.returncode == 1 and gone.stdout.decode().startswith("FAILED: record seq 4")
