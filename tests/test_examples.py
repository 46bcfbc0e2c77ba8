"""Every shipped example config passes `agentgw check-config` (with dummy secrets in the environment), and names
the secret it needs when that is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agentgw.cli import main
from agentgw.settings import load_settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = sorted(EXAMPLES.glob("*/agentgw.yaml"))
SECRETS = {"OPENAI_API_KEY": "sk-test-dummy", "ANTHROPIC_API_KEY": "sk-ant-test-dummy"}


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_LLM_URL", raising=False)


def check_config(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    return result.exit_code, result.stdout + result.stderr


def test_the_examples_that_must_exist_do() -> None:
    assert {p.parent.name for p in CONFIGS} >= {"quickstart", "openai-failover", "anthropic"}


@pytest.mark.usefixtures("secrets")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_every_example_config_passes_check_config(config: Path) -> None:
    code, output = check_config(config)
    assert (code, output.startswith("ok: ")) == (0, True), output


@pytest.mark.usefixtures("secrets")
@pytest.mark.parametrize(
    ("example", "variable", "where"),
    [
        ("openai-failover", "OPENAI_API_KEY", "registry/llm.yaml: llm.providers[1].api_key"),
        ("anthropic", "ANTHROPIC_API_KEY", "registry/llm.yaml: llm.providers[0].api_key"),
    ],
)
def test_an_example_without_its_secret_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, example: str, variable: str, where: str
) -> None:
    monkeypatch.delenv(variable)
    code, output = check_config(EXAMPLES / example / "agentgw.yaml")
    assert code == 3
    assert output == f"{EXAMPLES / example}/{where}: environment variable {variable} is not set\n"


@pytest.mark.usefixtures("secrets")
def test_the_failover_example_tries_the_local_server_before_openai() -> None:
    settings = load_settings(EXAMPLES / "openai-failover" / "agentgw.yaml")
    reg = settings.registry_data
    fast = next(m for m in reg.llm.models if m.name == "fast")
    targets = [(t.provider, t.model) for t in fast.targets]
    assert targets == [("local", "llama3.1"), ("openai", "gpt-4o-mini")]
    local, openai = reg.provider("local"), reg.provider("openai")
    assert local is not None and local.base_url == "http://127.0.0.1:11434/v1"
    assert openai is not None and openai.api_key == SECRETS["OPENAI_API_KEY"]
