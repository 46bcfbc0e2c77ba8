"""`agentgw guard test` and `check-config` on the guardrails section, as an operator runs them."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from agentgw.cli import main
from tests.support import write_config

REGISTRY = {"llm": {"providers": [{"name": "mock", "kind": "mock"}], "models": []}}
GUARDS = {
    "guards": {
        "sensitive-data": {"action": "mask"},
        "secrets": {"action": "block"},
        "words": {"type": "content", "action": "block", "deny": ["project falcon"]},
    },
    "rules": [{"guards": ["secrets"], "direction": "request"}],
}


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.output


def test_guard_test_shows_the_masked_text_and_the_kinds_found(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, REGISTRY, {"guardrails": GUARDS}))
    code, out = run("guard", "test", "--guard", "sensitive-data", "--text", "mail bob@example.com", "-c", cfg)
    assert code == 1
    assert "found: email×1" in out and "forwarded as: mail <EMAIL_1>" in out


def test_guard_test_names_the_code_of_a_block_and_never_the_value(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, REGISTRY, {"guardrails": GUARDS}))
    code, out = run("guard", "test", "--guard", "secrets", "--json", "-c", cfg, stdin="AKIAIOSFODNN7EXAMPLE")
    outcome = orjson.loads(out)
    assert code == 1 and outcome["blocked"] is True and outcome["code"] == "sensitive_data"
    assert outcome["found"] == {"aws_access_key": 1}
    assert "AKIAIOSFODNN7EXAMPLE" not in outcome["message"]


def test_guard_test_passes_clean_text_with_exit_zero(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, REGISTRY, {"guardrails": GUARDS}))
    code, out = run("guard", "test", "--guard", "words", "--text", "the falcon project", "-c", cfg)
    assert code == 0 and "found: nothing" in out
    code, out = run("guard", "test", "--guard", "words", "--text", "PR0JECT  F@LC0N now", "-c", cfg)
    assert code == 1 and "blocked: content_blocked" in out


def test_guard_test_refuses_an_unknown_guard(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, REGISTRY, {"guardrails": GUARDS}))
    code, out = run("guard", "test", "--guard", "nope", "--text", "x", "-c", cfg)
    assert code == 2 and "no guard named 'nope'" in out and "secrets" in out


def test_check_config_names_a_guard_whose_pattern_does_not_compile(tmp_path: Path) -> None:
    bad = {"guards": {"pii": {"type": "sensitive_data", "patterns": {"emp": "EMP-(\\d"}}}}
    cfg = str(write_config(tmp_path, REGISTRY, {"guardrails": bad}))
    code, out = run("check-config", "--config", cfg)
    assert code == 3 and "guardrails.guards.pii" in out
