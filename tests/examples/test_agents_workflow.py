"""The quickstart's A2A demo as a user meets it: `agentgw serve` with the quickstart config launches the planner and
the researcher (examples/agents); a question to the planner, through the gateway, comes back answered from the docs,
and the task's trace holds the planner's steps under the user's delegation and the researcher's under the
planner's. The demo agents' keys reach only what their agent needs."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_artifact_text, get_message_text, new_text_message
from a2a.types import Role, SendMessageRequest, TaskState
from click.testing import CliRunner

from agentgw.cli import main
from tests.support import AGENTGW, agentgw_serve, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
QUICKSTART = ROOT / "examples" / "quickstart" / "agentgw.yaml"
DEMO_KEY = "agw-demo-key"
# What a `make run` in the checkout leaves beside the config: a copy starts without them (its own trace).
RUN_FILES = shutil.ignore_patterns("audit.db*", ".agentgw", "keys.yaml", "__pycache__")


def quickstart_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, int]]:
    """The quickstart in tmp_path (its audit store and run files stay out of the repo), on free ports."""
    for part in ("examples/quickstart", "examples/servers", "examples/agents", "policies", "registry"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=RUN_FILES)
    ports = {name: free_port() for name in ("PORT", "DOCS_PORT", "PLANNER_PORT", "RESEARCHER_PORT")}
    for name, port in ports.items():
        monkeypatch.setenv(name, str(port))
    return tmp_path / "examples" / "quickstart" / "agentgw.yaml", ports


@contextlib.asynccontextmanager
async def quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Path]]:
    """`agentgw serve` with a copy of the quickstart, once its agents and the docs server are up."""
    cfg, ports = quickstart_copy(tmp_path, monkeypatch)
    async with agentgw_serve(cfg, ports["PORT"]) as gw:
        await gw.logged(f"[a2a:planner] ready on 127.0.0.1:{ports['PLANNER_PORT']}")
        await gw.logged(f"[a2a:researcher] ready on 127.0.0.1:{ports['RESEARCHER_PORT']}")
        await gw.logged("MCP server 'docs' connected")
        yield f"http://127.0.0.1:{ports['PORT']}", cfg
        gw.process.terminate()  # its audit writer drains on the way out


async def ask_planner(
    gateway: str, task: str, question: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """The user's side: the a2a-sdk client, streaming, with the demo key and a task id. (final state, the answer
    or the failure's status message)"""
    headers = {"Authorization": f"Bearer {DEMO_KEY}", "x-agentgw-task": task, **(headers or {})}
    state, answer = TaskState.TASK_STATE_UNSPECIFIED, ""
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        client = await create_client(f"{gateway}/a2a/planner", client_config=ClientConfig(httpx_client=http))
        async with client:
            request = SendMessageRequest(message=new_text_message(question, role=Role.ROLE_USER))
            async for event in client.send_message(request):
                if event.HasField("status_update"):
                    status = event.status_update.status
                    state = status.state
                    if state == TaskState.TASK_STATE_FAILED:
                        answer = get_message_text(status.message)
                elif event.HasField("artifact_update"):
                    answer += get_artifact_text(event.artifact_update.artifact)
    return state, answer


def steps(node: dict[str, Any], *operations: str) -> list[dict[str, Any]]:
    return [s for s in node["steps"] if s["operation"] in operations]


