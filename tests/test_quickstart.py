"""What a newcomer does first works as written: `make run PORT=…` moves the gateway and its demo docs server,
the `check-config` example in the docs is what the command prints, the quickstart shows task budgets (the
remaining-budget headers, a limit a client lowers) and its two guards (an e-mail masked in a prompt, a secret
refused on every plane)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from mcp.shared.exceptions import MCPError

from agentgw.cli import main
from tests.mcp.support import mcp_client
from tests.support import agentgw_serve, free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO_KEY = {"authorization": "Bearer agw-demo-key"}
# What a `make run` in the checkout leaves beside the config: a copy starts without them (its own trace).
RUN_FILES = shutil.ignore_patterns("audit.db*", ".agentgw", "keys.yaml", "__pycache__")


def test_the_check_config_example_in_the_docs_is_what_the_command_prints() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    block = re.search(r"```console\n\$ agentgw check-config --config (\S+)\n(.*?)```", docs, re.S)
    assert block is not None
    result = CliRunner().invoke(main, ["check-config", "--config", str(ROOT / block.group(1))])
    assert result.exit_code == 0
    assert result.stdout == block.group(2)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_takes_a_port_and_the_demo_docs_server_and_agents_follow_it() -> None:
    shown = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "run", "PORT=8123"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    assert "PORT=8123 DOCS_PORT=9044 PLANNER_PORT=9045 RESEARCHER_PORT=9046 " in shown.stdout.decode()
    default = subprocess.run(["make", "-n", "-o", ".venv/.installed", "run"], cwd=ROOT, capture_output=True)
    assert "PORT=8080 DOCS_PORT=9001 PLANNER_PORT=9002 RESEARCHER_PORT=9003 " in default.stdout.decode()
    demo = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "agents-demo", "PORT=8123"], cwd=ROOT, capture_output=True
    )
    assert "examples/agents/run.py --gateway http://127.0.0.1:8123 " in demo.stdout.decode()


def quickstart_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, int, int]:
    """The quickstart copied under `tmp_path` with its ports free: (config, gateway port, docs server port)."""
    for part in (
        "examples/quickstart",
        "examples/servers",
        "examples/agents",
        "policies",
        "registry",
    ):  # a copy: its run files stay out of the repo
        shutil.copytree(ROOT / part, tmp_path / part, ignore=RUN_FILES)
    port, docs_port = free_port(), free_port()
    monkeypatch.setenv("PORT", str(port))
    monkeypatch.setenv("DOCS_PORT", str(docs_port))
    monkeypatch.setenv("PLANNER_PORT", str(free_port()))  # the demo agents start too: never on fixed ports
    monkeypatch.setenv("RESEARCHER_PORT", str(free_port()))
    return tmp_path / "examples" / "quickstart" / "agentgw.yaml", port, docs_port


async def test_the_quickstart_shows_task_budgets_and_follows_its_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, port, docs_port = quickstart_copy(tmp_path, monkeypatch)
    async with agentgw_serve(cfg, port) as gw:
        await gw.logged(f"[mcp:docs] ready on 127.0.0.1:{docs_port}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=DEMO_KEY) as c:
            body = {"model": "mock-fast", "messages": [{"role": "user", "content": "hello"}]}
            first = await c.post("/v1/chat/completions", json=body, headers={"x-agentgw-task": "qs-1"})
            lowered = await c.post(
                "/v1/chat/completions",
                json=body,
                headers={"x-agentgw-task": "qs-2", "x-agentgw-budget-tokens": "3"},
            )
        gw.process.terminate()
    assert first.status_code == 200, first.text
    assert int(first.headers["x-agentgw-budget-remaining-tokens"]) < 20000
    assert first.headers["x-agentgw-budget-remaining-tool-calls"] == "50"
    assert lowered.status_code == 429, lowered.text
    assert lowered.json()["error"]["code"] == "budget_exhausted"


AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


async def test_the_quickstart_masks_an_email_in_a_prompt_and_refuses_a_secret_on_every_plane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, port, docs_port = quickstart_copy(tmp_path, monkeypatch)
    base = f"http://127.0.0.1:{port}"
    async with agentgw_serve(cfg, port) as gw:
        await gw.logged(f"[mcp:docs] ready on 127.0.0.1:{docs_port}")
        await gw.logged("MCP server 'docs' connected")
        async with httpx.AsyncClient(base_url=base, headers=DEMO_KEY) as c:

            def chat(text: str) -> dict[str, object]:
                return {"model": "mock-fast", "messages": [{"role": "user", "content": text}]}

            masked = await c.post("/v1/chat/completions", json=chat("mail bob@example.com today"))
            llm_key = await c.post("/v1/chat/completions", json=chat(f"my key is {AWS_KEY}"))
            a2a_key = await c.post(
                "/a2a/planner",
                headers={"A2A-Version": "1.0"},
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "SendMessage",
                    "params": {
                        "message": {
                            "messageId": "m1",
                            "role": "ROLE_USER",
                            "parts": [{"text": f"deploy with {AWS_KEY}"}],
                        }
                    },
                },
            )
        async with mcp_client(f"{base}/mcp", key="agw-demo-key") as mcp:
            with pytest.raises(MCPError) as tool_key:
                await mcp.call_tool("docs__search", {"query": f"rotate {AWS_KEY}"})
            found = await mcp.call_tool("docs__search", {"query": "budgets"})
        gw.process.terminate()
    assert masked.status_code == 200, masked.text
    echoed = masked.json()["choices"][0]["message"]["content"]
    assert "<EMAIL_1>" in echoed and "bob@example.com" not in echoed
    assert llm_key.status_code == 400 and llm_key.json()["error"]["code"] == "sensitive_data", llm_key.text
    assert tool_key.value.code == -32602 and tool_key.value.data["code"] == "sensitive_data"
    assert not found.is_error
    error = a2a_key.json()["error"]
    assert error["data"][0]["metadata"] == {"code": "sensitive_data"}, error
