"""Drill: a replica is SIGKILLed while it serves a stream (LLM, A2A, MCP), behind HAProxy on the machine's Redis and
PostgreSQL. The client's stream breaks; it goes again through the load balancer and gets what the protocol allows
from another replica. Each drill restarts the killed replica for the next."""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import openai
import pytest
import redis
from a2a.client import ClientConfig, create_client
from a2a.helpers import new_text_message
from a2a.types import GetTaskRequest, Role, SendMessageRequest, SubscribeToTaskRequest, TaskState
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from agentgw.budget.ledger import task_key
from tests.drills.conftest import drill_cluster, restart, wait_until

KEY = "agw-demo-key"
AUTH = {"authorization": f"Bearer {KEY}"}
TASK_TTL_S = 120
LONG = " ".join(f"word{i}" for i in range(60))  # echoed one token per 100 ms: a stream of several seconds


def short_ttl(cfg: dict[str, Any], reg: dict[str, Any]) -> None:
    cfg["budgets"]["task_ttl_s"] = TASK_TTL_S


@pytest.fixture(scope="module")
def lb() -> Iterator[dict[str, Any]]:
    with drill_cluster(3, tweak=short_ttl) as info:
        yield info


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def kill(info: dict[str, Any], replica: str) -> None:
    """SIGKILL the replica HAProxy named (r1…), then bring it back for the next drill once the test is done. Its
    children (the audit writer process, the stdio MCP server) die with it (agentgw/orphans.py: PDEATHSIG)."""
    i = int(replica.removeprefix("r"))
    kids = children(info["group"].procs[i].pid)
    info["group"].stop(i, signal.SIGKILL)
    info.setdefault("killed", []).append(i)
    assert kids
    wait_until(
        lambda: not any(Path(f"/proc/{k}").exists() and not zombie(k) for k in kids), 10, "children gone"
    )


def zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rfind(")") + 2] == "Z"
    return True


@pytest.fixture(autouse=True)
def revive(lb: dict[str, Any]) -> Iterator[None]:
    yield
    for i in lb.pop("killed", []):
        restart(lb, i)


def replica_header(seen: list[str]) -> dict[str, list[Any]]:
    """httpx event hooks noting which replica served each POST (HAProxy's X-Agentgw-Replica): the calls
    themselves, not the MCP client's standing GET stream or the A2A agent card's fetch."""

    async def note(response: Any) -> None:
        ok = response.status_code < 400  # not HAProxy's own 50x
        if ok and response.request.method == "POST" and "x-agentgw-replica" in response.headers:
            seen.append(response.headers["x-agentgw-replica"])

    return {"response": [note]}


async def test_a_chat_stream_cut_by_a_killed_replica_is_retried_whole_and_its_reservation_expires_with_the_task(
    lb: dict[str, Any],
) -> None:
    task = f"drill-{uuid.uuid4().hex[:8]}"
    headers = {"x-agentgw-task": task, "x-agentgw-budget-tokens": "5000"}
    body: dict[str, Any] = {
        "model": "mock-slow",
        "messages": [{"role": "user", "content": LONG}],
        "stream": True,
    }
    async with openai.AsyncOpenAI(base_url=f"{lb['url']}/v1", api_key=KEY, max_retries=0) as client:
        with anyio.fail_after(60):
            raw = await client.chat.completions.with_raw_response.create(**body, extra_headers=headers)
            served = raw.headers["x-agentgw-replica"]
            got: list[str] = []
            cut: Exception | None = None
            try:
                async for chunk in raw.parse():
                    got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
                    if len(got) == 3:
                        await anyio.to_thread.run_sync(kill, lb, served)
            except (openai.APIError, httpx.HTTPError) as exc:  # what the SDK raises for the cut stream
                cut = exc
            raw = await client.chat.completions.with_raw_response.create(**body, extra_headers=headers)
            again = raw.headers["x-agentgw-replica"]
            text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert cut is not None and again != served
    assert text == LONG and len("".join(got)) < len(LONG)
    # The killed call's reservation was never settled nor released: it stays on the task (under-spending it,
    # never over) until the task expires, task_ttl_s after its last write (docs/budgets.md).
    r = redis.Redis.from_url(lb["redis"], decode_responses=True)
    key = f"{lb['prefix']}:task:{task_key('demo-agent', task)}"
    state = r.hgetall(key)
    open_ops = list(r.scan_iter(f"{lb['prefix']}:res:*"))
    assert int(state.get("r:tokens", 0)) > 0 and int(state["s:tokens"]) > 0
    assert 0 < r.ttl(key) <= TASK_TTL_S
    assert open_ops and all(0 < r.ttl(k) <= TASK_TTL_S for k in open_ops)