async def test_a_question_to_the_planner_is_answered_from_the_docs_and_traced_as_nested_delegations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with quickstart(tmp_path, monkeypatch) as (gateway, cfg):
        with anyio.fail_after(60):
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {DEMO_KEY}"}) as http:
                directory = (await http.get(f"{gateway}/a2a")).json()
            state, answer = await ask_planner(gateway, "trip-1", "How do budgets work?")
    assert [(a["name"], a["available"]) for a in directory["agents"]] == [
        ("planner", True),
        ("researcher", True),
    ]
    assert state == TaskState.TASK_STATE_COMPLETED, answer
    assert answer.startswith("Plan (mock-smart): Here is a plan")
    assert "Findings (researcher): From the docs page 'budgets': Every task has one token budget" in answer

    shown = await anyio.run_process([AGENTGW, "trace", "show", "trip-1", "--config", str(cfg), "--json"])
    tree = orjson.loads(shown.stdout)
    assert (tree["task_id"], tree["principal"], tree["parent_task_id"]) == ("trip-1", "demo-agent", None)
    [delegation] = steps(tree, "SendStreamingMessage")
    assert (delegation["target"], delegation["status"]) == ("a2a:planner", "ok")
    # The planner's calls, under the child task the gateway minted for its message.
    [planner] = delegation["child_tasks"]
    assert (planner["task_id"], planner["principal"], planner["parent_task_id"]) == (
        delegation["child_task_id"],
        "planner",
        "trip-1",
    )
    assert [(s["plane"], s["target"], s["status"]) for s in steps(planner, "chat", "SendMessage")] == [
        ("llm", "llm:mock-smart", "ok"),
        ("a2a", "a2a:researcher", "ok"),
    ]
    [chat, research] = steps(planner, "chat", "SendMessage")
    assert chat["usage"]["output_tokens"] > 0
    # The researcher's tool calls, one level further down.
    [researcher] = research["child_tasks"]
    assert (researcher["principal"], researcher["parent_task_id"]) == ("researcher", planner["task_id"])
    assert [s["target"] for s in steps(researcher, "tools/call")] == [
        "mcp:docs/search_docs",
        "mcp:docs/read_doc",
    ]
    # One task, one budget: the user's task paid for both agent calls and the model's tokens.
    assert tree["totals"]["output_tokens"] == chat["usage"]["output_tokens"]

    text = (
        await anyio.run_process([AGENTGW, "trace", "show", "trip-1", "--config", str(cfg)])
    ).stdout.decode()
    nested = [
        line for line in text.splitlines() if "principal planner" in line or "principal researcher" in line
    ]
    assert len(nested) == 2 and nested[0].index("task") < nested[1].index("task"), text


async def test_the_users_task_budget_bounds_the_agents_delegations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One agent call for the whole task: the user's message to the planner spends it, so the planner's own
    # delegation to the researcher (charged to the user's task too, as an ancestor) is refused.
    async with quickstart(tmp_path, monkeypatch) as (gateway, cfg):
        with anyio.fail_after(60):
            state, reason = await ask_planner(
                gateway, "tight-1", "How do budgets work?", {"x-agentgw-budget-agent-calls": "1"}
            )
    assert state == TaskState.TASK_STATE_FAILED
    assert reason.startswith("planner failed:") and "429" in reason, reason
    shown = await anyio.run_process([AGENTGW, "trace", "show", "tight-1", "--config", str(cfg), "--json"])
    [delegation] = steps(orjson.loads(shown.stdout), "SendStreamingMessage")
    [planner] = delegation["child_tasks"]
    [refused] = steps(planner, "SendMessage")
    assert (refused["target"], refused["status"], refused["error_code"]) == (
        "a2a:researcher",
        "denied",
        "budget_exhausted",
    )
    assert refused["child_tasks"] == []  # the researcher was never called


@pytest.mark.parametrize(
    ("subject", "obj", "action", "allowed"),
    [
        ("planner", "a2a:researcher", "call", True),
        ("planner", "llm:mock-smart", "call", True),
        ("planner", "a2a:planner", "call", False),  # no delegating to itself
        ("planner", "mcp:docs/read_doc", "call", False),
        ("researcher", "mcp:docs/search_docs", "call", True),
        ("researcher", "a2a:planner", "call", False),  # no calling back up the chain
        ("researcher", "llm:mock-smart", "call", False),
        ("researcher", "mcp:time/get_current_time", "call", False),
    ],
)
def test_each_demo_agents_key_reaches_only_what_its_agent_needs(
    subject: str, obj: str, action: str, allowed: bool
) -> None:
    checked = CliRunner().invoke(main, ["policy", "check", subject, obj, action, "--config", str(QUICKSTART)])
    assert (checked.exit_code == 0) is allowed, checked.stdout
