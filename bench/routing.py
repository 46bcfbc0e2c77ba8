"""What LLM routing costs per call, in-process: each strategy's target order plus the start/end bookkeeping over a
model with three targets (with and without rpm/tpm limits), the content rules (a header, a role, and a prompt-token
rule that counts a prompt with tiktoken), and one sync of the shared routing state with Redis. Not a test:
`make bench`."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import per_call_us  # noqa: E402

from agentgw.exchange import Exchange, Principal  # noqa: E402
from agentgw.llm.routing.content import ContentRoutes  # noqa: E402
from agentgw.llm.routing.strategies import Routing  # noqa: E402
from agentgw.registry import LLMSection, Model  # noqa: E402

STRATEGIES = ["failover", "weighted", "round_robin", "least_latency", "least_busy", "cost"]


def model(strategy: str, limits: bool) -> Model:
    extra: dict[str, Any] = {"rpm": 10**9, "tpm": 10**12} if limits else {}
    targets = [{"provider": f"p{i}", "model": f"m{i}", "cost_per_mtok": i + 1, **extra} for i in range(3)]
    return Model.model_validate({"name": "m", "strategy": strategy, "targets": targets})


def _routed(routing: Routing, m: Model) -> Any:
    """One call's routing: the order, the first target started and ended, its tokens counted."""

    def one() -> None:
        targets, _ = routing.order(m)
        t = targets[0]
        routing.started(t)
        routing.ended(t, 1.0, False)
        routing.used(f"{t.provider}/{t.model}", 20)

    return one


def strategy_costs(n: int) -> list[tuple[str, float, float]]:
    out = []
    for strategy in STRATEGIES:
        row = []
        for limits in (False, True):
            row.append(per_call_us(_routed(Routing(), model(strategy, limits)), n))
        out.append((strategy, row[0], row[1]))
    return out


def rule_costs(n: int) -> list[tuple[str, float]]:
    section = LLMSection.model_validate(
        {
            "models": [
                {"name": "auto", "targets": [{"provider": "p", "model": "x"}], "routes": [
                    {"when": {"headers": {"x-tier": "premium*"}}, "model": "b"},
                    {"when": {"roles": ["interns"]}, "model": "b"},
                    {"when": {"metadata": {"team": "research"}}, "model": "b"},
                    {"when": {"min_prompt_tokens": 100_000}, "model": "b"},
                ]},
                {"name": "b", "targets": [{"provider": "p", "model": "y"}]},
            ]
        }
    )  # fmt: skip
    routes = ContentRoutes(section.models)
    prompt = " ".join(f"word{i}" for i in range(350))  # about 2 KB
    cases = {
        "no rule for the alias": ({}, (), {"model": "b", "messages": [{"role": "user", "content": "hi"}]}),
        "header rule matches": ({"x-tier": "premium-gold"}, (), None),
        "role rule matches": ({}, ("interns",), None),
        "prompt-token rule, 2 KB prompt, no match": (
            {},
            (),
            {"messages": [{"role": "user", "content": prompt}]},
        ),
    }
    out = []
    for name, (headers, roles, body) in cases.items():
        payload = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **(body or {})}

        def one(
            headers: dict[str, str] = headers, roles: tuple[str, ...] = roles, p: dict[str, Any] = payload
        ) -> None:
            ex = Exchange("llm", "chat", "llm:auto", headers, "127.0.0.1")
            ex.principal = Principal("bench", roles, "api_key")
            ex.payload = p
            routes(ex)

        out.append((name, per_call_us(one, n)))
    return out


async def sync_cost(url: str, targets: int) -> float:
    from agentgw.llm.routing.shared import RoutingSync

    routing = Routing()
    keys = [f"p{i}/m{i}" for i in range(targets)]
    sync = RoutingSync(lambda: routing, lambda: keys, url, "agentgw-bench:routing:", 60)
    try:
        samples = []
        for _ in range(200):
            t = time.perf_counter()
            await sync.sync()
            samples.append((time.perf_counter() - t) * 1000)
        return statistics.median(samples)
    finally:
        await sync.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=50_000, help="calls per round (5 rounds, median)")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = ap.parse_args()
    print("| strategy | µs per call | with rpm/tpm limits |\n|---|---|---|")
    for strategy, plain, limited in strategy_costs(args.n):
        print(f"| `{strategy}` | {plain:.2f} | {limited:.2f} |")
    print("\n| content rules (4 rules) | µs per call |\n|---|---|")
    for name, us in rule_costs(args.n // 5):
        print(f"| {name} | {us:.2f} |")
    try:
        ms = asyncio.run(sync_cost(args.redis, 10))
        print(
            f"\nShared routing state: one sync of 10 targets with Redis: {ms:.3f} ms (every `sync_s`, off the hot path)"
        )
    except Exception as exc:
        print(f"\nShared routing state: Redis not reachable ({type(exc).__name__})")


if __name__ == "__main__":
    main()
