"""The A2A 0.3 HTTP+JSON binding at the front door (`/a2a/{agent}/rest/v1/...`), end to end: the a2a-sdk's own 0.3
REST client transport and raw httpx through a real gateway, in front of a 1.0 agent and of agents that speak only
0.3 (JSON-RPC or HTTP+JSON); errors in the 0.3 REST envelope with the binding's status, never a 500."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from a2a.client.errors import A2AClientError
from a2a.compat.v0_3 import types as types_v03
from a2a.compat.v0_3.rest_transport import CompatRestTransport
from a2a.helpers import get_artifact_text
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import MethodNotFoundError, TaskNotFoundError

from tests.a2a.agents import Agent, run_agent, user_message
from tests.a2a.echo_agent import legacy_echo_app, legacy_rest_app, modern_echo_app
from tests.a2a.plane import KEYS, Plane, run_plane, sse_data
from tests.a2a.sdk_calls import PUBLIC_HOOK
from tests.support import audit_records, free_port, serve

ECHOES = ["modern", "legacy", "legacyrest"]  # a 1.0 agent; 0.3-only over JSON-RPC; 0.3-only over HTTP+JSON
V03 = {"A2A-Version": "0.3"}
# The SDK's 0.3 REST client always sends a `configuration`, whose protobuf `blocking` defaults to false: it sends
# `blocking: true` only for an explicit configuration (return_immediately false), else the send answers at once.
WAIT = SendMessageConfiguration()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide: one gateway and its agents serve every test here


@contextlib.asynccontextmanager
async def served(name: str, make: Any) -> AsyncIterator[Agent]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(make(base), port=port, graceful_s=0.5):
        yield Agent("echo", name, base, AgentCard())


@pytest.fixture(scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    async with (
        served("modern", modern_echo_app) as modern,
        served("legacy", legacy_echo_app) as legacy,
        served("legacyrest", legacy_rest_app) as legacyrest,
        run_agent("slow") as slow,
        run_agent("failing") as failing,
        run_plane(tmp_path_factory.mktemp("rest03"), modern, legacy, legacyrest, slow, failing) as p,
    ):
        yield p


@contextlib.asynccontextmanager
async def rest03(p: Plane, agent: str, who: str = "alice") -> AsyncIterator[CompatRestTransport]:
    """The a2a-sdk's 0.3 REST client transport at the agent's REST URL on the gateway (it appends `/v1/...`)."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEYS[who]}"}, timeout=20) as http:
        yield CompatRestTransport(http, None, f"{p.url}/a2a/{agent}/rest")


def auth(who: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}", **V03}


def message03(text: str, mid: str = "m1") -> dict[str, Any]:
    """A 0.3 user message in the 0.3 protobuf JSON (what a 0.3 REST client sends)."""
    return {"messageId": mid, "role": "ROLE_USER", "content": [{"text": text}]}


def kinds(events: list[StreamResponse]) -> list[str]:
    return [str(e.WhichOneof("payload")) for e in events]


@pytest.mark.parametrize("agent", ECHOES)
async def test_the_0_3_rest_client_sends_streams_and_gets_through_the_gateway(
    plane: Plane, agent: str
) -> None:
    with anyio.fail_after(20):
        async with rest03(plane, agent) as t:
            sent = await t.send_message(SendMessageRequest(message=user_message("hi"), configuration=WAIT))
            assert sent.task.status.state == TaskState.TASK_STATE_COMPLETED
            assert get_artifact_text(sent.task.artifacts[0]) == "echo: hi"
            got = await t.get_task(GetTaskRequest(id=sent.task.id, history_length=1))
            assert got.id == sent.task.id and len(got.history) == 1
            events = [
                e async for e in t.send_message_streaming(SendMessageRequest(message=user_message("yo")))
            ]
    assert kinds(events)[0] == "task" and "artifact_update" in kinds(events)
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    art = next(e for e in events if e.WhichOneof("payload") == "artifact_update")
    assert get_artifact_text(art.artifact_update.artifact) == "echo: yo"


