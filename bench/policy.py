"""Authorization decision cost with a large policy: cold (first decision for an object, a full casbin
evaluation) and cached (the same decision again), with 10,000 policy lines; and decisions with a CEL condition
(argument rules: never cached, the condition evaluated every time) on top of the same policy, p50/p99 per kind of
condition. `--cel-python` also times the same conditions with cel-python when it is installed (it is not a
dependency: `pip install cel-python` to compare). Not a test: `make bench`."""

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

# (object, effect, condition, arguments that make it hold or not): the kinds of rule docs/mediation.md shows
CONDITIONS = [
    (
        "mcp:web/fetch",
        "allow",
        'url(args.url).host in ["docs.python.org", "example.com"]',
        {"url": "https://example.com/a"},
    ),
    (
        "mcp:fs/write_file",
        "allow",
        'path(args.path).within("/workspace/" + principal.sub)',
        {"path": "/workspace/bot/x"},
    ),
    (
        "llm:intern",
        "allow",
        "args.max_tokens <= 1000",
        {"max_tokens": 500, "messages": [{"role": "user", "content": "x" * 4000}]},
    ),
    (
        "mcp:db/query",
        "allow",
        'args.sql.matches("^\\\\s*(?i:select)\\\\s[^;]*;?\\\\s*$")',
        {"sql": "SELECT a FROM t"},
    ),
    ("mcp:fs/read_file", "allow", 'glob(args.path, "/data/**.csv")', {"path": "/data/x/y.csv"}),
]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def conditional(engine: PolicyEngine, rounds: int) -> dict[str, dict[str, float]]:
    """p50/p99 µs of whole decisions (matching lines cached, the condition evaluated) per kind of condition."""
    out = {}
    for target, _, condition, args in CONDITIONS:
        facts = {
            "args": args,
            "principal": {"sub": "bot", "roles": ["agents"], "claims": {}},
            "task": {},
            "target": target,
        }
        assert engine.decide("bot", ("agents",), target, "call", facts).allowed, condition
        samples = []
        for _ in range(rounds):
            t = time.perf_counter()
            engine.decide("bot", ("agents",), target, "call", facts)
            samples.append((time.perf_counter() - t) * 1e6)
        out[condition] = {
            "p50_us": round(percentile(samples, 0.5), 1),
            "p99_us": round(percentile(samples, 0.99), 1),
        }
    return out


def cel_python(rounds: int) -> dict[str, dict[str, float]] | str:
    """The conditions that cel-python can run as written (no agentgw helpers), evaluation alone, p50/p99 µs."""
    try:
        import celpy  # type: ignore[import-not-found]
    except ImportError:
        return "cel-python is not installed"
    from agentgw.conditions import compile_condition, evaluate

    env = celpy.Environment()
    out: dict[str, dict[str, float]] = {}
    for text, args in [
        ("args.max_tokens <= 1000", {"max_tokens": 500}),
        ('args.sql.matches("^\\\\s*(?i)select\\\\s")', {"sql": "SELECT 1"}),
    ]:
        program = env.program(env.compile(text))
        activation = {"args": celpy.json_to_cel(args)}
        ours = compile_condition(text)
        for name, run in (
            ("cel-python", lambda p=program, a=activation: p.evaluate(a)),
            ("common-expression-language", lambda c=ours, a=args: evaluate(c, {"args": a})),
        ):
            samples = []
            for _ in range(rounds):
                t = time.perf_counter()
                run()
                samples.append((time.perf_counter() - t) * 1e6)
            out[f"{name}: {text}"] = {
                "p50_us": round(percentile(samples, 0.5), 1),
                "p99_us": round(percentile(samples, 0.99), 1),
            }
    return out


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
    rows.extend(
        f"p, role:agents, {target}, call, {effect}, {condition}"
        for target, effect, condition, _ in CONDITIONS
    )
    path = folder / "policy.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--cold", type=int, default=200, help="distinct objects decided cold")
    ap.add_argument("--cached", type=int, default=200_000, help="cached decisions timed")
    ap.add_argument("--conditional", type=int, default=20_000, help="decisions timed per kind of condition")
    ap.add_argument("--cel-python", action="store_true", help="compare with cel-python (if installed)")
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
        with_condition = conditional(engine, args.conditional)
    result: dict[str, object] = {
        "policy_lines": args.lines,
        "load_ms": round(load_ms, 1),
        "cold_us_p50": round(statistics.median(cold), 1),
        "cold_us_max": round(max(cold), 1),
        "cached_us": round(cached_us, 3),
        "target_cached_us": 20,
        "with_condition": with_condition,
        "target_with_condition_p50_us": 50,
    }
    if args.cel_python:
        result["cel_python_vs_common_expression_language"] = cel_python(args.conditional)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
