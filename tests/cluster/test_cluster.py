"""Against `make cluster` (three replicas behind HAProxy, round robin per request): calls spread over the
replicas, and what one replica starts every other continues — a task's budget, an MCP session, a Responses
conversation — while every call lands in one audit chain that verifies."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import anyio
import httpx
import openai
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_artifact_text, new_text_message
from a2a.types import GetTaskRequest, Role, SendMessageRequest, TaskState
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

URL = os.environ["AGENTGW_CLUSTER_URL"]
CONFIG = os.environ["AGENTGW_CLUSTER_CONFIG"]
KEY = "agw-demo-key"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "mock-fast", "messages": [{"role": "user", "content": "hello from the cluster"}]}


async def test_calls_are_spread_over_every_replica() -> None:
    async with httpx.AsyncClient(base_url=URL, headers=AUTH, timeout=30) as c:
        replicas = {
            (await c.post("/v1/chat/completions", json=CHAT)).headers["x-agentgw-replica"] for _ in range(9)
        }
    assert replicas == {"r1", "r2", "r3"}


async def test_a_tasks_budget_is_one_budget_whichever_replica_serves_its_calls() -> None:
    task = f"cluster-{uuid.uuid4().hex[:8]}"
    headers = {**AUTH, "x-agentgw-task": task, "x-agentgw-budget-tokens": "120"}
    left, served_by, last = [], set(), None
    async with httpx.AsyncClient(base_url=URL, headers=headers, timeout=30) as c:
        for _ in range(12):
            r = await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5})
            last = r
            if r.status_code != 200:
                break
            served_by.add(r.headers["x-agentgw-replica"])
            left.append(int(r.headers["x-agentgw-budget-remaining-tokens"]))
    assert len(served_by) >= 2
    assert left == sorted(left, reverse=True) and len(set(left)) == len(left)  # one ledger: always less left
    assert last is not None and last.status_code == 429 and last.json()["error"]["code"] == "budget_exhausted"


async def test_an_mcp_session_is_served_by_whichever_replica_gets_each_request() -> None:
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as http:
        async with streamable_http_client(f"{URL}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                results = [await session.call_tool("docs__search", {"query": "budget"}) for _ in range(6)]
    assert "docs__search" in {t.name for t in tools.tools}
    assert not any(r.is_error for r in results)  # round robin: every replica served some of them
    assert all(r.content[0].text for r in results)  # type: ignore[union-attr]


async def test_a_responses_conversation_continues_on_any_replica() -> None:
    async with openai.AsyncOpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0) as client:
        first = await client.responses.create(model="mock-fast", input="remember the cluster")
        follow_ups = [
            await client.responses.create(model="mock-fast", input="and again", previous_response_id=first.id)
            for _ in range(3)
        ]
        read = [await client.responses.retrieve(first.id) for _ in range(3)]
    assert all(r.status == "completed" for r in follow_ups)
    assert {r.output_text for r in read} == {"remember the cluster"}


async def test_an_a2a_task_is_its_callers_on_every_replica_and_nobody_elses() -> None:
    """The researcher agent answers (calling back through the load balancer); the task it made is then read
    through every replica, and another principal is told it does not exist on any of them."""
    async with httpx.AsyncClient(headers=AUTH, timeout=120) as http:
        client = await create_client(
            f"{URL}/a2a/researcher", client_config=ClientConfig(httpx_client=http, streaming=False)
        )
        async with client:
            request = SendMessageRequest(
                message=new_text_message("How do budgets work?", role=Role.ROLE_USER)
            )
            events = [e async for e in client.send_message(request)]
            [task] = [e.task for e in events if e.HasField("task")]
            again = [await client.get_task(GetTaskRequest(id=task.id)) for _ in range(3)]
    async with httpx.AsyncClient(
        headers={"authorization": "Bearer agw-demo-planner-key"}, timeout=30
    ) as http:
        other = await create_client(
            f"{URL}/a2a/researcher", client_config=ClientConfig(httpx_client=http, streaming=False)
        )
        async with other:
            for _ in range(3):
                with pytest.raises(Exception, match=r"(?i)not found"):
                    await other.get_task(GetTaskRequest(id=task.id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED and get_artifact_text(task.artifacts[0])
    assert {t.id for t in again} == {task.id}


async def test_every_replicas_calls_are_in_one_audit_chain_that_verifies() -> None:
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [str(Path(sys.executable).parent / "agentgw"), "audit", "verify", "--config", CONFIG], check=False
        )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert b"ok" in done.stdout.lower()
