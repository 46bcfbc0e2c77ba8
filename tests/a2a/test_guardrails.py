"""Guardrails on the A2A plane: the a2a-sdk client (and raw HTTP, to see every streamed byte) through a real
gateway to a real a2a-sdk agent. A message is checked before the agent gets it (refused as InvalidParams carrying
the guard's code, or masked in place); a streamed artifact is checked across its chunks: a value split between
them is masked whole, and a blocked one ends the stream with a final failed status, none of it ever sent."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from a2a.helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCard, SendMessageRequest, TaskState
from a2a.utils.errors import InvalidParamsError
from starlette.applications import Starlette

from tests.a2a.agents import Agent, make_card, recording, user_message
from tests.a2a.plane import Plane, message, rpc, run_plane, sse_data
from tests.support import audit_records, free_port, serve

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
MAIL = "jane.doe@example.com"
# What the scripted agent streams for a message, as chunks of one artifact (`append` after the first). A value is
# split between chunks, so only a guard that reads the artifact as one text sees it.
SCRIPTS = {
    "leak": [
        "the deploy key is AKIAIOSF",
        "ODNN7EXAMPLE, keep it safe and out of the repo",
    ],  # then works on until cancelled
    "mail": ["write to jane.d", "oe@exam", "ple.com today"],  # the last chunk closes the artifact
    "unclosed": ["reach me at jane.d", "oe@example.com"],  # no chunk says it is the last; the task completes
}


class Scripted(AgentExecutor):
    """Echoes what it heard (`heard: <text>`) as a task that completes, or streams a script (SCRIPTS)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.heard: list[str] = []
        self.stop = anyio.Event()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        text = get_message_text(context.message)
        self.heard.append(text)
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        chunks = SCRIPTS.get(text)
        if chunks is None:
            await updater.add_artifact([new_text_part(f"heard: {text}")], name="echo")
            await updater.complete()
            return
        for n, chunk in enumerate(chunks):
            last = text == "mail" and n == len(chunks) - 1
            await updater.add_artifact(
                [new_text_part(chunk)], artifact_id="answer", name="answer", append=n > 0, last_chunk=last
            )
        if text != "leak":
            await updater.complete()
            return
        self.agent.started.set()
        await self.stop.wait()  # cancel() ends it, with the CANCELED status

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()
        self.stop.set()
        self.agent.cancelled.set()


@contextlib.asynccontextmanager
async def scripted_agent() -> AsyncIterator[tuple[Agent, Scripted]]:
    port = free_port()
    agent = Agent("echo", "scripted", f"http://127.0.0.1:{port}", AgentCard())
    agent.card = card = make_card(agent)
    executor = Scripted(agent)
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    routes = [
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, rpc_url="/"),
        *create_rest_routes(handler, path_prefix="/rest"),
    ]
    async with serve(recording(Starlette(routes=routes), agent), port=port, graceful_s=0.5):
        try:
            yield agent, executor
        finally:
            executor.stop.set()
            await handler.aclose()


def guardrails(**guards: dict[str, Any]) -> dict[str, Any]:
    """One rule on the A2A plane for each guard given (name: {action, direction}), both ways unless told."""
    specs = {name: {k: v for k, v in g.items() if k != "direction"} for name, g in guards.items()}
    rules = [
        {"guards": [name], "planes": ["a2a"], "direction": g.get("direction", "both")}
        for name, g in guards.items()
    ]
    return {"guardrails": {"guards": specs, "rules": rules}}


SECRETS = {"action": "block"}
MASK = {"action": "mask", "entities": ["email"]}


RAW = {"JSONRPC": "jsonrpc", "HTTP+JSON": "rest"}  # the SDK's binding names → stream_request's


def guard_decisions(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in record["decisions"] if d["stage"] == "guard"]


