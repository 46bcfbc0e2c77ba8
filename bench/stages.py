"""What each pipeline stage costs per Exchange, in-process: the pipeline with a trivial forward step, run with
growing stage lists (nothing, audit, + authn, + authz, + budget; then, with one upstream attempt per Exchange,
+ metrics and + OpenTelemetry span export to a discarding exporter). Divide by the gateway's CPU per request from
bench/llm.py for a stage's share of a real call. Not a test: `make bench`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from agentgw.audit.writer import Writer, open_writer  # noqa: E402
from agentgw.budget.config import Budgets  # noqa: E402
from agentgw.budget.memory import MemoryLedger  # noqa: E402
from agentgw.exchange import Attempt, Exchange, Result, Usage, task_from_headers  # noqa: E402
from agentgw.keys import KeyStore, hash_key  # noqa: E402
from agentgw.pipeline import Forward, Pipeline, Stage  # noqa: E402
from agentgw.policy import PolicyStore  # noqa: E402
from agentgw.settings import load_settings  # noqa: E402
from agentgw.stages.audit import AuditStage  # noqa: E402
from agentgw.stages.authn import Authenticator, AuthnStage  # noqa: E402
from agentgw.stages.authz import AuthzStage  # noqa: E402
from agentgw.stages.budget import BudgetStage  # noqa: E402
from agentgw.stages.observe import GatewayMetrics, ObserveStage  # noqa: E402

KEY = "agw-bench-key-0123456789"
RESULT = Result(body=b"{}")
USAGE = Usage(input_tokens=12, output_tokens=5)


async def forward(ex: Exchange) -> Result:
    return RESULT


async def forward_one_attempt(ex: Exchange) -> Result:
    """As a real call records it: one upstream attempt (what metrics count and OTel makes a client span of)."""
    attempt = Attempt(1, "up/m", "ok", 200)
    attempt.latency_ms = 1.0
    ex.attempts.append(attempt)
    return RESULT


def otel_exporter() -> object:
    """A span exporter that drops what it is given: the cost measured is building and queueing spans."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return Discard()


async def isolated_us(metrics: GatewayMetrics, telemetry: Any, n: int) -> dict[str, float]:
    """The observe hook's two halves alone, on one finished Exchange (a chat with usage and one attempt):
    steadier than differences of whole pipelines on a shared machine."""
    headers = {"authorization": f"Bearer {KEY}", "x-agentgw-task": "bench"}
    ex = Exchange("llm", "chat", "llm:m", headers, "127.0.0.1")
    ex.task = task_from_headers(headers)
    ex.payload = PAYLOAD
    ex.usage = Usage(input_tokens=12, output_tokens=5, cached_tokens=3, reasoning_tokens=1)
    ex.decide("authn", "allow", rule="api_key:bench")
    ex.decide("authz", "allow", rule="policy.csv:8: agents, llm:*, call, allow")
    await forward_one_attempt(ex)
    ex.status = "ok"
    out: dict[str, float] = {}
    for name, fn in (
        ("isolated: metrics observe()", metrics.observe),
        ("isolated: OTel export(), 2 spans", telemetry.export),
    ):
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n):
                fn(ex, t)
            runs.append((time.perf_counter() - t) / n * 1e6)
        out[name] = round(min(runs), 2)
    return out


PAYLOAD = {
    "model": "m",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Say hello to the bench."}],
}


