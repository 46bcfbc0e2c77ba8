"""Compare MCP conformance results: the fixture alone vs the same fixture behind agentgw.

Reads the suite's per-scenario `checks.json` files from OUT/{fixture,gateway}-<revision>/server-<scenario>-<time>/
and the suite's frozen requirement sets (requirements/<revision>.yaml: which server scenarios are scored).
Prints a summary table, writes OUT/summary.json and OUT/summary.md, and exits 1 when, for any revision, the
gateway passes fewer scored checks than the fixture alone (0 otherwise).

Usage: python compare.py OUT REQUIREMENTS_DIR REVISION [REVISION...]
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

DIR_RE = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
STATUSES = ("SUCCESS", "FAILURE", "WARNING", "SKIPPED", "INFO")


def load_run(root: Path) -> dict[str, list[dict[str, Any]]]:
    """scenario → its checks (the newest result directory wins if a scenario ran twice)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    if not root.is_dir():
        return runs
    for d in sorted(root.iterdir()):
        m = DIR_RE.match(d.name)
        checks_file = d / "checks.json"
        if m is None or not checks_file.is_file():
            continue
        try:
            checks = json.loads(checks_file.read_text())
        except ValueError:
            checks = [{"id": "checks-json-unreadable", "name": "Unreadable", "status": "FAILURE"}]
        runs[m.group("scenario")] = checks if isinstance(checks, list) else []
    return runs


def keyed(checks: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Checks keyed by (id, name, occurrence): some scenarios emit the same check id several times."""
    seen: Counter[tuple[str, str]] = Counter()
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for c in checks:
        base = (str(c.get("id")), str(c.get("name")))
        out[(*base, seen[base])] = c
        seen[base] += 1
    return out


def tally(run: dict[str, list[dict[str, Any]]], scenarios: list[str]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    passed_scenarios = 0
    missing = []
    for s in scenarios:
        checks = run.get(s)
        if checks is None:
            missing.append(s)
            continue
        for c in checks:
            counts[c.get("status", "?")] += 1
        if not any(c.get("status") == "FAILURE" for c in checks):
            passed_scenarios += 1
    return {
        "scenarios": len(scenarios),
        "scenarios_passed": passed_scenarios,
        "scenarios_missing": missing,
        "checks": {k: counts.get(k, 0) for k in STATUSES},
    }


def regressions(
    fixture: dict[str, list[dict[str, Any]]], gateway: dict[str, list[dict[str, Any]]], scenarios: list[str]
) -> list[dict[str, Any]]:
    """Checks that succeed on the fixture alone but not through the gateway."""
    out = []
    for s in scenarios:
        fx = keyed(fixture.get(s, []))
        gw = keyed(gateway.get(s, []))
        for key, c in fx.items():
            if c.get("status") != "SUCCESS":
                continue
            g = gw.get(key)
            status = g.get("status") if g else "MISSING"
            if status != "SUCCESS":
                out.append(
                    {
                        "scenario": s,
                        "check": key[0],
                        "name": key[1],
                        "gateway_status": status,
                        "error": (g or {}).get("errorMessage") or "",
                    }
                )
    return out


def fmt_counts(t: dict[str, Any]) -> str:
    c = t["checks"]
    extra = f", {len(t['scenarios_missing'])} missing" if t["scenarios_missing"] else ""
    return (
        f"{t['scenarios_passed']}/{t['scenarios']} scenarios{extra}; checks: {c['SUCCESS']} passed, "
        f"{c['FAILURE']} failed, {c['WARNING']} warnings, {c['SKIPPED']} skipped"
    )


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    out, req_dir, revisions = Path(argv[1]), Path(argv[2]), argv[3:]
    summary: dict[str, Any] = {}
    worse = False
    md = [
        "| Requirement set | Run | Scored scenarios passed | Scored checks passed | failed | warnings | "
        "skipped | Not-scored scenarios passed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rev in revisions:
        req = yaml.safe_load((req_dir / f"{rev}.yaml").read_text())
        scored = list(req.get("server") or [])
        not_scored = [e["scenario"] for e in req.get("not_scored") or [] if e.get("leg") == "server"]
        fixture = load_run(out / f"fixture-{rev}")
        gateway = load_run(out / f"gateway-{rev}")
        entry: dict[str, Any] = {}
        for label, run in (("fixture", fixture), ("gateway", gateway)):
            entry[label] = {"scored": tally(run, scored), "not_scored": tally(run, not_scored)}
        entry["regressions"] = regressions(fixture, gateway, scored)
        entry["regressions_not_scored"] = regressions(fixture, gateway, not_scored)
        fx_pass = entry["fixture"]["scored"]["checks"]["SUCCESS"]
        gw_pass = entry["gateway"]["scored"]["checks"]["SUCCESS"]
        entry["gateway_lower"] = gw_pass < fx_pass
        worse = worse or entry["gateway_lower"]
        summary[rev] = entry
        for label in ("fixture", "gateway"):
            s, n = entry[label]["scored"], entry[label]["not_scored"]
            c = s["checks"]
            md.append(
                f"| {rev} | {'fixture alone' if label == 'fixture' else 'through agentgw'} | "
                f"{s['scenarios_passed']}/{s['scenarios']} | {c['SUCCESS']} | {c['FAILURE']} | "
                f"{c['WARNING']} | {c['SKIPPED']} | {n['scenarios_passed']}/{n['scenarios']} |"
            )

    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["", "MCP conformance: fixture alone vs through agentgw (prefix: never)", ""]
    for rev, entry in summary.items():
        lines.append(f"  {rev}")
        lines.append(f"    fixture alone    {fmt_counts(entry['fixture']['scored'])}")
        lines.append(f"    through agentgw  {fmt_counts(entry['gateway']['scored'])}")
        lines.append(
            f"    not scored       fixture {entry['fixture']['not_scored']['scenarios_passed']}/"
            f"{entry['fixture']['not_scored']['scenarios']}, agentgw "
            f"{entry['gateway']['not_scored']['scenarios_passed']}/"
            f"{entry['gateway']['not_scored']['scenarios']} scenarios without failures"
        )
        regs = entry["regressions"]
        verdict = "LOWER than the fixture" if entry["gateway_lower"] else "not lower than the fixture"
        lines.append(
            f"    agentgw is {verdict}; {len(regs)} scored check(s) pass on the fixture but not through it"
        )
        for r in regs:
            lines.append(f"      - {r['scenario']}: {r['check']} [{r['gateway_status']}] {r['error'][:160]}")
        extra = entry["regressions_not_scored"]
        if extra:
            lines.append(
                f"    not scored (informational): {len(extra)} check(s) pass on the fixture but not through it"
            )
            for r in extra:
                lines.append(
                    f"      - {r['scenario']}: {r['check']} [{r['gateway_status']}] {r['error'][:160]}"
                )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    md_regs = []
    for rev, entry in summary.items():
        for r in entry["regressions"]:
            md_regs.append(
                f"| {rev} | {r['scenario']} | `{r['check']}` | {r['gateway_status']} | "
                f"{r['error'][:200].replace('|', '/')} |"
            )
    (out / "summary.md").write_text(
        "\n".join(md)
        + "\n\nScored checks that pass on the fixture but not through agentgw:\n\n"
        + "| Requirement set | Scenario | Check | Through agentgw | Error |\n|---|---|---|---|---|\n"
        + "\n".join(md_regs)
        + "\n"
    )
    print("\n".join(md))
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
