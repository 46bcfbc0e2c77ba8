"""`check-config` (and `serve`) also report what only the assembled gateway can see: MCP tool names that
would collide, and policy files that do not load."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agentgw.cli import main
from tests.support import POLICIES, write_config


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stderr


def test_two_servers_exposing_the_same_name_unprefixed_is_a_config_error(tmp_path: Path) -> None:
    registry = {
        "mcp": {
            "servers": [
                {"name": "a", "url": "http://127.0.0.1:9/mcp", "tools": {"rename": {"find": "search"}}},
                {"name": "b", "url": "http://127.0.0.1:9/mcp", "tools": {"rename": {"lookup": "search"}}},
            ],
            "virtual_servers": [{"name": "flat", "tools": ["a__*", "b__*"], "prefix": "never"}],
        }
    }
    code, err = run("check-config", "--config", str(write_config(tmp_path, registry)))
    assert code == 3
    assert (
        "registry: mcp.virtual_servers[flat]: tool 'search' would be exposed by a, b (prefix: never)" in err
    )


def test_two_renames_to_one_name_within_a_server_is_a_config_error(tmp_path: Path) -> None:
    registry = {
        "mcp": {
            "servers": [
                {
                    "name": "a",
                    "url": "http://127.0.0.1:9/mcp",
                    "tools": {"rename": {"x": "same", "y": "same"}},
                }
            ]
        }
    }
    code, err = run("check-config", "--config", str(write_config(tmp_path, registry)))
    assert code == 3
    assert "'x' and 'y' are both renamed to 'same'" in err


def test_a_policy_model_that_does_not_load_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "model.conf").write_text("[request_definition]\nr = sub, obj, act\n")  # no matcher, no effect
    (tmp_path / "policy.csv").write_text("p, role:agents, llm:*, call, allow\n")
    cfg = write_config(tmp_path, {}, {"policies": {"model": "model.conf", "policy": "policy.csv"}})
    code, err = run("check-config", "--config", str(cfg))
    assert code == 3
    assert f"{tmp_path / 'model.conf'}: policy does not load" in err


def test_policy_check_prints_the_verdict_and_the_deciding_line(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, {}))
    allowed = CliRunner().invoke(
        main, ["policy", "check", "tester", "llm:mock-fast", "call", "--config", cfg]
    )
    denied = CliRunner().invoke(
        main, ["policy", "check", "ivy", "llm:mock-smart", "call", "--role", "interns", "--config", cfg]
    )
    tagged = CliRunner().invoke(
        main, ["policy", "check", "x", "mcp:fs/rm", "call", "--role", "admins", "--config", cfg]
    )
    assert allowed.exit_code == 0
    assert allowed.stdout.splitlines()[0] == "allowed: tester (roles: agents) call llm:mock-fast"
    assert allowed.stdout.splitlines()[1].endswith("policy.csv:8: p, role:agents, llm:*, call, allow")
    assert denied.exit_code == 1
    assert denied.stdout.splitlines() == [
        "denied: ivy (roles: interns) call llm:mock-smart",
        "  by default deny: no policy line matched",
    ]
    assert tagged.exit_code == 0


def test_policy_check_decides_conditional_lines_with_the_given_arguments(tmp_path: Path) -> None:
    (tmp_path / "policy.csv").write_text(
        'p, role:agents, mcp:fs/write_file, call, allow, path(args.path).within("/workspace/" + principal.sub)\n'
        "p, role:agents, mcp:fs/rm, call, approve\n"
    )
    policies = {"policies": {"model": str(POLICIES / "model.conf"), "policy": "policy.csv"}}
    cfg = str(write_config(tmp_path, {}, policies))

    def check(*argv: str) -> tuple[int, list[str]]:
        result = CliRunner().invoke(main, ["policy", "check", "tester", *argv, "--config", cfg])
        return result.exit_code, result.stdout.splitlines()

    inside = check("mcp:fs/write_file", "call", "--args", '{"path": "/workspace/tester/a"}')
    outside = check("mcp:fs/write_file", "call", "--args", '{"path": "/workspace/tester/../x"}')
    missing = check("mcp:fs/write_file", "call")
    held = check("mcp:fs/rm", "call")
    assert inside[0] == 0 and inside[1][1].endswith(
        "policy.csv:1: " + (tmp_path / "policy.csv").read_text().splitlines()[0]
    )
    assert outside[0] == 1 and outside[1][1] == "  by default deny: the conditions of lines 1 do not hold"
    assert outside[1][2].startswith("  condition failed (fails closed): line 1: ")
    assert "path(): `..` segment" in outside[1][2]
    assert missing[0] == 1
    assert held == (0, ["allowed (approve): tester (roles: agents) call mcp:fs/rm", held[1][1]])
    assert held[1][1].endswith("policy.csv:2: p, role:agents, mcp:fs/rm, call, approve")


def test_check_config_names_each_policy_line_with_a_bad_effect_or_condition(tmp_path: Path) -> None:
    (tmp_path / "policy.csv").write_text(
        "p, role:agents, llm:*, call, allow\n"
        "p, role:agents, mcp:*, call, permit\n"
        "p, role:agents, mcp:fs/*, call, deny, args.path ==\n"
    )
    policies = {"policies": {"model": str(POLICIES / "model.conf"), "policy": "policy.csv"}}
    cfg = write_config(tmp_path, {}, policies)
    code, err = run("check-config", "--config", str(cfg))
    assert code == 3
    assert (
        f"{tmp_path / 'policy.csv'}: line 2: effect 'permit' is not one of allow, approve, confirm, deny"
        in err
    )
    assert f"{tmp_path / 'policy.csv'}: line 3: condition does not compile" in err


def test_a_feature_whose_optional_extra_is_not_installed_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    found = importlib.util.find_spec
    missing = {"botocore", "usearch"}  # as in a plain `pip install agentgw`
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else found(name, *a)
    )
    registry = {
        "llm": {
            "providers": [
                {"name": "aws", "kind": "bedrock", "region": "us-east-1"},
                {"name": "m", "kind": "mock"},
            ],
            "models": [
                {"name": "claude", "targets": [{"provider": "aws", "model": "anthropic.claude"}]},
                {"name": "embed", "targets": [{"provider": "m", "model": "e"}]},
            ],
        }
    }
    settings = {"llm": {"cache": {"mode": "semantic", "semantic": {"embedding_model": "embed"}}}}
    code, err = run("check-config", "--config", str(write_config(tmp_path, registry, settings)))
    assert code == 3
    assert (
        "llm.providers[0] (aws, kind bedrock): needs the 'bedrock' extra: pip install 'agentgw[bedrock]'"
        in err
    )
    assert "llm.cache.semantic.index memory: needs the 'semantic-cache' extra" in err
    assert "numpy" not in err  # installed here: only what is missing is named
