"""The audit benchmark (`make bench`): what recording every call costs. Not a test.

1. The LLM plane at c=N through `agentgw serve`, audit off vs SQLite (vs PostgreSQL with --postgres), the
   variants alternating over several rounds (one gateway process per variant and round): req/s, latency,
   gateway CPU per request, and the throughput ratio against audit off (target: ≥ 0.90).
2. Records per second each store sustains: the real writer (build, redact, serialize, chain, append) fed
   finished Exchanges as fast as it takes them, in-process, until all are in the store.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from harness import PG_DSN, CpuWatch, Env, audit_count, audit_section, log, raise_nofile, requests_run

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def gateway_ab(
    variants: list[str], rounds: int, c: int, seconds: float, tool: str, extra: dict[str, Any]
) -> dict[str, Any]:
    env = Env(Path(tempfile.mkdtemp(prefix="agentgw-audit-bench-")))
    out: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    records: dict[str, int] = {}
    try:
        env.start_upstream()
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                env.audit = audit_section(v, prefix=f"agwbench_r{r}")
                if v != "off":
                    env.audit.update(extra)
                env.write_config()
                env.start_gateway()
                requests_run(tool, env.url("gateway"), 1_000_000, c, 1.0)  # warm-up
                watch = CpuWatch(env)
                res = requests_run(tool, env.url("gateway"), 10_000_000, c, seconds)
                cpu = watch.done()
                env.stop_gateway()  # drains the audit queue: the records below are all of them
                res["gateway_cpu_us"] = cpu["gateway_cpu_s"] / max(1, res["requests"]) * 1e6
                res["background_cores"] = cpu["background_cores"]
                out[v].append(res)
                if v == "sqlite":
                    records[f"round {r + 1}"] = audit_count(env.tmp / "audit.db")
                    (env.tmp / "audit.db").unlink(missing_ok=True)
                log(
                    f"round {r + 1} audit {v:8s}: {res['rps']:,.0f} req/s, p50 {res['p50_ms']:.2f} ms, "
                    f"p99 {res['p99_ms']:.2f} ms, gateway {res['gateway_cpu_us']:.0f} µs/req, "
                    f"errors {res['errors'] or 0}, background {res['background_cores']:.2f} cores"
                )
    finally:
        env.close()
    summary: dict[str, Any] = {}
    for v, runs in out.items():
        summary[v] = {
            k: statistics.median(r[k] for r in runs)
            for k in ("rps", "p50_ms", "p99_ms", "gateway_cpu_us", "background_cores")
        }
        summary[v]["rounds"] = runs
    base = summary["off"]["rps"] if "off" in summary else None
    for v in variants:
        if base:
            summary[v]["ratio_vs_off"] = summary[v]["rps"] / base
    summary["sqlite_records_written"] = records
    return summary


async def store_rate(store: str, n: int, batch: int) -> dict[str, Any]:
    """Records/s through the real writer into `store`, fed as fast as it takes them."""
    import yaml

    from agentgw.audit.writer import open_writer
    from agentgw.exchange import Exchange, Result, Usage, task_from_headers
    from agentgw.settings import load_settings

    body = orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        }
    )
    payload = {
        "model": "m",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello to the bench."}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "registry.yaml").write_text("{}\n")
        cfg = {
            "registry": ["registry.yaml"],
            "audit": {**audit_section(store, "agwbench_rate"), "batch_size": batch},
        }
        (folder / "agentgw.yaml").write_text(yaml.safe_dump(cfg))
        writer = open_writer(load_settings(folder / "agentgw.yaml"))
        assert writer is not None
        await writer.start()
        headers = {"x-agentgw-task": "bench"}
        t0 = time.perf_counter()
        for _ in range(n):
            ex = Exchange("llm", "chat", "llm:m", headers, "127.0.0.1")
            ex.task = task_from_headers(headers)
            ex.payload, ex.usage, ex.status = payload, Usage(12, 5), "ok"
            ex.result = Result(body=body)
            await writer.submit(ex, time.perf_counter())
        await writer.flush()
        elapsed = time.perf_counter() - t0
        written = writer.written
        if store == "postgres":
            pg = writer.store
            await pg.pool.execute(  # type: ignore[attr-defined]
                "DROP TABLE IF EXISTS agwbench_rate_records, agwbench_rate_head, agwbench_rate_usage"
            )
        await writer.aclose()
    return {"records": written, "seconds": elapsed, "records_per_s": written / elapsed}


async def drop_bench_tables(rounds: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        for r in range(rounds):
            await conn.execute(
                f"DROP TABLE IF EXISTS agwbench_r{r}_records, agwbench_r{r}_head, agwbench_r{r}_usage"
            )
    finally:
        await conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--records", type=int, default=50_000, help="records fed to each store for records/s")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--postgres", action="store_true", help="also PostgreSQL ($AGENTGW_BENCH_PG)")
    ap.add_argument(
        "--loadgen", choices=["wrk", "aiohttp"], default="wrk" if shutil.which("wrk") else "aiohttp"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="extra audit settings")
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args()
    raise_nofile()
    variants = ["off", "sqlite", *(["postgres"] if a.postgres else [])]
    res: dict[str, Any] = {"command": " ".join([".venv/bin/python", "bench/audit_bench.py", *sys.argv[1:]])}
    extra = {k: orjson.loads(v) for k, v in (item.split("=", 1) for item in a.set)}
    res["gateway"] = gateway_ab(variants, a.rounds, a.concurrency, a.seconds, a.loadgen, extra)
    if a.postgres:
        asyncio.run(drop_bench_tables(a.rounds))
    res["stores"] = {
        s: asyncio.run(store_rate(s, a.records, a.batch))
        for s in ["sqlite", *(["postgres"] if a.postgres else [])]
    }
    print(f"\nLLM plane, c={a.concurrency}, {a.rounds} rounds × {a.seconds} s per variant (medians):")
    print(
        f"{'audit':10} {'req/s':>9} {'vs off':>7} {'p50 ms':>8} {'p99 ms':>8} {'gw µs/req':>10} {'bg cores':>9}"
    )
    for v in variants:
        g = res["gateway"][v]
        ratio = g.get("ratio_vs_off", 1.0)
        print(
            f"{v:10} {g['rps']:>9,.0f} {ratio:>7.3f} {g['p50_ms']:>8.2f} {g['p99_ms']:>8.2f} "
            f"{g['gateway_cpu_us']:>10.0f} {g['background_cores']:>9.2f}"
        )
    print("\nstore throughput through the writer:")
    for s, r in res["stores"].items():
        print(
            f"{s:10} {r['records_per_s']:>9,.0f} records/s ({r['records']:,} records in {r['seconds']:.2f} s)"
        )
    if a.json:
        Path(a.json).write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
