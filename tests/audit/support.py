"""Audit test support: a store per test on both backends (SQLite in the test's tmp dir; PostgreSQL on 127.0.0.1
in a schema of its own, dropped after), the `audit:` settings that select it, and finished Exchanges written
through the real writer. Under CI=true a missing PostgreSQL fails the test; elsewhere it skips."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from agentgw.audit.chain import Verdict, verify
from agentgw.audit.writer import Writer, open_writer
from agentgw.exchange import Exchange, Principal, Result, Usage, task_from_headers
from agentgw.settings import load_settings
from tests.support import audit_bytes

PG_DSN = os.environ.get("AGENTGW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
STORES = ["sqlite", "postgres"]


async def pg_connect() -> asyncpg.Connection:
    """A connection to the test database (fails the test in CI when there is none, else skips it)."""
    try:
        return await asyncpg.connect(PG_DSN, timeout=5)
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI and is not reachable at {PG_DSN}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_DSN}: {exc}")


@contextlib.asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    """A fresh schema in the test database, dropped afterwards."""
    conn = await pg_connect()
    schema = f"audit_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@contextlib.asynccontextmanager
async def audit_settings(kind: str, **extra: Any) -> AsyncIterator[dict[str, Any]]:
    """The `audit:` section for a store of `kind` (its PostgreSQL schema exists for the duration)."""
    if kind == "postgres":
        async with pg_schema() as schema:
            yield {"store": "postgres", "postgres": {"dsn": PG_DSN, "schema_name": schema}, **extra}
    else:
        yield {"store": "sqlite", **extra}


def settings_file(tmp: Path, audit: dict[str, Any]) -> Path:
    (tmp / "registry.yaml").write_text("{}\n")
    path = tmp / "agentgw.yaml"
    path.write_text(yaml.safe_dump({"registry": ["registry.yaml"], "audit": audit}))
    return path


@contextlib.asynccontextmanager
async def running_writer(tmp: Path, audit: dict[str, Any]) -> AsyncIterator[Writer]:
    writer = open_writer(load_settings(settings_file(tmp, audit)))
    assert writer is not None
    await writer.start()
    try:
        yield writer
    finally:
        await writer.aclose()


def finished(
    task: str = "job",
    principal: str = "tester",
    status: str = "ok",
    target: str = "llm:echo",
    started: float | None = None,
) -> Exchange:
    """A finished LLM Exchange, as the pipeline hands it to the audit stage."""
    headers = {"x-agentgw-task": task}
    ex = Exchange("llm", "chat", target, headers, "127.0.0.1")
    ex.task = task_from_headers(headers)
    ex.principal = Principal(principal, ("agents",))
    ex.payload = {"model": target[4:], "messages": [{"role": "user", "content": "hi"}]}
    ex.usage = Usage(3, 2)
    ex.result = Result(
        body=b'{"choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}'
    )
    ex.status = status
    if started is not None:
        ex.started = started
    return ex


async def write(writer: Writer, n: int, **kwargs: Any) -> None:
    for _ in range(n):
        await writer.submit(finished(**kwargs), time.perf_counter())
    await writer.flush()


async def check(writer: Writer, key: str | None = None) -> Verdict:
    return await verify(writer.store.rows, await writer.store.head(), key)


@contextlib.contextmanager
def sqlite_db(tmp: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(tmp / "audit.db", isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def store_bytes(tmp: Path) -> bytes:
    """Every byte of a SQLite store on disk (the database and its WAL), and every record's JSON expanded from
    its compressed stored form."""
    return audit_bytes(tmp)