async def per_call_us(
    pipeline: Pipeline, n: int, fwd: Forward = forward, writer: Writer | None = None
) -> float:
    """Mean µs per Exchange; with a writer, until every record is in the store (the writer's batches run in
    this process and loop, so their cost is part of each Exchange's)."""
    headers = {
        "authorization": f"Bearer {KEY}",
        "content-type": "application/json",
        "x-agentgw-task": "bench",
    }
    t = time.perf_counter()
    for _ in range(n):
        ex = Exchange("llm", "chat", "llm:m", headers, "127.0.0.1")
        ex.task = task_from_headers(headers)
        ex.payload = PAYLOAD
        ex.usage = USAGE
        await pipeline.run(ex, fwd)
    if writer is not None:
        await writer.flush()
    return (time.perf_counter() - t) / n * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=50_000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rounds", type=int, default=15, help="rotations of the metrics/OTel variants")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "registry.yaml").write_text("{}\n")
        cfg = {
            "registry": ["registry.yaml"],
            "auth": {"api_keys": [{"subject": "bench", "roles": ["agents"], "sha256": hash_key(KEY)}]},
            "policies": {
                "model": str(ROOT / "policies/model.conf"),
                "policy": str(ROOT / "policies/policy.csv"),
            },
        }
        (folder / "agentgw.yaml").write_text(yaml.safe_dump(cfg))
        settings = load_settings(folder / "agentgw.yaml")
        policy = PolicyStore(ROOT / "policies/model.conf", ROOT / "policies/policy.csv")
        policy.load()
        authn = AuthnStage(Authenticator(KeyStore(settings)))
        sink = open_writer(settings)  # the default store: SQLite, audit.db beside the config
        assert sink is not None
        await sink.start()
        lists: dict[str, list[Stage]] = {
            "nothing": [],
            "audit (SQLite)": [AuditStage(sink)],
            "audit + authn": [AuditStage(sink), authn],
            "audit + authn + authz": [AuditStage(sink), authn, AuthzStage(policy)],
        }
        rule = {"rules": [{"match": {"roles": ["agents"]}, "task": {"tokens": 10**12}}]}
        budget_memory = BudgetStage(Budgets.model_validate(rule), MemoryLedger(), {}, {})
        lists["audit + authn + authz + budget (memory)"] = [*lists["audit + authn + authz"], budget_memory]
        redis_ledger = None
        try:
            from agentgw.budget.redis import RedisLedger

            redis_ledger = RedisLedger(args.redis, prefix="agwbench")
            await redis_ledger.client.ping()
            budget_redis = BudgetStage(Budgets.model_validate(rule), redis_ledger, {}, {})
            lists["audit + authn + authz + budget (redis)"] = [*lists["audit + authn + authz"], budget_redis]
        except Exception as exc:
            print(f"redis ledger skipped: {exc}", file=sys.stderr)
            if redis_ledger is not None:
                await redis_ledger.aclose()
            redis_ledger = None
        from agentgw.observability import TelemetrySettings
        from agentgw.registry import Registry
        from agentgw.telemetry import Telemetry

        telemetry = Telemetry(TelemetrySettings(enabled=True), Registry(), exporter=otel_exporter())  # type: ignore[arg-type]
        telemetry.start()
        base = lists["audit + authn + authz"]
        attempt_lists: dict[str, list[Stage]] = {
            "1 attempt: audit + authn + authz": base,
            "1 attempt: + metrics": [ObserveStage(GatewayMetrics()), *base],
            "1 attempt: + metrics + OTel export": [ObserveStage(GatewayMetrics(), telemetry), *base],
        }
        out: dict[str, float] = {}
        for name, stages in lists.items():
            pipeline = Pipeline(stages)
            w = sink if name.startswith("audit") else None
            await per_call_us(pipeline, 2000, writer=w)  # warm caches
            out[name] = round(min([await per_call_us(pipeline, args.n, writer=w) for _ in range(3)]), 2)
        # Small differences between variants: rounds rotate through them, so load from other processes hits all
        # alike; the best round of each counts.
        pipelines = {name: Pipeline(stages) for name, stages in attempt_lists.items()}
        for pipeline in pipelines.values():
            await per_call_us(pipeline, 2000, forward_one_attempt)
        best = dict.fromkeys(pipelines, float("inf"))
        names = list(pipelines)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                us = await per_call_us(pipelines[name], args.n // 5, forward_one_attempt)
                best[name] = min(best[name], us)
        out.update({name: round(us, 2) for name, us in best.items()})
        out.update(await isolated_us(GatewayMetrics(), telemetry, args.n))
        await telemetry.aclose()
        await sink.aclose()
        if redis_ledger is not None:
            batch = [k async for k in redis_ledger.client.scan_iter("agwbench:*", count=1000)]
            for i in range(0, len(batch), 1000):
                await redis_ledger.client.unlink(*batch[i : i + 1000])
            await redis_ledger.aclose()
    base = out["audit + authn + authz"]
    for backend in ("memory", "redis"):
        name = f"audit + authn + authz + budget ({backend})"
        if name in out:
            out[f"budget stage ({backend})"] = round(out[name] - base, 2)
    out["authz stage"] = round(out["audit + authn + authz"] - out["audit + authn"], 2)
    one = out["1 attempt: audit + authn + authz"]
    out["metrics (observe stage)"] = round(out["1 attempt: + metrics"] - one, 2)
    out["OTel span export (2 spans)"] = round(
        out["1 attempt: + metrics + OTel export"] - out["1 attempt: + metrics"], 2
    )
    print(json.dumps({"us_per_exchange": out}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
