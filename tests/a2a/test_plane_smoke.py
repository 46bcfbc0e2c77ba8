"""The A2A plane end to end with a real a2a-sdk echo agent behind a real gateway: the spine's own checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
from a2a.helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from starlette.applications import Starlette

from tests.support import OTHER_KEY, TEST_KEY, free_port, gateway, serve


class Echo(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        await updater.add_artifact([new_text_part(f"echo: {get_message_text(context.message)}")], name="echo")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def echo_app(base: str) -> Starlette:
    card = AgentCard(
        name="echo",
        description="Echoes text",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=f"{base}/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="echo text", tags=["demo"])],
    )
    handler = DefaultRequestHandler(agent_executor=Echo(), task_store=InMemoryTaskStore(), agent_card=card)
    routes = [
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
        *create_rest_routes(handler, path_prefix="/rest"),
    ]
    return Starlette(routes=routes)


def send(text: str, rid: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "SendMessage",
        "params": {"message": {"messageId": f"m{rid}", "role": "ROLE_USER", "parts": [{"text": text}]}},
    }


V1 = {"A2A-Version": "1.0", "Authorization": f"Bearer {TEST_KEY}"}


async def test_a_jsonrpc_send_reaches_the_agent_and_its_task_belongs_to_the_caller(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(echo_app(base), port=port):
        reg = {"a2a": {"agents": [{"name": "echo", "url": base}]}}
        async with gateway(tmp_path, reg) as (gw, _), httpx.AsyncClient(base_url=gw) as http:
            with anyio.fail_after(20):
                r = await http.post("/a2a/echo", json=send("hi"), headers=V1)
                assert r.status_code == 200, r.text
                task = r.json()["result"]["task"]
                assert task["status"]["state"] == "TASK_STATE_COMPLETED"
                assert task["artifacts"][0]["parts"][0]["text"] == "echo: hi"
                get = {"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": task["id"]}}
                mine = await http.post("/a2a/echo", json=get, headers=V1)
                assert mine.json()["result"]["id"] == task["id"]
                other = {**V1, "Authorization": f"Bearer {OTHER_KEY}"}
                theirs = await http.post("/a2a/echo", json=get, headers=other)
                # the other key may not read the agent at all: answered as an unknown agent
                assert theirs.status_code == 404
                rest = await http.get(f"/a2a/echo/rest/tasks/{task['id']}", headers=V1)
                assert rest.status_code == 200 and rest.json()["id"] == task["id"]
                card = await http.get("/a2a/echo/.well-known/agent-card.json", headers=V1)
                urls = [i["url"] for i in card.json()["supportedInterfaces"]]
                assert urls == [f"{gw}/a2a/echo", f"{gw}/a2a/echo/rest"]
                listing = await http.get("/a2a", headers=V1)
                assert [a["name"] for a in listing.json()["agents"]] == ["echo"]


async def test_a_stream_is_relayed_event_by_event(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(echo_app(base), port=port):
        reg = {"a2a": {"agents": [{"name": "echo", "url": base}]}}
        async with gateway(tmp_path, reg) as (gw, _), httpx.AsyncClient(base_url=gw) as http:
            body = {**send("yo"), "method": "SendStreamingMessage"}
            with anyio.fail_after(20):
                async with http.stream("POST", "/a2a/echo", json=body, headers=V1) as r:
                    assert r.headers["content-type"].startswith("text/event-stream")
                    lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
            kinds = [next(iter(__import__("json").loads(line[6:])["result"])) for line in lines]
            assert kinds[0] == "task" and "artifactUpdate" in kinds and kinds[-1] == "statusUpdate"


async def test_a_message_naming_its_task_in_metadata_joins_that_task_like_the_header(tmp_path: Path) -> None:
    """What the gateway hands a delegated agent (`"io.agentgw/task"` in the message metadata) is, sent back,
    the task that agent's own delegation charges; the header still wins, and the contextId is the fallback."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(echo_app(base), port=port):
        reg = {"a2a": {"agents": [{"name": "echo", "url": base}]}}
        async with gateway(tmp_path, reg) as (gw, _), httpx.AsyncClient(base_url=gw) as http:
            with anyio.fail_after(20):
                body = send("hi")
                body["params"]["message"]["metadata"] = {"io.agentgw/task": "c-handed-down"}
                by_meta = await http.post("/a2a/echo", json=body, headers=V1)
                by_header = await http.post(
                    "/a2a/echo", json=body, headers={**V1, "x-agentgw-task": "chosen-by-header"}
                )
                body["params"]["message"]["metadata"] = {"io.agentgw/task": "bad\nid"}
                body["params"]["message"]["contextId"] = "ctx-9"
                by_context = await http.post("/a2a/echo", json=body, headers=V1)
    assert by_meta.status_code == 200, by_meta.text
    assert by_meta.headers["x-agentgw-task"] == "c-handed-down"
    assert by_header.headers["x-agentgw-task"] == "chosen-by-header"
    assert by_context.headers["x-agentgw-task"] == "a2a-ctx-ctx-9"
