"""The A2A TCK comparison rule (conformance/a2a_tck.py): a test that passes against the SUT alone must pass through
the gateway; read from real pytest JUnit reports of a tiny suite run here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

HELPER = Path(__file__).resolve().parent.parent / "conformance" / "a2a_tck.py"


def helper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("a2a_tck", HELPER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def junit(tmp: Path, name: str, outcomes: dict[str, str]) -> Path:
    """Runs a generated suite with pytest and returns its JUnit report: `outcomes` maps test name to pass, fail,
    skip or xfail."""
    body = ["import pytest", ""]
    for test, outcome in outcomes.items():
        if outcome == "xfail":
            body += ["@pytest.mark.xfail(reason='known')", f"def {test}():", "    assert False", ""]
        else:
            line = {"pass": "assert True", "fail": "assert False", "skip": "pytest.skip('no')"}[outcome]
            body += [f"def {test}():", f"    {line}", ""]
    suite = tmp / name / "test_suite.py"
    suite.parent.mkdir()
    suite.write_text("\n".join(body))
    report = tmp / f"{name}.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite), f"--junitxml={report}"],
        cwd=suite.parent,
        capture_output=True,
        check=False,
    )
    return report


def test_a_test_passing_alone_but_failing_through_the_gateway_fails_the_comparison(tmp_path: Path) -> None:
    alone = junit(
        tmp_path, "alone", {"test_a": "pass", "test_b": "pass", "test_c": "fail", "test_d": "xfail"}
    )
    through = junit(
        tmp_path, "through", {"test_a": "pass", "test_b": "fail", "test_c": "pass", "test_d": "xfail"}
    )
    mod = helper()
    assert sorted(mod.outcomes(alone).values()) == ["failed", "passed", "passed", "xfailed"]
    summary = tmp_path / "summary.md"
    assert mod.compare(alone, through, summary) == 1
    text = summary.read_text()
    assert "plane bugs): 1" in text and "test_b: failed" in text
    assert "not alone: 1" in text and "test_c: failed alone" in text


def test_a_gateway_that_loses_nothing_passes_the_comparison_even_when_it_gains(tmp_path: Path) -> None:
    alone = junit(tmp_path, "alone", {"test_a": "pass", "test_b": "skip", "test_c": "fail"})
    through = junit(tmp_path, "through", {"test_a": "pass", "test_b": "skip", "test_c": "pass"})
    assert helper().compare(alone, through, None) == 0


def test_a_test_missing_from_the_gateway_run_counts_as_lost(tmp_path: Path) -> None:
    alone = junit(tmp_path, "alone", {"test_a": "pass", "test_b": "pass"})
    through = junit(tmp_path, "through", {"test_a": "pass"})
    assert helper().compare(alone, through, None) == 1
