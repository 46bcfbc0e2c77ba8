"""`check-config` (and `serve`) also report what only the assembled gateway can see: MCP tool names that
would collide, and policy files that do not load."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agentgw.cli import main
from tests.support import write_config


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
