"""The benches' result table: medians over rounds, number formatting, metric rows compared across targets (ratios,
added latency, targets met), plain markdown tables, the background-load line and the JSON file of a run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median over rounds for numbers; errors summed."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if key in r]
        if key == "errors":
            total: dict[str, int] = {}
            for e in vals:
                for k, v in e.items():
                    total[k] = total.get(k, 0) + v
            out[key] = total
        elif all(isinstance(v, int | float) for v in vals):
            out[key] = statistics.median(vals)
    return out


def per_call_us(fn: Callable[[], Any], n: int, rounds: int = 5) -> float:
    """Median over `rounds` of the mean time of one call of `fn` (in-process micro benches), in µs."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def fmt(v: float | None) -> str:
    """A number for a table: thousands without decimals, small values with three, the rest with one."""
    if v is None:
        return "–"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def markdown(head: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A markdown table; `align` is one letter per column (l or r), left when missing."""
    marks = ["---:" if (align[i : i + 1] == "r") else "---" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass
class Row:
    """One metric across targets (direct, floor, gateway, …), with the target it has to meet."""

    metric: str
    unit: str
    values: dict[str, float | None] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None


@dataclass(frozen=True)
class Layout:
    """The columns of a metric table: the targets' values, ratios (label, numerator, denominator), and the latency
    `subject` adds over `base` (ms rows only)."""

    targets: tuple[str, ...]
    ratios: tuple[tuple[str, str, str], ...] = (("gw ÷ direct", "gateway", "direct"),)
    subject: str = "gateway"
    base: str = "direct"

    def head(self) -> list[str]:
        return ["metric", *self.targets, "unit", *(r[0] for r in self.ratios), "added", "target", ""]

    def cells(self, row: Row) -> list[str]:
        v = row.values

        def ratio(num: str, den: str) -> str:
            n, d = v.get(num), v.get(den)
            return f"{n / d:.2f}×" if d and n is not None else "–"

        s, b = v.get(self.subject), v.get(self.base)
        added = f"{s - b:+.3f}" if b is not None and s is not None and row.unit == "ms" else "–"
        verdict = "" if row.met is None else ("met" if row.met else "**missed**")
        return [
            row.metric,
            *(fmt(v.get(t)) for t in self.targets),
            row.unit,
            *(ratio(n, d) for _, n, d in self.ratios),
            added,
            row.target,
            verdict,
        ]

    def table(self, rows: Sequence[Row]) -> str:
        return markdown(self.head(), [self.cells(r) for r in rows])


def row_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The rows for the JSON file."""
    return [{"metric": r.metric, "unit": r.unit, **r.values, "target": r.target, "met": r.met} for r in rows]


def backgrounds(res: Any) -> list[float]:
    """The background load (cores) of every measured run in a result: each run sits in a `rounds` list."""
    if not isinstance(res, dict):
        return []
    if isinstance(res.get("rounds"), list):
        return [r["background_cores"] for r in res["rounds"]]
    return [b for v in res.values() for b in backgrounds(v)]


def background_line(bg: list[float], at_start: float) -> str:
    """What other processes kept busy while we measured (cores), for the result's footer."""
    return (
        f"background load from other processes during measured runs: median {statistics.median(bg):.2f}, "
        f"max {max(bg):.2f} cores (before start: {at_start:.2f})"
    )


def write_json(path: str | None, res: dict[str, Any]) -> None:
    if path:
        Path(path).write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))


def finish(
    res: dict[str, Any], layout: Layout, rows: Sequence[Row], footer: str, strict: bool, json: str | None
) -> int:
    """Print a metric table, its footer and the background load; write the JSON file; the exit code."""
    bg = backgrounds(res)
    res["background_cores"] = {"median": statistics.median(bg), "max": max(bg)}
    res["table"] = row_dicts(rows)
    print(layout.table(rows))
    print(f"\n{footer}")
    print(background_line(bg, res["background_cores_at_start"]))
    write_json(json, res)
    return verdict(rows, strict)


def verdict(rows: Sequence[Row], strict: bool) -> int:
    """Print the missed targets; the exit code (1 only when `strict` and a target is missed)."""
    missed = [r.metric for r in rows if r.met is False]
    if missed:
        print(f"missed targets: {'; '.join(missed)}")
    return 1 if (strict and missed) else 0