def stream_request(p: Plane, binding: str, text: str) -> Any:
    if binding == "jsonrpc":
        body = rpc("SendStreamingMessage", {"message": message(text)}, rid="s1")
        return p.http.stream("POST", "/a2a/scripted", json=body, headers=p.headers())
    return p.http.stream(
        "POST", "/a2a/scripted/rest/message:stream", json={"message": message(text)}, headers=p.headers()
    )


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_a_secret_in_a_message_is_refused_with_an_a2a_error_carrying_its_code(
    tmp_path: Path, binding: str
) -> None:
    with anyio.fail_after(30):
        async with (
            scripted_agent() as (agent, executor),
            run_plane(tmp_path, agent, settings=guardrails(secrets=SECRETS)) as p,
        ):
            async with p.client("scripted", binding=binding, streaming=False) as client:
                request = SendMessageRequest(message=user_message(f"deploy with {AWS_KEY}"))
                with pytest.raises(InvalidParamsError) as refused:
                    [_ async for _ in client.send_message(request)]
                [ok] = [e async for e in client.send_message(SendMessageRequest(message=user_message("hi")))]
            raw = await p.http.post(
                "/a2a/scripted",
                json=rpc("SendMessage", {"message": message(f"again {AWS_KEY}")}),
                headers=p.headers(),
            )
    assert refused.value.data == {"code": "sensitive_data"}
    assert AWS_KEY not in str(refused.value)
    # JSON-RPC: as the a2a-sdk answers InvalidParams (HTTP 200, the ErrorInfo list), the code in its metadata
    assert raw.status_code == 200
    error = raw.json()["error"]
    assert error["code"] == -32602
    assert error["data"][0]["reason"] == "INVALID_PARAMS"
    assert error["data"][0]["metadata"] == {"code": "sensitive_data"}
    assert executor.heard == ["hi"]  # the refused messages never reached the agent
    assert ok.task.status.state == TaskState.TASK_STATE_COMPLETED
    denied = [r for r in audit_records(tmp_path) if r["status"] == "denied"]
    assert len(denied) == 2 and all(r["operation"] == "SendMessage" for r in denied)
    [decision] = guard_decisions(denied[0])
    assert (decision["rule"], decision["detail"]) == ("guard:secrets", "request block: aws_access_key×1")
    assert AWS_KEY not in json.dumps(audit_records(tmp_path))


@pytest.mark.parametrize("streaming", [False, True])
async def test_an_email_in_a_message_reaches_the_agent_masked(tmp_path: Path, streaming: bool) -> None:
    with anyio.fail_after(30):
        async with (
            scripted_agent() as (agent, executor),
            run_plane(
                tmp_path, agent, settings=guardrails(**{"sensitive-data": {**MASK, "direction": "request"}})
            ) as p,
        ):
            async with p.client("scripted", streaming=streaming) as client:
                request = SendMessageRequest(message=user_message(f"write to {MAIL} and {MAIL}"))
                events = [e async for e in client.send_message(request)]
    assert executor.heard == ["write to <EMAIL_1> and <EMAIL_1>"]
    last = events[-1]
    task = last.task if last.HasField("task") else None
    if task is not None:  # the unary answer: the task with the agent's artifact
        assert task.artifacts[0].parts[0].text == "heard: write to <EMAIL_1> and <EMAIL_1>"
    else:
        assert last.status_update.status.state == TaskState.TASK_STATE_COMPLETED
    record = next(r for r in audit_records(tmp_path) if r["operation"].startswith("Send"))
    [decision] = guard_decisions(record)
    assert (decision["outcome"], decision["detail"]) == ("info", "request mask: email×2")
    assert MAIL not in json.dumps(audit_records(tmp_path))


