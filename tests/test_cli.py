"""The `agentgw` command: check-config and serve report the same problem lines and exit 3; `keys create` prints
a key once, stores only its hash, and a running gateway accepts it without a restart."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
import yaml
from click.testing import CliRunner

from agentgw.cli import main
from agentgw.keys import hash_key
from tests.support import MOCK_REGISTRY, TEST_KEY, gateway, write_config

AGENTGW = str(Path(sys.executable).parent / "agentgw")


def broken_config(tmp: Path, auth: dict[str, str] | None = None) -> tuple[Path, list[str]]:
    """A config with three problems, and the lines that report them."""
    cfg = write_config(
        tmp,
        {
            "llm": {
                "providers": [
                    {
                        "name": "openai",
                        "kind": "openai",
                        "base_url": "https://x/v1",
                        "api_key": "${AGW_T_UNSET}",
                    }
                ],
                "models": [{"name": "m", "targets": [{"provider": "nobody", "model": "x"}]}],
            }
        },
        {"listen": {"host": "127.0.0.1", "port": 0, "colour": "blue"}, "auth": auth or {}},
    )
    d = tmp.resolve()
    return cfg, [
        f"{d}/agentgw.yaml: listen.colour: unknown key",
        f"{d}/registry/main.yaml: llm.providers[0].api_key: environment variable AGW_T_UNSET is not set",
        f"{d}/registry/main.yaml: llm.models[0].targets[0].provider: unknown provider 'nobody'",
    ]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_check_config_prints_a_summary_and_exits_0_on_a_good_config(tmp_path: Path) -> None:
    code, out, err = run("check-config", "--config", str(write_config(tmp_path, MOCK_REGISTRY)))
    assert (code, err) == (0, "")
    assert out == "ok: 1 providers, 2 models, 0 MCP servers, 0 agents, 2 API keys\n"


@pytest.mark.parametrize("verb", [["check-config"], ["serve", "--port", "0"]])
def test_check_config_and_serve_print_one_line_per_problem_and_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verb: list[str]
) -> None:
    monkeypatch.delenv("AGW_T_UNSET", raising=False)
    cfg, lines = broken_config(tmp_path)
    code, out, err = run(*verb, "--config", str(cfg))
    assert (code, out) == (3, "")
    assert err.splitlines() == lines


async def test_the_installed_command_reports_the_same_lines_from_check_config_and_serve(
    tmp_path: Path,
) -> None:
    cfg, lines = broken_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "AGW_T_UNSET"}
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run_verb(*verb: str) -> None:
        results[verb[0]] = await anyio.run_process(
            [AGENTGW, *verb, "--config", str(cfg)], check=False, env=env
        )

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_verb, "check-config")
            tg.start_soon(run_verb, "serve", "--port", "0")
    assert set(results) == {"check-config", "serve"}
    for result in results.values():
        assert result.returncode == 3
        assert result.stdout == b""
        assert result.stderr.decode().splitlines() == lines


def test_a_missing_config_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    code, _, err = run("check-config", "--config", str(tmp_path / "absent.yaml"))
    assert (code, err) == (3, f"{tmp_path.resolve()}/absent.yaml: file not found\n")


def test_keys_create_prints_the_key_once_and_stores_only_its_hash_beside_the_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, MOCK_REGISTRY)
    code, out, err = run("keys", "create", "--subject", "ci-bot", "--role", "agents", "--config", str(cfg))
    assert code == 0
    key = out.strip()
    assert out == key + "\n" and key.startswith("agw-")
    assert "not shown again" in err and key not in err
    keys_file = tmp_path / "keys.yaml"
    assert key not in keys_file.read_text()
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    [entry] = yaml.safe_load(keys_file.read_text())
    assert entry["subject"] == "ci-bot" and entry["roles"] == ["agents"]
    assert entry["sha256"] == hash_key(key)
    # a second key is appended, and the file stays valid for the gateway
    assert run("keys", "create", "--subject", "other-bot", "--config", str(cfg))[0] == 0
    assert [e["subject"] for e in yaml.safe_load(keys_file.read_text())] == ["ci-bot", "other-bot"]
    assert run("check-config", "--config", str(cfg))[1].endswith(", 4 API keys\n")


def test_keys_create_uses_auth_keys_file_and_needs_no_provider_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGW_T_UNSET", raising=False)
    # a missing secret and other problems outside `auth` do not stop key creation
    cfg, _ = broken_config(tmp_path, {"keys_file": "secrets/gateway-keys.yaml"})
    code, out, _ = run("keys", "create", "--subject", "s", "--config", str(cfg))
    assert code == 0
    [entry] = yaml.safe_load((tmp_path / "secrets" / "gateway-keys.yaml").read_text())
    assert entry["sha256"] == hash_key(out.strip())


@pytest.mark.parametrize(
    ("keys_text", "args", "expected"),
    [
        ("subject: not-a-list\n", ["--subject", "s"], "{f}: expected a list of keys"),
        ("- {subject: a}\n", ["--subject", "s"], "{f}: [0].sha256: Field required"),
        ("", ["--subject", ""], "{f}: [0].subject: String should have at least 1 character"),
    ],
)
def test_keys_create_refuses_to_write_a_keys_file_the_gateway_could_not_read(
    tmp_path: Path, keys_text: str, args: list[str], expected: str
) -> None:
    cfg = write_config(tmp_path, MOCK_REGISTRY)
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(keys_text)
    code, out, err = run("keys", "create", *args, "--config", str(cfg), "--keys-file", str(keys_file))
    assert (code, out) == (3, "")
    assert err == expected.replace("{f}", str(keys_file)) + "\n"
    assert keys_file.read_text() == keys_text


async def test_a_running_gateway_accepts_a_key_created_after_it_started(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:

            async def status(key: str) -> int:
                r = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
                return r.status_code

            assert await status(TEST_KEY) == 200
            assert await status("agw-not-created-yet") == 401
            cfg = tmp_path / "agentgw.yaml"
            code, out, _ = run(
                "keys", "create", "--subject", "late", "--role", "agents", "--config", str(cfg)
            )
            assert code == 0
            assert await status(out.strip()) == 200
            assert await status(TEST_KEY) == 200
