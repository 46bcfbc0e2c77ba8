"""The usage API benchmark: `GET /admin/usage` on an audit store of a million records (SQLite and PostgreSQL).
Not a test. Fills each store through its real `append` (hash chain and usage rollup) with records the real
RecordBuilder shaped, then times the endpoint's typical queries (p50 of several runs) and prints JSON.

    .venv/bin/python bench/usage_bench.py [--records 1000000] [--days 7] [--runs 9] [--stores sqlite,postgres]

Also measured: the fill rate, what the rollup adds per record, the rollup's size, a direct GROUP BY over the
records' columns for comparison (one run), that the typical query's totals equal a direct count over the records
(read through the store: their JSON is stored compressed), and how long
a store from before the rollup takes to migrate when opened. SQLite lives in a temp dir; PostgreSQL in a schema of
its own (`usage_bench_<hex>`, AGENTGW_BENCH_PG or the test database), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentgw.admin.usage import UsageAPI  # noqa: E402
from agentgw.audit.chain import Prepared, hasher, prepare  # noqa: E402
from agentgw.audit.config import Audit  # noqa: E402
from agentgw.audit.config import PostgresStore as PostgresConfig  # noqa: E402
from agentgw.audit.record import RecordBuilder, iso, record_id  # noqa: E402
from agentgw.audit.redact import Redactor  # noqa: E402
from agentgw.audit.sqlite import SQLiteStore  # noqa: E402
from agentgw.audit.store import AuditStore  # noqa: E402
from agentgw.audit.usage import rollup, usage_query  # noqa: E402
from agentgw.exchange import Exchange, Principal, Result, Usage, new_id, task_from_headers  # noqa: E402
from agentgw.registry import Pricing  # noqa: E402

PG_DSN = os.environ.get("AGENTGW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
MODELS = {  # USD per million input / output tokens
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "claude-sonnet": (3.0, 15.0),
    "claude-haiku": (0.8, 4.0),
    "llama-70b": (0.6, 0.6),
    "mistral-large": (2.0, 6.0),
    "o3": (2.0, 8.0),
    "embed-small": (0.02, 0.0),
}
TOOLS = [
    f"mcp:{s}/{t}" for s in ("docs", "git", "jira", "db", "web", "files") for t in ("a", "b", "c", "d", "e")
]
AGENTS = [f"a2a:agent-{i}" for i in range(10)]
PRINCIPALS = [f"svc-{i:03d}" for i in range(200)]
PRINCIPAL_WEIGHTS = [1 / (i + 1) for i in range(len(PRINCIPALS))]  # a few busy callers, a long tail
STATUSES = ["ok"] * 93 + ["denied"] * 4 + ["error"] * 2 + ["cancelled"]
QUERIES: dict[str, dict[str, str]] = {
    "typical: 7d by model, step 1h": {"group_by": "model", "since": "7d", "step": "1h"},
    "7d by principal, step 1h": {"group_by": "principal", "since": "7d", "step": "1h"},
    "7d by tool, step 1d": {"group_by": "tool", "since": "7d", "step": "1d"},
    "24h by agent, step 5m": {"group_by": "agent", "since": "24h", "step": "5m"},
    "7d by status, one bucket": {"group_by": "status", "since": "7d"},
    "7d by principal, one bucket, top 10": {"group_by": "principal", "since": "7d", "limit": "10"},
}
TYPICAL = "typical: 7d by model, step 1h"
BATCH = 5000


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def log(msg: str) -> None:
    print(f"[usage-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- records of the real shape ----------------------------------------------------------------------------------


def templates() -> dict[tuple[str, str], dict[str, Any]]:
    """One record per (target, status), built by the real RecordBuilder from a finished Exchange."""
    pricing = {f"llm:{m}": Pricing(input_per_mtok=i, output_per_mtok=o) for m, (i, o) in MODELS.items()}
    cfg = Audit()
    builder = RecordBuilder(cfg, pricing, Redactor(cfg.redaction))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for target in [f"llm:{m}" for m in MODELS] + TOOLS + AGENTS:
        plane = target.split(":", 1)[0]
        for status in set(STATUSES):
            headers = {"x-agentgw-task": "job"}
            op = {"llm": "chat", "mcp": "tools/call", "a2a": "SendMessage"}[plane]
            ex = Exchange(plane, op, target, headers, "127.0.0.1")
            ex.task = task_from_headers(headers)
            ex.principal = Principal("svc-000", ("agents",))
            ex.status = status
            ex.decide("authn", "allow", rule="api_key:3f9c")
            ex.decide("authz", "deny" if status == "denied" else "allow", rule="policy.csv:8")
            if plane == "llm":
                ex.payload = {
                    "model": target[4:],
                    "messages": [{"role": "user", "content": "Summarize the doc."}],
                }
                if status == "ok":
                    ex.usage = Usage(1200, 300)
                    ex.result = Result(
                        body=b'{"choices":[{"message":{"role":"assistant","content":"A summary."},'
                        b'"finish_reason":"stop"}]}'
                    )
            elif plane == "mcp":
                ex.payload = {"name": target.rsplit("/", 1)[1], "arguments": {"query": "release notes"}}
            else:
                ex.payload = {"message": {"role": "user", "parts": [{"kind": "text", "text": "Plan it."}]}}
            out[(target, status)] = builder.build(ex, ex.started_mono + 0.012)
    return out


def batches(n: int, days: float, seed: int) -> Iterator[list[Prepared]]:
    """`n` records over the last `days`, in time order, in batches as the writer appends them."""
    rng = random.Random(seed)
    shapes = templates()
    llm = [f"llm:{m}" for m in MODELS]
    end = time.time()
    start = end - days * 86400
    batch: list[Prepared] = []
    for i in range(n):
        ts = start + (i + rng.random()) * (end - start) / n
        r = rng.random()
        target = rng.choice(llm) if r < 0.6 else rng.choice(TOOLS) if r < 0.9 else rng.choice(AGENTS)
        status = rng.choice(STATUSES)
        rec = dict(shapes[(target, status)])
        principal = rng.choices(PRINCIPALS, PRINCIPAL_WEIGHTS)[0]
        rec.update(
            record_id=record_id(ts),
            ts=round(ts, 6),
            time=iso(ts),
            principal=principal,
            task_id=f"job-{principal}-{i // 50}",
            trace_id=new_id(16),
            span_id=new_id(8),
        )
        if rec.get("usage"):
            tin, tout = rng.randint(50, 4000), rng.randint(10, 1000)
            price = MODELS[target[4:]]
            rec["usage"] = {
                **rec["usage"],
                "input_tokens": tin,
                "output_tokens": tout,
                "total_tokens": tin + tout,
            }
            usd = (tin * price[0] + tout * price[1]) / 1_000_000
            rec["cost"] = {**rec["cost"], "usd": round(usd, 9)}
        batch.append(prepare(rec))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# -- stores ------------------------------------------------------------------------------------------------------


def pg_store(schema: str) -> AuditStore:
    from agentgw.audit.postgres import PostgresStore

    return PostgresStore(PostgresConfig(dsn=PG_DSN, schema_name=schema))


async def fill(stores: dict[str, AuditStore], n: int, days: float) -> dict[str, Any]:
    link = hasher(None)
    spent = dict.fromkeys(stores, 0.0)
    rolled, sample = 0.0, 0
    done = 0
    for batch in batches(n, days, seed=7):
        for name, store in stores.items():
            t0 = time.perf_counter()
            await store.append(batch, link)
            spent[name] += time.perf_counter() - t0
        if sample < 100_000:  # what making the rollup rows costs, apart from the store
            t0 = time.perf_counter()
            rollup([p.data for p in batch])
            rolled += time.perf_counter() - t0
            sample += len(batch)
        done += len(batch)
        if done % 100_000 == 0:
            log(f"filled {done:,} records")
    return {
        "records": done,
        "append_records_per_s": {k: round(done / v) for k, v in spent.items()},
        "rollup_rows_us_per_record": round(rolled / sample * 1e6, 2),
        "record_bytes_mean": round(
            statistics.mean(len(p.data) for p in next(batches(1000, days, seed=1))), 1
        ),
    }


def _collect(sent: list[MutableMapping[str, Any]]) -> Callable[[MutableMapping[str, Any]], Awaitable[None]]:
    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    return send


async def time_queries(store: AuditStore, runs: int) -> dict[str, Any]:
    """p50 of `runs` calls of the endpoint (UsageAPI: parameters, SQL, answer, JSON), after one warm-up each."""
    api = UsageAPI(store)
    out: dict[str, Any] = {}
    for label, params in QUERIES.items():
        qs = "&".join(f"{k}={v}" for k, v in params.items()).encode()
        scope = {"type": "http", "method": "GET", "path": "/admin/usage", "query_string": qs}
        sent: list[MutableMapping[str, Any]] = []
        send = _collect(sent)

        times = []
        for _ in range(runs + 1):
            sent.clear()
            t0 = time.perf_counter()
            assert await api(scope, send)
            times.append((time.perf_counter() - t0) * 1000)
        body = orjson.loads(sent[-1]["body"])
        out[label] = {
            "p50_ms": round(statistics.median(times[1:]), 2),
            "max_ms": round(max(times[1:]), 2),
            "groups": len(body["groups"]),
            "buckets": len(body["groups"][0]["series"]) if body["groups"] else 0,
            "calls": body["totals"]["calls"],
        }
    return out


def direct_totals(rows: list[Any], since: float, until: float) -> tuple[int, int, int]:
    """(calls, total tokens, input tokens) of the LLM call records in [since, until), counted from the records
    themselves (their JSON is stored compressed: read through the store, not with SQL's JSON functions)."""
    calls = tokens = inputs = 0
    for row in rows:
        if row.columns[1] != "call" or not since <= row.columns[2] < until:
            continue
        rec = orjson.loads(row.data)
        if rec.get("plane") == "llm":
            calls, tokens = calls + 1, tokens + int(row.columns[8] or 0)
            inputs += int((rec.get("usage") or {}).get("input_tokens") or 0)
    return calls, tokens, inputs


# The direct GROUP BY the rollup replaces, over the records' columns (target, time, tokens, cost).
GROUP_BY = "SELECT target, {hour}, count(*), sum(tokens), sum(cost_usd) FROM {r} WHERE kind = 'call' AND ts >= {ph} GROUP BY 1, 2"


def check_sqlite(path: Path, typical: dict[str, Any]) -> dict[str, Any]:
    """The typical query's totals against a direct count over the records, and a direct GROUP BY for scale."""
    from agentgw.audit.sqlite import SELECT, _row

    since, until = epoch(typical["since"]), epoch(typical["until"])
    with contextlib.closing(sqlite3.connect(path)) as db:
        direct = direct_totals([_row(r) for r in db.execute(SELECT + " ORDER BY seq")], since, until)
        t0 = time.perf_counter()
        db.execute(
            GROUP_BY.format(hour="CAST(ts / 3600 AS INTEGER)", r="records", ph="?"), (since,)
        ).fetchall()
        scan_ms = (time.perf_counter() - t0) * 1000
        rows = db.execute("SELECT count(*) FROM usage_rollup").fetchone()[0]
    t = typical["totals"]
    return {
        "file_mib": round(sum(p.stat().st_size for p in path.parent.glob("audit.db*")) / 2**20, 1),
        "equals_direct_count": direct == (t["calls"], t["total_tokens"], t["input_tokens"]),
        "direct_group_by_over_records_ms": round(scan_ms, 1),
        "rollup_rows": rows,
    }


async def check_pg(store: AuditStore, schema: str, typical: dict[str, Any]) -> dict[str, Any]:
    import asyncpg

    since, until = epoch(typical["since"]), epoch(typical["until"])
    direct = direct_totals([row async for row in store.rows()], since, until)
    conn = await asyncpg.connect(PG_DSN)
    try:
        r = f'"{schema}".agentgw_audit_records'
        t0 = time.perf_counter()
        await conn.fetch(GROUP_BY.format(hour="floor(ts / 3600)", r=r, ph="$1"), since)
        scan_ms = (time.perf_counter() - t0) * 1000
        rows = await conn.fetchval(f'SELECT count(*) FROM "{schema}".agentgw_audit_usage')
    finally:
        await conn.close()
    t = typical["totals"]
    return {
        "equals_direct_count": direct == (t["calls"], t["total_tokens"], t["input_tokens"]),
        "direct_group_by_over_records_ms": round(scan_ms, 1),
        "rollup_rows": rows,
    }


async def migrate(reopen: Callable[[], AuditStore], drop: Callable[[], Any]) -> dict[str, Any]:
    """Drop the rollup (a store from before it) and time opening the store again, which rebuilds it."""
    await drop()
    store = reopen()
    t0 = time.perf_counter()
    await store.open()
    seconds = time.perf_counter() - t0
    typical = await store.usage(usage_query(QUERIES[TYPICAL]))
    await store.aclose()
    return {"migration_open_s": round(seconds, 1), "typical_calls_after": typical["totals"]["calls"]}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--no-migration", action="store_true", help="skip timing the rebuild of a dropped rollup")
    args = ap.parse_args()
    kinds = args.stores.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="agentgw-usage-bench-"))
    schema = f"usage_bench_{uuid.uuid4().hex[:10]}"
    stores: dict[str, AuditStore] = {}
    result: dict[str, Any] = {"records": args.records, "days": args.days, "runs": args.runs}
    try:
        if "sqlite" in kinds:
            stores["sqlite"] = SQLiteStore(tmp / "audit.db")
        if "postgres" in kinds:
            stores["postgres"] = pg_store(schema)
        for s in stores.values():
            await s.open()
        log(f"filling {args.records:,} records over {args.days} days into {', '.join(stores)}")
        result["fill"] = await fill(stores, args.records, args.days)
        for name, store in stores.items():
            log(f"timing queries on {name}")
            res: dict[str, Any] = {"queries": await time_queries(store, args.runs)}
            typical = await store.usage(usage_query(QUERIES[TYPICAL]))
            if name == "sqlite":
                res.update(check_sqlite(tmp / "audit.db", typical))
            else:
                res.update(await check_pg(store, schema, typical))
            result[name] = res
        for s in stores.values():
            await s.aclose()
        if not args.no_migration:
            if "sqlite" in stores:
                log("timing the migration of a SQLite store without the rollup")

                async def drop_sqlite() -> None:
                    with contextlib.closing(sqlite3.connect(tmp / "audit.db")) as db:
                        db.execute("DROP TABLE usage_rollup")
                        db.commit()

                result["sqlite"].update(await migrate(lambda: SQLiteStore(tmp / "audit.db"), drop_sqlite))
            if "postgres" in stores:
                log("timing the migration of a PostgreSQL store without the rollup")

                async def drop_pg() -> None:
                    import asyncpg

                    conn = await asyncpg.connect(PG_DSN)
                    await conn.execute(f'DROP TABLE "{schema}".agentgw_audit_usage')
                    await conn.close()

                result["postgres"].update(await migrate(lambda: pg_store(schema), drop_pg))
    finally:
        for s in stores.values():
            await s.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
        if "postgres" in kinds:
            import asyncpg

            conn = await asyncpg.connect(PG_DSN)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    asyncio.run(main())