@pytest.mark.parametrize("agent", ECHOES)
async def test_a_raw_0_3_stream_is_sse_of_0_3_stream_responses_ending_with_a_final_status(
    plane: Plane, agent: str
) -> None:
    body = {"request": message03("raw")}
    with anyio.fail_after(20):
        async with plane.http.stream(
            "POST", f"/a2a/{agent}/rest/v1/message:stream", json=body, headers=auth()
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse_data((await r.aread()).decode())
    assert list(events[0]) == ["task"] and events[0]["task"]["status"]["state"] in (
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
    )
    assert any("artifactUpdate" in e for e in events)
    last = events[-1]["statusUpdate"]
    assert last["final"] is True and last["status"]["state"] == "TASK_STATE_COMPLETED"
    assert all(not e.get("statusUpdate", {}).get("final") for e in events[:-1])


@pytest.mark.parametrize("agent", ECHOES)
async def test_the_0_3_rest_client_cancels_a_working_task(plane: Plane, agent: str) -> None:
    with anyio.fail_after(20):
        async with rest03(plane, agent) as t:
            held = await t.send_message(SendMessageRequest(message=user_message("hold"), configuration=WAIT))
            assert held.task.status.state == TaskState.TASK_STATE_WORKING
            cancelled = await t.cancel_task(CancelTaskRequest(id=held.task.id))
    assert cancelled.id == held.task.id and cancelled.status.state == TaskState.TASK_STATE_CANCELED


async def test_the_0_3_rest_client_subscribes_to_a_task_and_sees_it_cancelled(plane: Plane) -> None:
    config = SendMessageConfiguration(return_immediately=True)
    with anyio.fail_after(20):
        async with rest03(plane, "slow") as t:
            started = await t.send_message(
                SendMessageRequest(message=user_message("work"), configuration=config)
            )
            tid = started.task.id
            seen: list[StreamResponse] = []
            subscribed = anyio.Event()

            async def follow() -> None:
                async for ev in t.subscribe(SubscribeToTaskRequest(id=tid)):
                    seen.append(ev)
                    subscribed.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await subscribed.wait()
                cancelled = await t.cancel_task(CancelTaskRequest(id=tid))
                assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert seen[0].task.id == tid
    assert seen[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED


async def test_subscribe_answers_get_as_well_as_post(plane: Plane) -> None:
    with anyio.fail_after(20):
        async with rest03(plane, "modern") as t:
            done = await t.send_message(SendMessageRequest(message=user_message("hi"), configuration=WAIT))
        # a finished task: the SDK's agent refuses to subscribe to it (UnsupportedOperation), on either verb
        for verb in ("GET", "POST"):
            r = await plane.http.request(
                verb, f"/a2a/modern/rest/v1/tasks/{done.task.id}:subscribe", headers=auth()
            )
            assert r.status_code == 400, r.text
            assert r.json()["type"] == "UnsupportedOperationError"


@pytest.mark.parametrize("agent", ECHOES)
async def test_push_configs_are_set_read_listed_and_deleted_over_0_3_rest(plane: Plane, agent: str) -> None:
    with anyio.fail_after(20):
        async with rest03(plane, agent) as t:
            held = await t.send_message(SendMessageRequest(message=user_message("hold"), configuration=WAIT))
            tid = held.task.id
            made = await t.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id=tid, id="hook-1", url=PUBLIC_HOOK, token="tok")
            )
            assert (made.task_id, made.id, made.url) == (tid, "hook-1", PUBLIC_HOOK)
            got = await t.get_task_push_notification_config(
                GetTaskPushNotificationConfigRequest(task_id=tid, id="hook-1")
            )
            assert got.url == PUBLIC_HOOK and got.token == "tok"
        base = f"/a2a/{agent}/rest/v1/tasks/{tid}/pushNotificationConfigs"
        listed = await plane.http.get(base, headers=auth())
        assert listed.status_code == 200, listed.text
        [cfg] = listed.json()["configs"]
        assert cfg["name"] == f"tasks/{tid}/pushNotificationConfigs/hook-1"
        assert cfg["pushNotificationConfig"]["url"] == PUBLIC_HOOK
        gone = await plane.http.delete(f"{base}/hook-1", headers=auth())
        if (
            agent == "legacyrest"
        ):  # the a2a-sdk's 0.3 REST server has no DELETE route: the agent's 404, relayed
            assert gone.status_code == 404 and gone.json()["type"] == "TaskNotFoundError", gone.text
            return
        assert gone.status_code == 200 and gone.json() == {}, gone.text
        after = await plane.http.get(base, headers=auth())
        assert after.json().get("configs", []) == []


async def test_a_push_config_named_by_config_id_alone_is_created(plane: Plane) -> None:
    with anyio.fail_after(20):
        async with rest03(plane, "modern") as t:
            tid = (
                await t.send_message(SendMessageRequest(message=user_message("hold"), configuration=WAIT))
            ).task.id
        body = {"configId": "by-id", "config": {"pushNotificationConfig": {"url": PUBLIC_HOOK}}}
        r = await plane.http.post(
            f"/a2a/modern/rest/v1/tasks/{tid}/pushNotificationConfigs", json=body, headers=auth()
        )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == f"tasks/{tid}/pushNotificationConfigs/by-id"


