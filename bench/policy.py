"""Authorization decision cost with a large policy: cold (first decision for an object, a full casbin
evaluation) and cached (the same decision again), with 10,000 policy lines. Not a test: `make bench`."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentgw.policy import PolicyEngine  # noqa: E402


def write_policy(folder: Path, lines: int) -> Path:
    rows = ["p, role:admins, *, *, allow", "g, user:bot, role:agents"]
    for i in range(lines - len(rows)):
        role = f"team{i % 200}"
        rows.append(
            f"p, role:{role}, mcp:server{i % 500}/tool{i}*, call, allow"
            if i % 3
            else f"p, role:{role}, llm:model-{i}, call, allow"
        )
    rows.append("p, role:agents, mcp:server7/*, call, allow")
    path = folder / "policy.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--cold", type=int, default=200, help="distinct objects decided cold")
    ap.add_argument("--cached", type=int, default=200_000, help="cached decisions timed")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy = write_policy(folder, args.lines)
        t0 = time.perf_counter()
        engine = PolicyEngine(ROOT / "policies" / "model.conf", policy)
        load_ms = (time.perf_counter() - t0) * 1000
        cold: list[float] = []
        for i in range(args.cold):
            t = time.perf_counter()
            engine.decide("bot", ("agents",), f"mcp:server7/tool-{i}", "call")
            cold.append((time.perf_counter() - t) * 1e6)
        t = time.perf_counter()
        for _ in range(args.cached):
            engine.decide("bot", ("agents",), "mcp:server7/tool-1", "call")
        cached_us = (time.perf_counter() - t) / args.cached * 1e6
    result = {
        "policy_lines": args.lines,
        "load_ms": round(load_ms, 1),
        "cold_us_p50": round(statistics.median(cold), 1),
        "cold_us_max": round(max(cold), 1),
        "cached_us": round(cached_us, 3),
        "target_cached_us": 20,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
