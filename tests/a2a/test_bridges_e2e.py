"""The 0.3 bridge through a real gateway: 0.3 clients (raw httpx JSON-RPC, the a2a-sdk's 0.3 transport) in front of
a 1.0 a2a-sdk agent, and a 1.0 a2a-sdk client in front of an a2a-sdk agent that speaks only 0.3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
from a2a.client import ClientConfig, create_client
from a2a.compat.v0_3.jsonrpc_transport import CompatJsonRpcTransport
from a2a.helpers import get_artifact_text, new_text_message
from a2a.types import (
    CancelTaskRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    TaskPushNotificationConfig,
    TaskState,
)

from tests.a2a.echo_agent import legacy_echo_app, legacy_rest_app, modern_echo_app
from tests.a2a.test_plane_smoke import echo_app
from tests.support import TEST_KEY, free_port, gateway, serve

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def rpc(method: str, params: dict[str, Any], rid: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


def message03(text: str, mid: str = "m1") -> dict[str, Any]:
    return {"kind": "message", "messageId": mid, "role": "user", "parts": [{"kind": "text", "text": text}]}


async def test_a_0_3_client_reaches_a_1_0_agent(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(echo_app(base), port=port):
        reg = {"a2a": {"agents": [{"name": "echo", "url": base}]}}
        async with gateway(tmp_path, reg) as (gw, _), httpx.AsyncClient(base_url=gw, headers=AUTH) as http:
            with anyio.fail_after(20):
                r = await http.post("/a2a/echo", json=rpc("message/send", {"message": message03("hi")}))
                assert r.status_code == 200, r.text
                task = r.json()["result"]
                assert task["kind"] == "task" and task["status"]["state"] == "completed"
                assert task["artifacts"][0]["parts"] == [{"kind": "text", "text": "echo: hi"}]
                assert task["history"][0]["role"] == "user"
                got = await http.post(
                    "/a2a/echo", json=rpc("tasks/get", {"id": task["id"], "historyLength": 1}, 2)
                )
                assert got.json()["result"]["id"] == task["id"]
                assert got.json()["result"]["kind"] == "task"
                assert len(got.json()["result"]["history"]) == 1
                missing = await http.post("/a2a/echo", json=rpc("tasks/get", {"id": "no-such-task"}, 3))
                assert missing.json()["error"]["code"] == -32001
                cancel = await http.post("/a2a/echo", json=rpc("tasks/cancel", {"id": task["id"]}, 4))
                assert cancel.json()["error"]["code"] == -32002  # completed: not cancelable


async def test_a_0_3_client_streams_from_a_1_0_agent_with_a_final_status(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(echo_app(base), port=port):
        reg = {"a2a": {"agents": [{"name": "echo", "url": base}]}}
        async with gateway(tmp_path, reg) as (gw, _), httpx.AsyncClient(base_url=gw, headers=AUTH) as http:
            body = rpc("message/stream", {"message": message03("yo")})
            with anyio.fail_after(20):
                async with http.stream("POST", "/a2a/echo", json=body) as r:
                    assert r.headers["content-type"].startswith("text/event-stream")
                    lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
            events = [json.loads(line[6:])["result"] for line in lines]
            kinds = [e["kind"] for e in events]
            assert kinds[0] == "task" and "artifact-update" in kinds and kinds[-1] == "status-update"
            statuses = [e for e in events if e["kind"] == "status-update"]
            assert [s["final"] for s in statuses] == [False] * (len(statuses) - 1) + [True]
            assert statuses[-1]["status"]["state"] == "completed"
            art = next(e for e in events if e["kind"] == "artifact-update")
            assert art["artifact"]["parts"][0] == {"kind": "text", "text": "echo: yo"}


async def test_a_0_3_client_gets_clean_errors_for_bad_params_and_gateway_refusals(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(echo_app(base), port=port):
        reg = {"a2a": {"agents": [{"name": "echo", "url": base}]}}
        async with gateway(tmp_path, reg) as (gw, _), httpx.AsyncClient(base_url=gw, headers=AUTH) as http:
            with anyio.fail_after(20):
                bad = await http.post("/a2a/echo", json=rpc("message/send", {"message": {"role": "robot"}}))
                assert bad.status_code == 200
                assert bad.json()["error"]["code"] == -32602 and "messageId" in bad.json()["error"]["message"]
                nobody = await http.post("/a2a/nobody", json=rpc("tasks/get", {"id": "x"}))
                # the gateway's own code is kept for a 0.3 client (JSON-RPC server-error range), HTTP status too
                assert nobody.status_code == 404 and nobody.json()["error"]["code"] == -32015


async def test_the_sdk_0_3_transport_sends_gets_and_streams_through_the_gateway(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(echo_app(base), port=port):
        reg = {"a2a": {"agents": [{"name": "echo", "url": base}]}}
        async with gateway(tmp_path, reg) as (gw, _), httpx.AsyncClient(headers=AUTH) as http:
            transport = CompatJsonRpcTransport(http, None, f"{gw}/a2a/echo", is_shared_httpx=True)
            msg = new_text_message("compat", role=Role.ROLE_USER)
            with anyio.fail_after(20):
                sent = await transport.send_message(SendMessageRequest(message=msg))
                assert sent.task.status.state == TaskState.TASK_STATE_COMPLETED
                assert get_artifact_text(sent.task.artifacts[0]) == "echo: compat"
                task = await transport.get_task(GetTaskRequest(id=sent.task.id))
                assert task.id == sent.task.id
                msg2 = new_text_message("again", role=Role.ROLE_USER)
                events = [e async for e in transport.send_message_streaming(SendMessageRequest(message=msg2))]
            last = events[-1]
            assert last.WhichOneof("payload") == "status_update"
            assert last.status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_a_1_0_client_reaches_a_0_3_only_agent(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    agent = legacy_echo_app(base)
    async with serve(agent, port=port):
        reg = {"a2a": {"agents": [{"name": "legacy", "url": base}]}}
        settings = {"a2a": {"push": {"allow": ["127.0.0.1"]}}}
        async with (
            gateway(tmp_path, reg, settings) as (gw, _),
            httpx.AsyncClient(headers=AUTH, timeout=20) as http,
        ):
            config = ClientConfig(streaming=False, httpx_client=http, supported_protocol_bindings=["JSONRPC"])
            with anyio.fail_after(30):
                client = await create_client(f"{gw}/a2a/legacy", client_config=config)
                async with client:
                    msg = new_text_message("hello", role=Role.ROLE_USER)
                    out = [r async for r in client.send_message(SendMessageRequest(message=msg))]
                    task = out[-1].task
                    assert task.status.state == TaskState.TASK_STATE_COMPLETED
                    assert get_artifact_text(task.artifacts[0]) == "echo: hello"
                    got = await client.get_task(GetTaskRequest(id=task.id, history_length=1))
                    assert got.id == task.id and len(got.history) == 1

                    hold = new_text_message("hold", role=Role.ROLE_USER)
                    held = [r async for r in client.send_message(SendMessageRequest(message=hold))][-1].task
                    assert held.status.state == TaskState.TASK_STATE_WORKING
                    hook = TaskPushNotificationConfig(task_id=held.id, id="hook1", url="http://127.0.0.1:9/h")
                    made = await client.create_task_push_notification_config(hook)
                    assert made.url == "http://127.0.0.1:9/h" and made.task_id == held.id
                    read = await client.get_task_push_notification_config(
                        GetTaskPushNotificationConfigRequest(task_id=held.id, id="hook1")
                    )
                    assert read.id == "hook1" and read.url == hook.url
                    cancelled = await client.cancel_task(CancelTaskRequest(id=held.id))
                    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert "message/send" in agent.seen and "tasks/cancel" in agent.seen
    assert (
        "tasks/pushNotificationConfig/set" in agent.seen and "tasks/pushNotificationConfig/get" in agent.seen
    )


async def test_a_1_0_client_streams_from_a_0_3_only_agent_in_order(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    agent = legacy_echo_app(base)
    async with serve(agent, port=port):
        reg = {"a2a": {"agents": [{"name": "legacy", "url": base}]}}
        async with gateway(tmp_path, reg) as (gw, _), httpx.AsyncClient(headers=AUTH, timeout=20) as http:
            config = ClientConfig(streaming=True, httpx_client=http, supported_protocol_bindings=["JSONRPC"])
            with anyio.fail_after(30):
                client = await create_client(f"{gw}/a2a/legacy", client_config=config)
                async with client:
                    msg = new_text_message("streamed", role=Role.ROLE_USER)
                    req = SendMessageRequest(message=msg, configuration=SendMessageConfiguration())
                    events = [r async for r in client.send_message(req)]
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task" and "artifact_update" in kinds and kinds[-1] == "status_update"
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    art = next(e for e in events if e.WhichOneof("payload") == "artifact_update")
    assert get_artifact_text(art.artifact_update.artifact) == "echo: streamed"
    assert agent.seen == ["message/stream"]


async def test_the_0_3_only_agent_refuses_1_0_so_the_gateway_must_translate(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(legacy_echo_app(base), port=port), httpx.AsyncClient(base_url=base) as http:
        body = rpc(
            "SendMessage", {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]}}
        )
        r = await http.post("/", json=body, headers={"A2A-Version": "1.0"})
        assert r.json()["error"]["code"] == -32601


async def test_a_1_0_client_reaches_a_0_3_agent_over_its_http_json_binding(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    agent = legacy_rest_app(base)
    async with serve(agent, port=port):
        reg = {"a2a": {"agents": [{"name": "legacy", "url": base}]}}
        settings = {"a2a": {"push": {"allow": ["127.0.0.1"]}}}
        async with (
            gateway(tmp_path, reg, settings) as (gw, _),
            httpx.AsyncClient(headers=AUTH, timeout=20) as http,
        ):
            with anyio.fail_after(30):
                client = await create_client(
                    f"{gw}/a2a/legacy",
                    client_config=ClientConfig(
                        streaming=False, httpx_client=http, supported_protocol_bindings=["JSONRPC"]
                    ),
                )
                async with client:
                    msg = new_text_message("rest", role=Role.ROLE_USER)
                    task = [r async for r in client.send_message(SendMessageRequest(message=msg))][-1].task
                    assert task.status.state == TaskState.TASK_STATE_COMPLETED
                    assert get_artifact_text(task.artifacts[0]) == "echo: rest"
                    got = await client.get_task(GetTaskRequest(id=task.id, history_length=1))
                    assert got.id == task.id and len(got.history) == 1
                    hold = new_text_message("hold", role=Role.ROLE_USER)
                    held = [r async for r in client.send_message(SendMessageRequest(message=hold))][-1].task
                    hook = TaskPushNotificationConfig(task_id=held.id, id="hook1", url="http://127.0.0.1:9/h")
                    made = await client.create_task_push_notification_config(hook)
                    assert made.url == hook.url
                    read = await client.get_task_push_notification_config(
                        GetTaskPushNotificationConfigRequest(task_id=held.id, id="hook1")
                    )
                    assert read.id == "hook1"
                    cancelled = await client.cancel_task(CancelTaskRequest(id=held.id))
                    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
                    missing = await http.post(
                        f"{gw}/a2a/legacy",
                        json=rpc("GetTask", {"id": "no-such-task"}),
                        headers={"A2A-Version": "1.0"},
                    )
                    assert missing.json()["error"]["code"] == -32001
                streaming = await create_client(
                    f"{gw}/a2a/legacy",
                    client_config=ClientConfig(
                        streaming=True, httpx_client=http, supported_protocol_bindings=["JSONRPC"]
                    ),
                )
                async with streaming:
                    msg = new_text_message("flow", role=Role.ROLE_USER)
                    events = [r async for r in streaming.send_message(SendMessageRequest(message=msg))]
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert any(e.WhichOneof("payload") == "artifact_update" for e in events)
    assert "POST /v1/message:send" in agent.seen and "POST /v1/message:stream" in agent.seen
    assert f"POST /v1/tasks/{held.id}:cancel" in agent.seen
    assert f"GET /v1/tasks/{held.id}/pushNotificationConfigs/hook1" in agent.seen


async def test_a_0_3_client_manages_push_configs_resubscribes_and_reads_the_extended_card(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(modern_echo_app(base), port=port):
        reg = {"a2a": {"agents": [{"name": "modern", "url": base}]}}
        settings = {"a2a": {"push": {"allow": ["127.0.0.1"]}}}
        async with (
            gateway(tmp_path, reg, settings) as (gw, _),
            httpx.AsyncClient(base_url=gw, headers=AUTH) as http,
        ):
            with anyio.fail_after(30):
                held = await http.post(
                    "/a2a/modern", json=rpc("message/send", {"message": message03("hold")})
                )
                task = held.json()["result"]
                assert task["status"]["state"] == "working"
                cfg = {"id": "hook1", "url": "http://127.0.0.1:9/h", "token": "tok"}
                made = await http.post(
                    "/a2a/modern",
                    json=rpc(
                        "tasks/pushNotificationConfig/set",
                        {"taskId": task["id"], "pushNotificationConfig": cfg},
                    ),
                )
                assert made.json()["result"] == {"taskId": task["id"], "pushNotificationConfig": cfg}
                get_params = {"id": task["id"], "pushNotificationConfigId": "hook1"}
                read = await http.post(
                    "/a2a/modern", json=rpc("tasks/pushNotificationConfig/get", get_params)
                )
                assert read.json()["result"]["pushNotificationConfig"]["url"] == cfg["url"]
                listed = await http.post(
                    "/a2a/modern", json=rpc("tasks/pushNotificationConfig/list", {"id": task["id"]})
                )
                assert [c["pushNotificationConfig"]["id"] for c in listed.json()["result"]] == ["hook1"]
                gone = await http.post(
                    "/a2a/modern", json=rpc("tasks/pushNotificationConfig/delete", get_params)
                )
                assert "error" not in gone.json() and gone.json()["result"] is None

                sub = rpc("tasks/resubscribe", {"id": task["id"]})
                async with http.stream("POST", "/a2a/modern", json=sub) as r:
                    assert r.headers["content-type"].startswith("text/event-stream")
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            first = json.loads(line[6:])["result"]
                            break
                assert first["kind"] == "task" and first["id"] == task["id"]
                cancelled = await http.post("/a2a/modern", json=rpc("tasks/cancel", {"id": task["id"]}))
                assert cancelled.json()["result"]["status"]["state"] == "canceled"

                card = await http.post("/a2a/modern", json=rpc("agent/getAuthenticatedExtendedCard", {}))
                c = card.json()["result"]
                assert c["url"] == f"{gw}/a2a/modern" and c["preferredTransport"] == "JSONRPC"
                assert c["protocolVersion"] == "0.3" and "secret" in [s["id"] for s in c["skills"]]


async def test_an_untranslatable_0_3_answer_is_a_clean_error_not_a_500(tmp_path: Path) -> None:
    from a2a.server.routes import create_agent_card_routes
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.a2a.echo_agent import card

    async def broken(request: Request) -> JSONResponse:
        doc = await request.json()
        return JSONResponse({"jsonrpc": "2.0", "id": doc["id"], "result": {"kind": "banana"}})

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = Starlette(routes=[*create_agent_card_routes(card(base)), Route("/", broken, methods=["POST"])])
    async with serve(app, port=port):
        reg = {"a2a": {"agents": [{"name": "legacy", "url": base}]}}
        async with gateway(tmp_path, reg) as (gw, _), httpx.AsyncClient(base_url=gw, headers=AUTH) as http:
            v1 = {"A2A-Version": "1.0"}
            with anyio.fail_after(20):
                sent = await http.post(
                    "/a2a/legacy",
                    json=rpc(
                        "SendMessage",
                        {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]}},
                    ),
                    headers=v1,
                )
                assert sent.status_code == 200 and sent.json()["error"]["code"] == -32006
                listing = await http.post("/a2a/legacy", json=rpc("ListTasks", {}), headers=v1)
                assert listing.json()["error"]["code"] == -32004
                bad = await http.post("/a2a/legacy", json=rpc("GetTask", {"id": 5}), headers=v1)
                assert bad.status_code == 200 and bad.json()["error"]["code"] == -32602