async def test_the_0_3_rest_client_reads_the_extended_card_pointing_at_the_gateway(plane: Plane) -> None:
    with anyio.fail_after(20):
        async with rest03(plane, "modern") as t:
            card = await t.get_extended_agent_card(GetExtendedAgentCardRequest())
    assert "secret" in [s.id for s in card.skills]
    assert card.supported_interfaces[0].url == f"{plane.url}/a2a/modern"
    assert {i.url for i in card.supported_interfaces} <= {
        f"{plane.url}/a2a/modern",
        f"{plane.url}/a2a/modern/rest",
    }


async def test_another_principal_gets_task_not_found_for_a_task_it_does_not_own(plane: Plane) -> None:
    with anyio.fail_after(20):
        async with rest03(plane, "modern") as t:
            tid = (
                await t.send_message(SendMessageRequest(message=user_message("hold"), configuration=WAIT))
            ).task.id
        async with rest03(plane, "modern", who="bob") as t:
            with pytest.raises(TaskNotFoundError):
                await t.get_task(GetTaskRequest(id=tid))
            with pytest.raises(TaskNotFoundError):
                await t.cancel_task(CancelTaskRequest(id=tid))
        r = await plane.http.get(f"/a2a/modern/rest/v1/tasks/{tid}", headers=auth("bob"))
    assert r.status_code == 404
    doc = r.json()
    assert doc["type"] == "TaskNotFoundError" and tid in doc["message"]
    assert doc["error"]["status"] == "NOT_FOUND" and doc["error"]["details"][0]["reason"] == "TASK_NOT_FOUND"


@pytest.mark.parametrize(
    ("verb", "path", "body", "headers", "status", "kind"),
    [
        ("POST", "/v1/message:send", b"{not json", {}, 400, "JSONParseError"),
        ("POST", "/v1/message:send", b"[1]", {}, 400, "JSONParseError"),
        ("POST", "/v1/message:send", b"{}", {}, 400, "InvalidParamsError"),
        ("POST", "/v1/message:send", b'{"request": {"content": 3}}', {}, 400, "InvalidParamsError"),
        (
            "POST",
            "/v1/message:send",
            b"{}",
            {"Content-Type": "text/plain"},
            400,
            "ContentTypeNotSupportedError",
        ),
        ("GET", "/v1/tasks/t1?historyLength=many", b"", {}, 400, "InvalidParamsError"),
        ("POST", "/v1/tasks/t1/pushNotificationConfigs", b'{"config": {}}', {}, 400, "InvalidParamsError"),
        ("POST", "/v1/message:send", b"{}", {"A2A-Version": "1.0"}, 400, "VersionNotSupportedError"),
        ("DELETE", "/v1/message:send", b"", {}, 405, None),
        ("GET", "/v1/nowhere", b"", {}, 404, None),
    ],
)
async def test_bad_input_is_a_clean_4xx_in_the_0_3_envelope(
    plane: Plane, verb: str, path: str, body: bytes, headers: dict[str, str], status: int, kind: str | None
) -> None:
    hdrs = {**auth(), "Content-Type": "application/json", **headers}
    with anyio.fail_after(20):
        r = await plane.http.request(verb, f"/a2a/modern/rest{path}", content=body, headers=hdrs)
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc.get("type") == kind and doc["message"] and doc["error"]["code"] == status


async def test_gateway_refusals_come_in_the_0_3_envelope(plane: Plane) -> None:
    body = {"request": message03("hi")}
    with anyio.fail_after(20):
        unknown = await plane.http.post("/a2a/nobody/rest/v1/message:send", json=body, headers=auth())
        nokey = await plane.http.post("/a2a/modern/rest/v1/message:send", json=body, headers=V03)
        async with rest03(plane, "modern", who="carol") as t:  # carol may use only `echo`
            with pytest.raises(MethodNotFoundError, match="Resource not found"):
                await t.send_message(SendMessageRequest(message=user_message("hi"), configuration=WAIT))
    assert unknown.status_code == 404 and "nobody" in unknown.json()["message"]
    assert unknown.json()["error"]["details"][0]["reason"] == "AGENT_NOT_FOUND"
    assert nokey.status_code == 401 and "www-authenticate" in nokey.headers
    assert nokey.json()["error"]["status"] == "UNAUTHENTICATED" and "type" not in nokey.json()


async def test_a_0_3_rest_call_is_audited_under_its_1_0_method(tmp_path: Path) -> None:
    async with served("modern", modern_echo_app) as modern:
        async with run_plane(tmp_path, modern) as p:
            with anyio.fail_after(20):
                async with rest03(p, "modern") as t:
                    sent = await t.send_message(
                        SendMessageRequest(message=user_message("hi"), configuration=WAIT)
                    )
                    await t.get_task(GetTaskRequest(id=sent.task.id))
    ops = [(r["operation"], r.get("status")) for r in audit_records(tmp_path) if r["plane"] == "a2a"]
    assert [o for o, _ in ops] == ["SendMessage", "GetTask"]


