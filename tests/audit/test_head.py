"""Deleting the newest records is found: the chain head carries (seq, count, last hash) under a MAC with the chain's
key, a missing head is a failure when records exist, and signed checkpoints kept in a second store (a JSON-lines
file or another PostgreSQL database) catch a rollback of records and head together, without `--anchor`.
Tampering is done as an intruder with database access (but not the key) would: plain SQL."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from agentgw.audit.chain import hasher, head_mac
from tests.audit.support import (
    PG_DSN,
    STORES,
    audit_settings,
    check,
    pg_connect,
    running_writer,
    settings_file,
    write,
)
from tests.audit.test_chain import Raw, chain_of

AGENTGW = str(Path(sys.executable).parent / "agentgw")
KEY = "an-audit-key-of-32-bytes-0123456"


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def head_table(raw: Raw) -> str:
    return f'"{raw.store.schema}".agentgw_audit_head' if raw.pg else "chain_head"


async def set_head(raw: Raw, seq: int, h: str, count: int | None, mac: str | None) -> None:
    await raw.run(
        f"UPDATE {head_table(raw)} SET seq = ?, hash = ?, count = ?, mac = ? WHERE id = 1", seq, h, count, mac
    )


async def hash_at(raw: Raw, seq: int) -> str:
    return await raw.hash(seq)


async def test_deleting_the_newest_records_and_pointing_the_head_back_is_found(
    tmp_path: Path, kind: str
) -> None:
    async with audit_settings(kind, hmac_key=KEY) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w, 6)
        await raw.run("DELETE FROM records WHERE seq >= ?", 5)
        await raw.run(
            f"UPDATE {head_table(raw)} SET seq = ?, hash = ? WHERE id = 1", 4, await hash_at(raw, 4)
        )
        v = await check(w, KEY)
    assert (v.ok, v.problem, v.seq) == (False, "head", 4)
    assert "rewritten without the key" in v.line()


@pytest.mark.parametrize("newest_deleted", [True, False])
async def test_deleting_the_head_with_or_without_the_newest_records_is_found(
    tmp_path: Path, kind: str, newest_deleted: bool
) -> None:
    async with audit_settings(kind, hmac_key=KEY) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w, 6)
        if newest_deleted:
            await raw.run("DELETE FROM records WHERE seq >= ?", 5)
        await raw.run(f"DELETE FROM {head_table(raw)}")
        v = await check(w, KEY)
    assert (v.ok, v.problem, v.seq) == (False, "head", 4 if newest_deleted else 6)
    assert "chain head is missing" in v.line()


async def test_a_head_rewritten_with_a_recomputed_unkeyed_mac_is_found(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind, hmac_key=KEY) as audit, running_writer(tmp_path, audit) as w:
        raw = await chain_of(w, 6)
        await raw.run("DELETE FROM records WHERE seq >= ?", 5)
        last = await hash_at(raw, 4)
        await set_head(raw, 4, last, 4, head_mac(hasher(None), 4, 4, last))  # everything but the key
        v = await check(w, KEY)
    assert (v.ok, v.problem, v.seq) == (False, "head", 4)


async def test_a_head_that_miscounts_the_records_is_found(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:  # unkeyed: a checksum
        raw = await chain_of(w, 4)
        last = await hash_at(raw, 4)
        await set_head(raw, 4, last, 5, head_mac(hasher(None), 4, 5, last))
        v = await check(w)
    assert (v.ok, v.problem) == (False, "truncated")
    assert "counts 5 records but 4 are stored" in v.line()


async def test_an_untouched_keyed_chain_and_its_head_verify_after_pruning(tmp_path: Path, kind: str) -> None:
    import time

    async with audit_settings(kind, hmac_key=KEY) as audit, running_writer(tmp_path, audit) as w:
        await write(w, 3, started=time.time() - 40 * 86400)
        await write(w, 2)
        assert await w.prune(time.time() - 30 * 86400) == 3
        await write(w, 1)
        v = await check(w, KEY)
        head = await w.store.head()
    assert v.ok, v.line()
    assert head is not None and (v.count, head.records) == (4, 4)


@contextlib.asynccontextmanager
async def second_pg_database() -> AsyncIterator[str]:
    """A second PostgreSQL database (dropped after): the checkpoint sink must not live beside the chain."""
    name = f"sink_{uuid.uuid4().hex[:12]}"
    conn = await pg_connect()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield PG_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.mark.parametrize("sink_kind", ["file", "postgres"])
async def test_a_rollback_of_records_and_head_is_found_by_the_signed_checkpoints_without_an_anchor(
    tmp_path: Path, kind: str, sink_kind: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if sink_kind == "file":
            sink = str(tmp_path / "checkpoints.jsonl")
        else:
            sink = await stack.enter_async_context(second_pg_database())
        await _rollback_against(tmp_path, kind, sink)


async def _rollback_against(tmp_path: Path, kind: str, sink: str) -> None:
    checkpoints = {"sink": sink, "every_records": 2}
    async with audit_settings(kind, hmac_key=KEY, batch_wait_ms=0, checkpoints=checkpoints) as audit:
        async with running_writer(tmp_path, audit) as w:
            raw = await chain_of(w, 4)
            [saved] = await raw.run(
                f"SELECT seq, hash, count, mac FROM {head_table(raw)}"
            )  # a valid old head
            await chain_of(w, 4)
            assert w.checkpointer is not None and w.checkpointer.last is not None
            vouched = w.checkpointer.last.seq
        cfg = str(settings_file(tmp_path, audit))
        ok = await anyio.run_process([AGENTGW, "audit", "verify", "--config", cfg], check=False)
        async with running_writer(tmp_path, {**audit, "checkpoints": {}}) as w:  # the intruder: no sink
            raw = Raw(w)
            await raw.run("DELETE FROM records WHERE seq > ?", 4)
            await set_head(raw, *saved)
            head_only = await check(w, KEY)  # the head and the rest of the chain agree: only the sink knows
        settings_file(tmp_path, audit)  # the auditor's config, with the sink
        bad = await anyio.run_process(
            [AGENTGW, "audit", "verify", "--config", cfg], check=False, stderr=subprocess.PIPE
        )
    assert vouched == 8
    assert ok.returncode == 0, ok.stdout.decode()
    assert "signed checkpoint at seq 8 confirmed" in ok.stdout.decode()
    assert head_only.ok
    assert bad.returncode == 1
    out = bad.stdout.decode()
    assert out.startswith("FAILED: record seq 8") and "truncated" in out, out
    assert "the chain ends at seq 4" in out


async def test_a_forged_checkpoint_line_fails_verification(tmp_path: Path) -> None:
    sink = tmp_path / "checkpoints.jsonl"
    checkpoints = {"sink": str(sink), "every_records": 1}
    async with audit_settings("sqlite", hmac_key=KEY, checkpoints=checkpoints) as audit:
        async with running_writer(tmp_path, audit) as w:
            await chain_of(w, 2)
        line = sink.read_bytes().splitlines()[-1].replace(b'"seq":2', b'"seq":1')
        with sink.open("ab") as fh:
            fh.write(line + b"\n")
        cfg = str(settings_file(tmp_path, audit))
        got = await anyio.run_process([AGENTGW, "audit", "verify", "--config", cfg], check=False)
    assert got.returncode == 1
    assert "not signed with this chain's key" in got.stdout.decode()
