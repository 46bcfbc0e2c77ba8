"""Audit storage per call: N typical records (a chat completion, an MCP tool call, an A2A message, in turn) through
the real writer (build, redact, serialize, chain, append) into a fresh SQLite file and a fresh PostgreSQL schema
(dropped after); bytes per record on disk, and the writer's records/s. Bounded by --records. Not a test."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentgw.audit.writer import Writer, open_writer  # noqa: E402
from agentgw.exchange import (  # noqa: E402
    Attempt,
    Decision,
    Exchange,
    Principal,
    Result,
    Usage,
    task_from_headers,
)
from agentgw.settings import load_settings  # noqa: E402

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CHAT_REPLY = orjson.dumps(
    {
        "id": "chatcmpl-9x1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The capital of France is Paris."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 41, "completion_tokens": 9, "total_tokens": 50},
    }
)
ALLOW_AUTHN = Decision("authn", "allow", "api_key:e4ca2a0757c8")


def _exchange(plane: str, operation: str, target: str, i: int) -> Exchange:
    """One call as the pipeline finishes it: an API-key principal, a per-request task, authn/authz decisions."""
    headers = {"x-agentgw-task": f"t-{uuid.uuid4().hex[:24]}"} if i % 4 else {}
    ex = Exchange(plane, operation, target, headers, "127.0.0.1")
    ex.task = task_from_headers(headers)
    ex.principal = Principal("research-agent", ("agents",), "api_key", "e4ca2a0757c8")
    kind = target.split(":", 1)[0]
    ex.decisions = [
        ALLOW_AUTHN,
        Decision("authz", "allow", f"policy.csv:2: p, role:agents, {kind}:*, call, allow"),
    ]
    ex.status = "ok"
    return ex


def chat(i: int) -> Exchange:
    ex = _exchange("llm", "chat", "llm:gpt-4o-mini", i)
    ex.payload = {
        "model": "gpt-4o-mini",
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "You are a helpful research assistant."},
            {"role": "user", "content": f"What is the capital of France? (question {i})"},
        ],
    }
    ex.attempts = [Attempt(1, "openai/gpt-4o-mini", "ok", 200, 412.5 + i % 7)]
    ex.usage = Usage(41, 9)
    ex.result = Result(body=CHAT_REPLY)
    return ex


def mcp_call(i: int) -> Exchange:
    ex = _exchange("mcp", "tools/call", "mcp:docs/search", i)
    ex.payload = {"name": "search", "arguments": {"query": f"rate limits for tenant {i}", "limit": 5}}
    ex.attempts = [Attempt(1, "docs", "ok", 200, 35.25)]
    text = "Found 3 documents: rate-limits.md, quotas.md, tenants.md"
    ex.result = Result(payload={"content": [{"type": "text", "text": text}], "isError": False})
    return ex


def a2a_send(i: int) -> Exchange:
    ex = _exchange("a2a", "SendMessage", "a2a:researcher", i)
    msg = {
        "messageId": str(uuid.uuid4()),
        "role": "user",
        "parts": [{"kind": "text", "text": f"Summarise the findings of report {i}"}],
    }
    ex.payload = {"message": msg}
    ex.attempts = [Attempt(1, "researcher", "ok", 200, 820.0)]
    task = {
        "id": str(uuid.uuid4()),
        "contextId": str(uuid.uuid4()),
        "status": {"state": "completed"},
        "artifacts": [{"parts": [{"kind": "text", "text": "Three findings: latency, cost, coverage."}]}],
    }
    ex.attrs["a2a"] = {"task_id": task["id"], "context_id": task["contextId"], "state": "completed"}
    ex.result = Result(payload={"task": task})
    return ex


KINDS = (chat, mcp_call, a2a_send)


def open_bench_writer(folder: Path, audit: dict[str, Any]) -> Writer:
    (folder / "registry.yaml").write_text("{}\n")
    (folder / "agentgw.yaml").write_text(yaml.safe_dump({"registry": ["registry.yaml"], "audit": audit}))
    writer = open_writer(load_settings(folder / "agentgw.yaml"))
    assert writer is not None
    return writer


async def feed(writer: Writer, n: int, kinds: tuple[Any, ...]) -> tuple[float, float]:
    """Seconds to get n records into the store, and the CPU seconds this process spent on it (all threads: less
    sensitive than the wall clock to what else runs on the machine)."""
    exchanges = [kinds[i % len(kinds)](i) for i in range(n)]  # made before the clocks start
    await writer.start()
    t0, c0 = time.perf_counter(), time.process_time()
    for ex in exchanges:
        await writer.submit(ex, time.perf_counter())
    await writer.flush()
    return time.perf_counter() - t0, time.process_time() - c0


def sqlite_bytes(db: Path) -> dict[str, Any]:
    """The file and its WAL after a checkpoint, and dbstat's pages per table and index."""
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        parts = dict(con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        payload = con.execute("SELECT sum(length(data)) FROM records").fetchone()[0]
    finally:
        con.close()
    files = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return {"file_bytes": files, "tables": parts, "data_bytes": payload}


async def run_sqlite(n: int, kinds: tuple[Any, ...]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="agentgw-audit-storage-") as tmp:
        writer = open_bench_writer(Path(tmp), {"sqlite": {"path": "audit.db"}})
        secs, cpu = await feed(writer, n, kinds)
        written = writer.written
        await writer.aclose()
        out = sqlite_bytes(Path(tmp) / "audit.db")
    return {
        "records": written,
        "records_per_s": written / secs,
        "cpu_us_per_record": cpu / written * 1e6,
        **out,
    }


async def run_postgres(n: int, kinds: tuple[Any, ...], dsn: str) -> dict[str, Any]:
    import asyncpg

    schema = f"agwbench_storage_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        with tempfile.TemporaryDirectory(prefix="agentgw-audit-storage-") as tmp:
            writer = open_bench_writer(
                Path(tmp), {"store": "postgres", "postgres": {"dsn": dsn, "schema_name": schema}}
            )
            secs, cpu = await feed(writer, n, kinds)
            written = writer.written
            await writer.aclose()
        tables = (
            await conn.fetch(  # every table of the schema with its indexes and TOAST, and its indexes alone
                "SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = $1 AND c.relkind = 'r'",
                schema,
            )
        )
        data = await conn.fetchval(f'SELECT sum(octet_length(data)) FROM "{schema}".agentgw_audit_records')
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    parts = {str(r[0]): int(r[1]) for r in tables}
    parts |= {f"{r[0]} (indexes)": int(r[2]) for r in tables if r[2]}
    return {
        "records": written,
        "records_per_s": written / secs,
        "cpu_us_per_record": cpu / written * 1e6,
        "total_bytes": sum(int(r[1]) for r in tables),
        "tables": parts,
        "data_bytes": data,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--records", type=int, default=30_000, help="records per store (bounded: at most 1,000,000)"
    )
    ap.add_argument("--kind", choices=["mixed", "chat", "mcp", "a2a"], default="mixed")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--pg-dsn", default=PG_DSN)
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args()
    n = min(a.records, 1_000_000)
    kinds = {"mixed": KINDS, "chat": (chat,), "mcp": (mcp_call,), "a2a": (a2a_send,)}[a.kind]
    res: dict[str, Any] = {"command": " ".join([".venv/bin/python", "bench/audit_storage.py", *sys.argv[1:]])}
    res["sqlite"] = asyncio.run(run_sqlite(n, kinds))
    if not a.no_postgres:
        res["postgres"] = asyncio.run(run_postgres(n, kinds, a.pg_dsn))
    print(f"{n:,} records ({a.kind}):")
    s = res["sqlite"]
    print(
        f"SQLite      {s['file_bytes'] / s['records']:>7,.0f} B/record (file+WAL after checkpoint), "
        f"data column {s['data_bytes'] / s['records']:,.0f} B, {s['records_per_s']:,.0f} records/s, "
        f"{s['cpu_us_per_record']:.0f} µs CPU/record"
    )
    for name, size in sorted(s["tables"].items(), key=lambda kv: -kv[1])[:6]:
        print(f"    {name:24} {size / s['records']:>7,.0f} B/record")
    if "postgres" in res:
        p = res["postgres"]
        print(
            f"PostgreSQL  {p['total_bytes'] / p['records']:>7,.0f} B/record (pg_total_relation_size), "
            f"data column {p['data_bytes'] / p['records']:,.0f} B, {p['records_per_s']:,.0f} records/s, "
            f"{p['cpu_us_per_record']:.0f} µs CPU/record"
        )
        for name, size in sorted(p["tables"].items(), key=lambda kv: -kv[1]):
            print(f"    {name:24} {size / p['records']:>7,.0f} B/record")
    if a.json:
        Path(a.json).write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