async def test_a_send_answers_at_once_unless_it_asks_to_block(plane: Plane) -> None:
    """Read as the a2a-sdk's 0.3 REST server reads it: no `configuration` waits; a `configuration` without
    `blocking: true` (a protobuf bool, absent = false) answers at once. The slow agent never finishes on its own."""
    with anyio.fail_after(20):
        waited = await plane.http.post(
            "/a2a/modern/rest/v1/message:send", json={"request": message03("w")}, headers=auth()
        )
        assert waited.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED", waited.text
        body = {"request": message03("w"), "configuration": {}}
        r = await plane.http.post("/a2a/slow/rest/v1/message:send", json=body, headers=auth())
        assert r.status_code == 200, r.text
        task = r.json()["task"]
        assert task["status"]["state"] in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
        done = await plane.http.post(f"/a2a/slow/rest/v1/tasks/{task['id']}:cancel", headers=auth())
    assert done.status_code == 200 and done.json()["status"]["state"] == "TASK_STATE_CANCELLED"


async def test_with_0_3_advertised_a_0_3_client_finds_the_rest_binding_in_the_card(tmp_path: Path) -> None:
    async with (
        served("modern", modern_echo_app) as modern,
        run_plane(tmp_path, modern, settings={"a2a": {"advertise_0_3": True}}) as p,
    ):
        with anyio.fail_after(20):
            r = await p.http.get("/a2a/modern/.well-known/agent-card.json", headers=auth())
            card = types_v03.AgentCard.model_validate(r.json())
            assert (card.url, card.preferred_transport, card.protocol_version) == (
                f"{p.url}/a2a/modern",
                "JSONRPC",
                "0.3",
            )
            [rest] = [i.url for i in card.additional_interfaces or [] if i.transport == "HTTP+JSON"]
            assert rest == f"{p.url}/a2a/modern/rest"
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEYS['alice']}"}) as http:
                t = CompatRestTransport(http, None, rest)
                sent = await t.send_message(
                    SendMessageRequest(message=user_message("hi"), configuration=WAIT)
                )
                assert get_artifact_text(sent.task.artifacts[0]) == "echo: hi"
                extended = await t.get_extended_agent_card(GetExtendedAgentCardRequest())
            assert (f"{p.url}/a2a/modern/rest", "HTTP+JSON", "0.3") in [
                (i.url, i.protocol_binding, i.protocol_version) for i in extended.supported_interfaces
            ]
            async with p.client(
                "modern", binding="HTTP+JSON", streaming=False
            ) as client:  # a 1.0 client: 1.0
                [answer] = [
                    e async for e in client.send_message(SendMessageRequest(message=user_message("yo")))
                ]
                assert answer.task.status.state == TaskState.TASK_STATE_COMPLETED


async def test_an_error_mid_stream_is_an_sse_error_event_in_the_0_3_envelope(plane: Plane) -> None:
    body = {"request": message03("x")}
    with anyio.fail_after(20):
        async with plane.http.stream(
            "POST", "/a2a/failing/rest/v1/message:stream", json=body, headers=auth()
        ) as r:
            text = (await r.aread()).decode()
        async with rest03(plane, "failing") as t:
            got: list[str] = []

            async def follow() -> None:
                async for ev in t.send_message_streaming(SendMessageRequest(message=user_message("x"))):
                    got.append(str(ev.WhichOneof("payload")))

            with pytest.raises(A2AClientError, match="the failing agent fails"):
                await follow()
    frames = text.strip().split("\n\n")
    assert [list(f) for f in sse_data("\n\n".join(frames[:-1]))] == [
        ["task"],
        ["statusUpdate"],
        ["artifactUpdate"],
    ]
    event, data = frames[-1].split("\n")
    doc = json.loads(data.removeprefix("data: "))
    assert event == "event: error" and doc["type"] == "InternalError" and doc["error"]["code"] == 500
    assert got == ["task", "status_update", "artifact_update"]


async def test_a_1_0_rest_client_reaches_a_0_3_json_rpc_agent(plane: Plane) -> None:
    """A request read from HTTP+JSON has no JSON-RPC id; the 0.3 agent is sent one (it refuses a null id)."""
    with anyio.fail_after(20):
        async with plane.client("legacy", binding="HTTP+JSON", streaming=False) as client:
            [answer] = [e async for e in client.send_message(SendMessageRequest(message=user_message("hi")))]
    assert answer.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_artifact_text(answer.task.artifacts[0]) == "echo: hi"
