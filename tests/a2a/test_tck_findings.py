"""What the A2A TCK (conformance/a2a.sh) found in the A2A plane, each pinned with a real a2a-sdk agent behind a real
gateway: version refusals in the method's era, ErrorInfo data on A2A errors, PushNotificationNotSupported before
ownership, and task ownership that holds whichever spelling (`taskId` or `task_id`) a client uses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
from a2a.helpers import get_message_text, new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryPushNotificationConfigStore, InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Role
from starlette.applications import Starlette

from tests.support import OTHER_KEY, TEST_KEY, free_port, gateway, serve, sha

ALICE = {"A2A-Version": "1.0", "Authorization": f"Bearer {TEST_KEY}"}
BOB = {"A2A-Version": "1.0", "Authorization": f"Bearer {OTHER_KEY}"}
# Both keys may call every agent: ownership, not the policy, is what keeps one from the other's tasks.
TWO_PRINCIPALS = {
    "auth": {
        "api_keys": [
            {"subject": "alice", "roles": ["agents"], "sha256": sha(TEST_KEY)},
            {"subject": "bob", "roles": ["agents"], "sha256": sha(OTHER_KEY)},
        ]
    }
}


class Asker(AgentExecutor):
    """A first message opens a task that waits for input; the next message on that task completes it."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            await updater.requires_input(
                new_text_message(
                    "what next?", context_id=task.context_id, task_id=task.id, role=Role.ROLE_AGENT
                )
            )
            return
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.add_artifact([new_text_part(f"got: {get_message_text(context.message)}")], name="reply")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def asker_app(base: str, push: bool) -> Starlette:
    card = AgentCard(
        name="asker",
        description="Asks for more input",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=f"{base}/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=push),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="ask", name="ask", description="asks", tags=["demo"])],
    )
    handler = DefaultRequestHandler(
        agent_executor=Asker(),
        task_store=InMemoryTaskStore(),
        agent_card=card,
        push_config_store=InMemoryPushNotificationConfigStore() if push else None,
    )
    routes = [
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
        *create_rest_routes(handler, path_prefix="/rest"),
    ]
    return Starlette(routes=routes)


@contextlib.asynccontextmanager
async def through_gateway(tmp: Path, *, push: bool = False) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client of the gateway (agent `asker`) and the agent's own URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(asker_app(base, push), port=port):
        reg = {"a2a": {"agents": [{"name": "asker", "url": base}]}}
        async with gateway(tmp, reg, TWO_PRINCIPALS) as (gw, _), httpx.AsyncClient(base_url=gw) as http:
            with anyio.fail_after(30):
                yield http, base


