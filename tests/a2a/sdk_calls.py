"""Every A2A 1.0 operation as an a2a-sdk client makes it through the gateway, written once and run by test_jsonrpc
(binding JSONRPC) and test_rest (binding HTTP+JSON): what a user of the SDK meets on either binding."""

from __future__ import annotations

import anyio
from a2a.helpers import get_artifact_text
from a2a.types import (
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTasksRequest,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)

from tests.a2a.agents import user_message
from tests.a2a.plane import Plane

PUBLIC_HOOK = "https://93.184.215.14/hook"  # a public literal: passes the callback check without DNS


def kinds(events: list[StreamResponse]) -> list[str]:
    return [str(e.WhichOneof("payload")) for e in events]


async def send_stream_get_and_list(p: Plane, binding: str) -> None:
    async with p.client("echo", binding=binding, streaming=True) as client:
        events = [e async for e in client.send_message(SendMessageRequest(message=user_message("hi")))]
        assert kinds(events) == ["task", "status_update", "artifact_update", "status_update"]
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        assert get_artifact_text(events[2].artifact_update.artifact) == "echo: hi"
        streamed = events[0].task.id
    async with p.client("echo", binding=binding, streaming=False) as client:
        [answer] = [e async for e in client.send_message(SendMessageRequest(message=user_message("yo")))]
        assert answer.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert get_artifact_text(answer.task.artifacts[0]) == "echo: yo"
        task = await client.get_task(GetTaskRequest(id=answer.task.id))
        assert task.id == answer.task.id and task.status.state == TaskState.TASK_STATE_COMPLETED
        listed = await client.list_tasks(ListTasksRequest())
        assert {streamed, answer.task.id} <= {t.id for t in listed.tasks}


async def continue_a_multiturn_task(p: Plane, binding: str) -> None:
    async with p.client("multiturn", binding=binding, streaming=False) as client:
        [first] = [e async for e in client.send_message(SendMessageRequest(message=user_message("book")))]
        assert first.task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        more = user_message("a window seat", task_id=first.task.id, context_id=first.task.context_id)
        [second] = [e async for e in client.send_message(SendMessageRequest(message=more))]
        assert second.task.id == first.task.id
        assert second.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert get_artifact_text(second.task.artifacts[0]) == "echo: a window seat"


async def subscribe_then_cancel(p: Plane, binding: str) -> None:
    config = SendMessageConfiguration(return_immediately=True)
    async with p.client("slow", binding=binding, streaming=False) as unary:
        request = SendMessageRequest(message=user_message("work"), configuration=config)
        [started] = [e async for e in unary.send_message(request)]
    tid = started.task.id
    async with p.client("slow", binding=binding, streaming=True) as client:
        seen: list[StreamResponse] = []
        subscribed = anyio.Event()

        async def follow() -> None:
            async for ev in client.subscribe(SubscribeToTaskRequest(id=tid)):
                seen.append(ev)
                subscribed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await subscribed.wait()
            cancelled = await client.cancel_task(CancelTaskRequest(id=tid))
            assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
        assert seen[0].task.id == tid
        assert seen[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
        task = await client.get_task(GetTaskRequest(id=tid))
        assert task.status.state == TaskState.TASK_STATE_CANCELED


async def push_config_round_trip(p: Plane, binding: str) -> None:
    async with p.client("push", binding=binding, streaming=False) as client:
        [sent] = [e async for e in client.send_message(SendMessageRequest(message=user_message("hi")))]
        tid = sent.task.id
        made = await client.create_task_push_notification_config(
            TaskPushNotificationConfig(task_id=tid, id="hook-1", url=PUBLIC_HOOK, token="secret-token")
        )
        assert (made.task_id, made.id, made.url) == (tid, "hook-1", PUBLIC_HOOK)
        got = await client.get_task_push_notification_config(
            GetTaskPushNotificationConfigRequest(task_id=tid, id="hook-1")
        )
        assert got.url == PUBLIC_HOOK and got.token == "secret-token"
        listed = await client.list_task_push_notification_configs(
            ListTaskPushNotificationConfigsRequest(task_id=tid)
        )
        assert [c.id for c in listed.configs] == ["hook-1"]
        await client.delete_task_push_notification_config(
            DeleteTaskPushNotificationConfigRequest(task_id=tid, id="hook-1")
        )
        after = await client.list_task_push_notification_configs(
            ListTaskPushNotificationConfigsRequest(task_id=tid)
        )
        assert list(after.configs) == []


async def extended_card_points_at_the_gateway(p: Plane, binding: str) -> None:
    async with p.client("extended", binding=binding, streaming=False) as client:
        card = await client.get_extended_agent_card(GetExtendedAgentCardRequest())
    assert [s.id for s in card.skills] == ["extended", "secret"]
    urls = [i.url for i in card.supported_interfaces]
    assert urls == [f"{p.url}/a2a/extended", f"{p.url}/a2a/extended/rest"]
    assert set(card.security_schemes) == {"gatewayApiKey", "gatewayBearer"}