@pytest.mark.parametrize("binding", ["jsonrpc", "rest"])
async def test_a_streamed_artifact_with_a_secret_is_cut_with_a_failed_status_and_none_of_it_is_sent(
    tmp_path: Path, binding: str
) -> None:
    with anyio.fail_after(30):
        async with (
            scripted_agent() as (agent, _),
            run_plane(tmp_path, agent, settings=guardrails(secrets=SECRETS)) as p,
        ):
            async with stream_request(p, binding, "leak") as r:
                assert r.status_code == 200
                raw = await r.aread()
            await agent.cancelled.wait()  # the gateway cancelled the agent's task
            frames = sse_data(raw.decode())
            events = [f["result"] if binding == "jsonrpc" else f for f in frames]
            # the task cannot be read back with the secret in it either
            task_id = events[0]["task"]["id"]
            got = await p.http.post(
                "/a2a/scripted", json=rpc("GetTask", {"id": task_id}), headers=p.headers()
            )
    for piece in (AWS_KEY, "AKIAIOSF", "ODNN7EXAMPLE", "keep it safe"):
        assert piece.encode() not in raw
    last = events[-1]["statusUpdate"]
    assert last["status"]["state"] == "TASK_STATE_FAILED"
    assert last["metadata"] == {"io.agentgw/cut": "sensitive_data"}
    assert "sensitive_data" in last["status"]["message"]["parts"][0]["text"]
    assert last["taskId"] == task_id
    assert "error" in got.json(), got.text
    assert got.json()["error"]["data"][0]["metadata"] == {"code": "sensitive_data"}
    assert AWS_KEY.encode() not in got.content
    record = next(r for r in audit_records(tmp_path) if r["operation"] == "SendStreamingMessage")
    assert record["stream_cut"] == "content_filter"
    [decision] = guard_decisions(record)
    assert (decision["outcome"], decision["rule"]) == ("deny", "guard:secrets")
    assert decision["detail"] == "response block: aws_access_key×1"


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_an_email_split_across_streamed_artifact_chunks_arrives_masked_whole(
    tmp_path: Path, binding: str
) -> None:
    with anyio.fail_after(30):
        async with (
            scripted_agent() as (agent, _),
            run_plane(tmp_path, agent, settings=guardrails(**{"sensitive-data": MASK})) as p,
        ):
            async with p.client("scripted", binding=binding) as client:
                events = [
                    e async for e in client.send_message(SendMessageRequest(message=user_message("mail")))
                ]
            async with stream_request(p, RAW[binding], "mail") as r:
                raw = await r.aread()
    chunks = [e.artifact_update for e in events if e.HasField("artifact_update")]
    pieces = [part.text for c in chunks for part in c.artifact.parts]
    assert "".join(pieces) == "write to <EMAIL_1> today"
    assert all(c.artifact.artifact_id == "answer" for c in chunks) and chunks[-1].last_chunk
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    for piece in ("jane", "oe@exam", "ple.com", MAIL):
        assert piece.encode() not in raw
    assert b"<EMAIL_1>" in raw


async def test_an_artifact_the_agent_leaves_open_is_sent_whole_before_the_task_completes(
    tmp_path: Path,
) -> None:
    """No chunk said it was the last: what the window held back goes out as a closing chunk of the same artifact,
    before the status update that ends the stream."""
    with anyio.fail_after(30):
        async with (
            scripted_agent() as (agent, _),
            run_plane(tmp_path, agent, settings=guardrails(**{"sensitive-data": MASK})) as p,
        ):
            async with stream_request(p, "jsonrpc", "unclosed") as r:
                raw = await r.aread()
    events = [f["result"] for f in sse_data(raw.decode())]
    kinds = [next(iter(e)) for e in events]
    assert kinds == [
        "task",
        "statusUpdate",
        "artifactUpdate",
        "artifactUpdate",
        "artifactUpdate",
        "statusUpdate",
    ]
    updates = [e["artifactUpdate"] for e in events if "artifactUpdate" in e]
    assert "".join(p["text"] for u in updates for p in u["artifact"]["parts"]) == "reach me at <EMAIL_1>"
    closing = updates[-1]
    assert (closing["append"], closing["lastChunk"], closing["artifact"]["artifactId"]) == (
        True,
        True,
        "answer",
    )
    assert closing["taskId"] == events[0]["task"]["id"]
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert b"jane" not in raw and b"example.com" not in raw