def rpc(method: str, params: dict[str, Any], rid: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


def message(text: str, mid: str, **ids: Any) -> dict[str, Any]:
    return {"message": {"messageId": mid, "role": "ROLE_USER", "parts": [{"text": text}], **ids}}


async def alice_opens_a_task(http: httpx.AsyncClient) -> dict[str, Any]:
    r = await http.post("/a2a/asker", json=rpc("SendMessage", message("hello", "a1")), headers=ALICE)
    task: dict[str, Any] = r.json()["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    return task


async def alices_view(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    r = await http.post(
        "/a2a/asker", json=rpc("GetTask", {"id": task_id, "historyLength": 10}), headers=ALICE
    )
    result: dict[str, Any] = r.json()["result"]
    return result


def reasons(error: dict[str, Any]) -> list[Any]:
    return [d.get("reason") for d in error.get("data") or [] if isinstance(d, dict)]


# -- (a) a version refusal is answered in the era of the method it refused --------------------------------------


async def test_a_1_0_method_refused_for_its_version_is_answered_in_the_1_0_envelope(tmp_path: Path) -> None:
    async with through_gateway(tmp_path) as (http, _):
        for version in ("", "99.0"):  # empty means 0.3, whose envelope a 1.0 method's refusal must not take
            headers = {**ALICE, "A2A-Version": version}
            r = await http.post("/a2a/asker", json=rpc("SendMessage", message("v", "v1"), 7), headers=headers)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["id"] == 7 and body["error"]["code"] == -32009
            assert reasons(body["error"]) == ["VERSION_NOT_SUPPORTED"]


# -- (b) the gateway's A2A errors carry their ErrorInfo in `data`, as the agent's own do -------------------------


async def test_a_task_not_found_from_the_gateway_carries_the_same_error_info_as_the_agents_own(
    tmp_path: Path,
) -> None:
    async with through_gateway(tmp_path) as (http, agent):
        get = rpc("GetTask", {"id": "no-such-task"})
        ours = (await http.post("/a2a/asker", json=get, headers=ALICE)).json()["error"]
        async with httpx.AsyncClient() as direct:
            theirs = (await direct.post(f"{agent}/", json=get, headers={"A2A-Version": "1.0"})).json()[
                "error"
            ]
    assert ours["code"] == theirs["code"] == -32001
    assert reasons(ours) == reasons(theirs) == ["TASK_NOT_FOUND"]
    assert ours["data"][0]["domain"] == "a2a-protocol.org"


# -- (c) push operations on an agent without push: PushNotificationNotSupported, before ownership -----------------


async def test_push_operations_on_an_agent_without_push_are_not_supported_whoever_owns_the_task(
    tmp_path: Path,
) -> None:
    async with through_gateway(tmp_path, push=False) as (http, agent):
        task = await alice_opens_a_task(http)
        for who, task_id in ((ALICE, task["id"]), (BOB, task["id"]), (ALICE, "no-such-task")):
            listing = rpc("ListTaskPushNotificationConfigs", {"taskId": task_id})
            err = (await http.post("/a2a/asker", json=listing, headers=who)).json()["error"]
            assert err["code"] == -32003 and reasons(err) == ["PUSH_NOTIFICATION_NOT_SUPPORTED"]
        rest = await http.get("/a2a/asker/rest/tasks/no-such-task/pushNotificationConfigs", headers=ALICE)
        assert rest.status_code == 400
        assert rest.json()["error"]["details"][0]["reason"] == "PUSH_NOTIFICATION_NOT_SUPPORTED"
        async with httpx.AsyncClient() as direct:  # what the agent alone answers
            alone = await direct.post(f"{agent}/", json=listing, headers={"A2A-Version": "1.0"})
        assert alone.json()["error"]["code"] == -32003


# -- (d) ownership holds for the proto spellings json_format also accepts ------------------------------------------


async def test_a_message_naming_another_principals_task_as_task_id_is_refused_and_never_reaches_it(
    tmp_path: Path,
) -> None:
    async with through_gateway(tmp_path) as (http, _):
        task = await alice_opens_a_task(http)
        for i, ids in enumerate(({"task_id": task["id"]}, {"taskId": task["id"]})):
            send = rpc("SendMessage", message("bob was here", f"b{i}", **ids))
            err = (await http.post("/a2a/asker", json=send, headers=BOB)).json()["error"]
            assert err["code"] == -32001
            stream = {**send, "method": "SendStreamingMessage"}
            r = await http.post("/a2a/asker", json=stream, headers=BOB)
            assert r.json()["error"]["code"] == -32001
            rest = await http.post("/a2a/asker/rest/message:send", json=send["params"], headers=BOB)
            assert rest.status_code == 404
        seen = await alices_view(http, task["id"])
        assert seen["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
        assert "bob was here" not in str(seen.get("history"))
        # Alice may spell it either way on her own task.
        mine = rpc("SendMessage", message("go on", "a2", task_id=task["id"], context_id=task["contextId"]))
        done = (await http.post("/a2a/asker", json=mine, headers=ALICE)).json()["result"]["task"]
        assert done["id"] == task["id"] and done["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_a_message_in_another_principals_context_spelled_context_id_is_refused(tmp_path: Path) -> None:
    async with through_gateway(tmp_path) as (http, _):
        task = await alice_opens_a_task(http)
        send = rpc("SendMessage", message("bob in her context", "b1", context_id=task["contextId"]))
        err = (await http.post("/a2a/asker", json=send, headers=BOB)).json()["error"]
        assert err["code"] == -32001


async def test_referenced_tasks_must_be_the_callers_own_in_either_spelling(tmp_path: Path) -> None:
    async with through_gateway(tmp_path) as (http, _):
        task = await alice_opens_a_task(http)
        for i, key in enumerate(("referenceTaskIds", "reference_task_ids")):
            send = rpc("SendMessage", message("see hers", f"b{i}", **{key: [task["id"]]}))
            err = (await http.post("/a2a/asker", json=send, headers=BOB)).json()["error"]
            assert err["code"] == -32001
        own = rpc("SendMessage", message("see mine", "a9", reference_task_ids=[task["id"]]))
        ok = (await http.post("/a2a/asker", json=own, headers=ALICE)).json()
        assert "result" in ok, ok


async def test_push_config_operations_spelled_task_id_are_checked_for_ownership(tmp_path: Path) -> None:
    async with through_gateway(tmp_path, push=True) as (http, _):
        task = await alice_opens_a_task(http)
        listing = rpc("ListTaskPushNotificationConfigs", {"task_id": task["id"]})
        mine = (await http.post("/a2a/asker", json=listing, headers=ALICE)).json()
        assert mine["result"].get("configs", []) == []
        theirs = (await http.post("/a2a/asker", json=listing, headers=BOB)).json()["error"]
        assert theirs["code"] == -32001
        for method in ("GetTaskPushNotificationConfig", "DeleteTaskPushNotificationConfig"):
            one = rpc(method, {"task_id": task["id"], "id": "cfg"})
            err = (await http.post("/a2a/asker", json=one, headers=BOB)).json()["error"]
            assert err["code"] == -32001
        create = rpc(
            "CreateTaskPushNotificationConfig", {"task_id": task["id"], "url": "https://example.com/h"}
        )
        err = (await http.post("/a2a/asker", json=create, headers=BOB)).json()["error"]
        assert err["code"] == -32001


async def test_a_field_given_under_both_spellings_is_invalid_params(tmp_path: Path) -> None:
    async with through_gateway(tmp_path, push=True) as (http, _):
        task = await alice_opens_a_task(http)
        both = rpc("ListTaskPushNotificationConfigs", {"taskId": task["id"], "task_id": "another"}, 5)
        body = (await http.post("/a2a/asker", json=both, headers=ALICE)).json()
        assert body["id"] == 5 and body["error"]["code"] == -32602
        assert "taskId" in body["error"]["message"]
        rest = await http.post(
            "/a2a/asker/rest/message:send",
            json={
                "message": {
                    "messageId": "x",
                    "message_id": "y",
                    "role": "ROLE_USER",
                    "parts": [{"text": "t"}],
                }
            },
            headers=ALICE,
        )
        assert rest.status_code == 400


async def test_a_push_callback_set_with_a_send_is_checked_like_a_created_one(tmp_path: Path) -> None:
    async with through_gateway(tmp_path, push=True) as (http, _):
        for key in ("taskPushNotificationConfig", "task_push_notification_config"):
            params = {**message("hi", "a1"), "configuration": {key: {"url": "http://169.254.169.254/latest"}}}
            err = (await http.post("/a2a/asker", json=rpc("SendMessage", params), headers=ALICE)).json()[
                "error"
            ]
            assert err["code"] == -32602


async def test_rest_query_parameters_are_read_under_either_spelling(tmp_path: Path) -> None:
    async with through_gateway(tmp_path) as (http, _):
        task = await alice_opens_a_task(http)
        more = rpc("SendMessage", message("more", "a2", taskId=task["id"], contextId=task["contextId"]))
        assert "result" in (await http.post("/a2a/asker", json=more, headers=ALICE)).json()
        full = (await http.get(f"/a2a/asker/rest/tasks/{task['id']}", headers=ALICE)).json()
        assert len(full["history"]) > 1
        for key in ("historyLength", "history_length"):
            r = await http.get(f"/a2a/asker/rest/tasks/{task['id']}?{key}=1", headers=ALICE)
            assert r.status_code == 200, r.text
            assert len(r.json()["history"]) == 1
        bad = await http.get(f"/a2a/asker/rest/tasks/{task['id']}?history_length=many", headers=ALICE)
        assert bad.status_code == 400