async def test_an_a2a_task_whose_stream_dies_with_its_replica_is_followed_to_the_end_through_another(
    lb: dict[str, Any],
) -> None:
    seen: list[str] = []
    async with httpx.AsyncClient(headers=AUTH, timeout=60, event_hooks=replica_header(seen)) as http:
        client = await create_client(
            f"{lb['url']}/a2a/slowpoke", client_config=ClientConfig(httpx_client=http, streaming=True)
        )
        async with client:
            task_id, streamed_by = None, ""
            cut: Exception | None = None
            with anyio.fail_after(60):
                try:
                    async for event in client.send_message(
                        SendMessageRequest(message=new_text_message("25", role=Role.ROLE_USER))
                    ):
                        if event.HasField("task") or event.HasField("status_update"):
                            task_id = event.task.id if event.HasField("task") else event.status_update.task_id
                            if not streamed_by:
                                streamed_by = seen[-1]
                                await anyio.to_thread.run_sync(kill, lb, streamed_by)
                                seen.clear()
                except Exception as exc:  # the transport's error for the cut stream, whichever it is
                    cut = exc
                assert task_id is not None
                followed = []
                async for event in client.subscribe(SubscribeToTaskRequest(id=task_id)):
                    followed.append(event)
                final = await client.get_task(GetTaskRequest(id=task_id))
    assert cut is not None
    assert seen and streamed_by not in seen  # resubscribed and read through the other replicas
    states = [e.status_update.status.state for e in followed if e.HasField("status_update")]
    assert followed and states[-1] == TaskState.TASK_STATE_COMPLETED  # the resubscription saw the end
    assert final.status.state == TaskState.TASK_STATE_COMPLETED


async def test_an_mcp_session_outlives_the_replica_that_served_it(lb: dict[str, Any]) -> None:
    seen: list[str] = []
    async with httpx2.AsyncClient(headers=AUTH, timeout=30, event_hooks=replica_header(seen)) as http:
        async with streamable_http_client(f"{lb['url']}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                before = await session.call_tool("docs__search", {"query": "budget"})
                killed = seen[-1]
                await anyio.to_thread.run_sync(kill, lb, killed)
                with anyio.fail_after(30):
                    after = [await session.call_tool("docs__search", {"query": "budget"}) for _ in range(4)]
    assert not before.is_error and not any(r.is_error for r in after)
    assert killed not in seen[-4:]  # the same session id, served by the others


async def test_an_mcp_call_cut_with_its_replica_fails_instead_of_hanging(lb: dict[str, Any]) -> None:
    seen: list[str] = []
    progressed = anyio.Event()
    errors: list[BaseException] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        progressed.set()

    took = 0.0
    async with httpx2.AsyncClient(headers=AUTH, timeout=30, event_hooks=replica_header(seen)) as http:
        async with streamable_http_client(f"{lb['url']}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()

                async def slow_call() -> None:
                    try:
                        await session.call_tool("slow__wait", {"seconds": 10}, progress_callback=on_progress)
                    except Exception as exc:  # what the client is told: that is the assertion
                        errors.append(exc)

                with anyio.fail_after(30):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(slow_call)
                        await progressed.wait()
                        await anyio.to_thread.run_sync(
                            kill, lb, seen[-1]
                        )  # the one holding the streamed call
                        killed_at = anyio.current_time()
                took = anyio.current_time() - killed_at
    print(f"the cut MCP call ended {took:.1f} s after the kill: {errors[0] if errors else 'no error'}")
    assert errors and str(errors[0])  # the shared session store tells the resuming replica the call died
