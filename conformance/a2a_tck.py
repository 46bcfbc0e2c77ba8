"""Helpers for conformance/a2a.sh (stdlib only): `ready` waits until agentgw serves the SUT's card, `compare` reads
the two JUnit reports of the A2A TCK (SUT alone, SUT through agentgw), prints both scores and every test whose
outcome differs, and exits 1 when a test that passes against the SUT alone does not pass through the gateway."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

OUTCOMES = ("passed", "failed", "skipped", "xfailed")


def outcomes(path: Path) -> dict[str, str]:
    """Test id (class path::name[params]) -> passed | failed | skipped | xfailed, from a pytest JUnit XML report."""
    out: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif (skip := case.find("skipped")) is not None:
            outcome = "xfailed" if skip.get("type") == "pytest.xfail" else "skipped"
        else:
            outcome = "passed"
        # A setup error and a call failure of one test are two rows: the worse one counts.
        if out.get(test) != "failed":
            out[test] = outcome
    return out


def score(results: dict[str, str]) -> str:
    """`passed=81 failed=29 skipped=149 xfailed=6`: not pytest's closing-line form, which CI logs are read for
    (these are the TCK's results, not the project's tests)."""
    counts = {o: sum(1 for v in results.values() if v == o) for o in OUTCOMES}
    return " ".join(f"{o}={counts[o]}" for o in OUTCOMES)


def compare(alone_xml: Path, gateway_xml: Path, summary: Path | None) -> int:
    alone, through = outcomes(alone_xml), outcomes(gateway_xml)
    if not alone or not through:
        print("a2a-tck: a JUnit report holds no test (did the TCK run?)", file=sys.stderr)
        return 2
    # The rule: a test that passes against the SUT alone must pass through the gateway (a gateway that forwards
    # faithfully scores what its upstream scores, test by test). A test missing from the gateway run counts too.
    lost = sorted(t for t, o in alone.items() if o == "passed" and through.get(t) != "passed")
    gained = sorted(t for t, o in through.items() if o == "passed" and alone.get(t) not in (None, "passed"))
    other = sorted(
        t
        for t in alone.keys() | through.keys()
        if t not in lost and t not in gained and alone.get(t) != through.get(t)
    )
    lines = [
        "# A2A TCK: the SUT alone vs through agentgw (transports jsonrpc, http_json)",
        "",
        f"- SUT alone:       {score(alone)}",
        f"- through agentgw: {score(through)}",
        "",
        f"Passing alone but not through agentgw (plane bugs): {len(lost)}",
        *(f"- {t}: {through.get(t, 'missing')}" for t in lost),
        "",
        f"Passing through agentgw but not alone: {len(gained)}",
        *(f"- {t}: {alone.get(t, 'missing')} alone" for t in gained),
    ]
    if other:
        lines += ["", "Other differences (alone -> through agentgw):"]
        lines += [f"- {t}: {alone.get(t, 'missing')} -> {through.get(t, 'missing')}" for t in other]
    text = "\n".join(lines) + "\n"
    print(text)
    if summary is not None:
        summary.write_text(text)
    verdict = "FAIL" if lost else "OK"
    print(f"a2a-tck: {verdict}: {len(lost)} test(s) pass against the SUT alone but not through agentgw")
    return 1 if lost else 0


def ready(gateway: str, agent: str, key: str, timeout: float) -> int:
    """0 once /readyz says ready and the agent's card comes through the gateway (the SUT is reachable), and the
    same card is refused without the key; 1 otherwise."""
    card = f"{gateway}/a2a/{agent}/.well-known/agent-card.json"
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{gateway}/readyz", timeout=5) as r:
                up = json.load(r).get("ready")
            if up:
                req = urllib.request.Request(card, headers={"Authorization": f"Bearer {key}"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    interfaces = json.load(r).get("supportedInterfaces") or []
                if interfaces:
                    try:
                        urllib.request.urlopen(card, timeout=10)
                        print("the gateway served the card without an API key", file=sys.stderr)
                        return 1
                    except urllib.error.HTTPError as err:
                        if err.code != 401:
                            print(f"without an API key: HTTP {err.code}, expected 401", file=sys.stderr)
                            return 1
                    return 0
                last = "the card lists no interface"
        except Exception as exc:  # not up yet
            last = repr(exc)
        time.sleep(0.3)
    print(f"gateway not ready: {last}", file=sys.stderr)
    return 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("alone", type=Path)
    c.add_argument("gateway", type=Path)
    c.add_argument("--summary", type=Path)
    sc = sub.add_parser("score")
    sc.add_argument("report", type=Path)
    r = sub.add_parser("ready")
    r.add_argument("gateway")
    r.add_argument("agent")
    r.add_argument("key")
    r.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    if args.cmd == "compare":
        return compare(args.alone, args.gateway, args.summary)
    if args.cmd == "score":
        print(score(outcomes(args.report)))
        return 0
    return ready(args.gateway, args.agent, args.key, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
