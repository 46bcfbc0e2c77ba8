"""Streams through the gateway, end to end: events relayed one by one in order as the agent sends them (never
buffered), keep-alive comments on an idle stream, a client that leaves closes the agent's stream (the task goes on),
an agent that refuses before its first event answers a plain error, and a budget that runs out mid-stream ends it
with a final TASK_STATE_FAILED status marked io.agentgw/cut."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from a2a.client import Client
from a2a.types import SendMessageRequest
from a2a.utils.errors import InternalError

from tests.a2a.agents import Agent, run_agent, user_message
from tests.a2a.plane import Plane, message, rpc, run_plane, sse_data
from tests.support import audit_records

KEEPALIVE_S = 0.05
# Every task may spend 150 tokens: the caller agent's one LLM call (a 108-token prompt the mock echoes back)
# can start and spends them all.
BUDGET = {"rules": [{"task": {"tokens": 150, "agent_calls": 10}}]}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide: one gateway and its agents serve every test here


@pytest.fixture(scope="module")
async def agents_and_plane(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[dict[str, Agent], Plane]]:
    async with (
        run_agent("echo") as echo,
        run_agent("echo", "nostream", streaming=False) as nostream,
        run_agent("streamer", chunks=3) as streamer,
        run_agent("slow") as slow,
        run_agent("failing") as failing,
        run_plane(
            tmp_path_factory.mktemp("streams"),
            echo,
            nostream,
            streamer,
            slow,
            failing,
            settings={"a2a": {"keepalive_s": KEEPALIVE_S}},
        ) as p,
    ):
        yield {a.name: a for a in (echo, nostream, streamer, slow, failing)}, p


@pytest.fixture
def plane(agents_and_plane: tuple[dict[str, Agent], Plane]) -> Plane:
    return agents_and_plane[1]


@pytest.fixture
def agents(agents_and_plane: tuple[dict[str, Agent], Plane]) -> dict[str, Agent]:
    for a in agents_and_plane[0].values():
        a.reset()
    return agents_and_plane[0]


def open_stream(p: Plane, binding: str, agent: str, text: str) -> Any:
    """A streaming send on `binding` (its SSE response, as an async context manager)."""
    if binding == "jsonrpc":
        body = rpc("SendStreamingMessage", {"message": message(text)}, rid="s1")
        return p.http.stream("POST", f"/a2a/{agent}", json=body, headers=p.headers())
    return p.http.stream(
        "POST", f"/a2a/{agent}/rest/message:stream", json={"message": message(text)}, headers=p.headers()
    )


def result(frame: dict[str, Any], binding: str) -> dict[str, Any]:
    if binding == "jsonrpc":
        assert frame["id"] == "s1"
        return dict(frame["result"])
    return frame


async def next_data(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data: "):
            return dict(json.loads(line[6:]))
    raise AssertionError("the stream ended")


@pytest.mark.parametrize("binding", ["jsonrpc", "rest"])
async def test_events_arrive_in_order_as_the_agent_sends_them_not_when_it_finishes(
    plane: Plane, agents: dict[str, Agent], binding: str
) -> None:
    streamer = agents["streamer"]
    streamer.gate = anyio.Event()
    with anyio.fail_after(20):
        async with open_stream(plane, binding, "streamer", "go") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-agentgw-task"].startswith("t-")  # the task the gateway filed the stream under
            lines = r.aiter_lines()
            got = [result(await next_data(lines), binding) for _ in range(3)]
            # the agent is held after its first artifact: what arrived was relayed while it still works
            assert [next(iter(e)) for e in got] == ["task", "statusUpdate", "artifactUpdate"]
            assert not streamer.finished.is_set()
            streamer.gate.set()
            got += [result(f, binding) for f in sse_data("\n".join([line async for line in lines]))]
    kinds = [next(iter(e)) for e in got]
    assert kinds == [
        "task",
        "statusUpdate",
        "artifactUpdate",
        "artifactUpdate",
        "artifactUpdate",
        "statusUpdate",
    ]
    chunks = [e["artifactUpdate"]["artifact"]["parts"][0]["text"] for e in got if "artifactUpdate" in e]
    assert chunks == ["chunk 0", "chunk 1", "chunk 2"]
    assert got[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


@pytest.mark.parametrize("binding", ["jsonrpc", "rest"])
async def test_an_idle_stream_gets_keep_alive_comments(
    plane: Plane, agents: dict[str, Agent], binding: str
) -> None:
    with anyio.fail_after(20):
        async with open_stream(plane, binding, "slow", "idle") as r:
            lines = r.aiter_lines()
            task = result(await next_data(lines), binding)["task"]
            await agents["slow"].started.wait()
            async for line in lines:
                if line == ": keep-alive":
                    break
            else:
                raise AssertionError("no keep-alive before the stream ended")
            await plane.call("slow", "CancelTask", {"id": task["id"]})
            rest = [result(f, binding) for f in sse_data("\n".join([line async for line in lines]))]
    assert rest[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"


async def test_a_client_that_leaves_closes_the_agents_stream_and_the_task_goes_on(
    plane: Plane, agents: dict[str, Agent]
) -> None:
    slow = agents["slow"]
    with anyio.fail_after(20):
        await slow.wait_idle()  # an earlier test's stream may still be winding down
        async with open_stream(plane, "jsonrpc", "slow", "leave") as r:
            task = (await next_data(r.aiter_lines()))["result"]["task"]
            await slow.started.wait()
            assert slow.open_requests == 1  # the gateway's stream to the agent
        await slow.wait_idle()  # the client left: the gateway closed its stream to the agent
        assert not slow.cancelled.is_set()
        still = await plane.call("slow", "GetTask", {"id": task["id"]})
        assert still["status"]["state"] == "TASK_STATE_WORKING"
        body = rpc("SubscribeToTask", {"id": task["id"]})
        async with plane.http.stream("POST", "/a2a/slow", json=body, headers=plane.headers()) as again:
            lines = again.aiter_lines()
            assert (await next_data(lines))["result"]["task"]["status"]["state"] == "TASK_STATE_WORKING"
            await plane.call("slow", "CancelTask", {"id": task["id"]})
            rest = sse_data("\n".join([line async for line in lines]))
    assert rest[-1]["result"]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"


async def test_an_agent_that_refuses_before_its_first_event_answers_a_plain_jsonrpc_error(
    plane: Plane,
) -> None:
    with anyio.fail_after(20):
        done = await plane.call("echo", "SendMessage", {"message": message("done")})
        body = rpc("SubscribeToTask", {"id": done["task"]["id"]}, rid=5)
        terminal = await plane.http.post("/a2a/echo", json=body, headers=plane.headers())
        refused = await plane.http.post(
            "/a2a/nostream",
            json=rpc("SendStreamingMessage", {"message": message("x")}, rid=6),
            headers=plane.headers(),
        )
    for r, rid in ((terminal, 5), (refused, 6)):
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
        doc = r.json()
        # UnsupportedOperation: the task is terminal / the agent does not stream (its card says so)
        assert doc["id"] == rid and doc["error"]["code"] == -32004, doc


async def test_an_agent_that_refuses_before_its_first_event_answers_a_plain_rest_error(plane: Plane) -> None:
    with anyio.fail_after(20):
        done = await plane.call("echo", "SendMessage", {"message": message("done")})
        r = await plane.http.post(
            f"/a2a/echo/rest/tasks/{done['task']['id']}:subscribe", headers=plane.headers()
        )
    assert r.status_code == 400 and not r.headers["content-type"].startswith("text/event-stream")
    assert r.json()["error"]["details"][0]["reason"] == "UNSUPPORTED_OPERATION"


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_an_error_the_agent_sends_mid_stream_reaches_the_sdk_client_after_the_events_before_it(
    plane: Plane, binding: str
) -> None:
    got: list[str] = []

    async def follow(client: Client) -> None:
        async for ev in client.send_message(SendMessageRequest(message=user_message("x"))):
            got.append(str(ev.WhichOneof("payload")))

    with anyio.fail_after(20):
        async with plane.client("failing", binding=binding) as client:
            with pytest.raises(InternalError, match="the failing agent fails"):
                await follow(client)
    assert got == ["task", "status_update", "artifact_update"]


async def test_an_error_mid_stream_is_the_bindings_error_event(plane: Plane) -> None:
    with anyio.fail_after(20):
        async with open_stream(plane, "jsonrpc", "failing", "x") as r:
            frames = sse_data((await r.aread()).decode())
        async with open_stream(plane, "rest", "failing", "x") as r:
            text = (await r.aread()).decode()
    assert frames[-1]["id"] == "s1" and frames[-1]["error"]["code"] == -32603
    assert "result" in frames[-2]
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ")
    assert json.loads(last.split("data: ", 1)[1])["error"]["status"] == "INTERNAL"


async def test_a_budget_spent_by_the_agent_mid_stream_ends_it_with_a_final_failed_status(
    tmp_path: Path,
) -> None:
    """On both bindings; a gateway of its own, so its audit records can be read once it has stopped."""
    text = "spend " * 100
    got: dict[str, list[dict[str, Any]]] = {}
    async with run_agent("caller") as caller:
        with anyio.fail_after(20):
            async with run_plane(tmp_path, caller, settings={"budgets": BUDGET}) as p:
                for binding in ("jsonrpc", "rest"):
                    async with open_stream(p, binding, "caller", text) as r:
                        assert r.status_code == 200
                        got[binding] = [result(f, binding) for f in sse_data((await r.aread()).decode())]
    assert caller.calls == [
        200,
        200,
    ]  # the agent's own LLM calls went through, charged to the task it was handed
    for binding, events in got.items():
        last = events[-1]
        assert set(last) == {"statusUpdate"}, binding
        assert last["statusUpdate"]["status"]["state"] == "TASK_STATE_FAILED"
        assert last["statusUpdate"]["metadata"] == {"io.agentgw/cut": "budget_exhausted"}
        assert last["statusUpdate"]["taskId"] == events[0]["task"]["id"]
        states = [e["statusUpdate"]["status"]["state"] for e in events[:-1] if "statusUpdate" in e]
        assert "TASK_STATE_COMPLETED" not in states  # nothing after the cut
    streams = [r for r in audit_records(tmp_path) if r["operation"] == "SendStreamingMessage"]
    assert [(r["plane"], r["target"], r["stream_cut"]) for r in streams] == [
        ("a2a", "a2a:caller", "budget_exhausted"),
        ("a2a", "a2a:caller", "budget_exhausted"),
    ]
    assert {d["rule"].split(":")[0] for r in streams for d in r["decisions"] if d["outcome"] == "deny"} == {
        "stream cut"
    }


async def test_a_stream_through_a_closed_http_client_is_not_a_crash(plane: Plane) -> None:
    """The client gives up before reading anything: the gateway's stream to the agent closes with it."""
    with anyio.fail_after(20):
        async with httpx.AsyncClient(base_url=plane.url) as http:
            body = rpc("SendStreamingMessage", {"message": message("bye")})
            async with http.stream("POST", "/a2a/echo", json=body, headers=plane.headers()) as r:
                assert r.status_code == 200
        ok = await plane.call("echo", "SendMessage", {"message": message("still here")})
    assert ok["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
