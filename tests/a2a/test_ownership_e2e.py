"""Task ownership as two users meet it through the gateway, on both bindings: alice's tasks and conversations do not
exist for bob (TaskNotFound, exactly as for an id nobody has, on every method that names a task or continues one),
ListTasks shows him none of hers, and nothing he tries changes her task."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from tests.a2a.agents import run_agent
from tests.a2a.plane import Plane, message, rpc, run_plane
from tests.a2a.sdk_calls import PUBLIC_HOOK


@dataclass
class Hers:
    working: dict[str, Any]  # the slow agent's task, still working
    waiting: dict[str, Any]  # the multiturn agent's task, waiting for input
    pushed: dict[str, Any]  # the push agent's task, with a push config "h1"
    slow_url: str  # the slow agent itself, behind the gateway


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide: one gateway and its agents serve every test here


@pytest.fixture(scope="module")
async def plane_and_hers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Plane, Hers]]:
    async with (
        run_agent("slow") as slow,
        run_agent("multiturn") as multiturn,
        run_agent("push") as push,
        run_plane(tmp_path_factory.mktemp("ownership"), slow, multiturn, push) as p,
    ):
        with anyio.fail_after(20):
            quick = {"message": message("work"), "configuration": {"returnImmediately": True}}
            working = (await p.call("slow", "SendMessage", quick))["task"]
            waiting = (await p.call("multiturn", "SendMessage", {"message": message("book")}))["task"]
            assert waiting["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
            pushed = (await p.call("push", "SendMessage", {"message": message("hi")}))["task"]
            hook = {"taskId": pushed["id"], "id": "h1", "url": PUBLIC_HOOK}
            await p.call("push", "CreateTaskPushNotificationConfig", hook)
        yield p, Hers(working, waiting, pushed, slow.url)
        with anyio.fail_after(20):
            await p.call("slow", "CancelTask", {"id": working["id"]})


@pytest.fixture
def plane(plane_and_hers: tuple[Plane, Hers]) -> Plane:
    return plane_and_hers[0]


@pytest.fixture
def hers(plane_and_hers: tuple[Plane, Hers]) -> Hers:
    return plane_and_hers[1]


def jsonrpc_calls(h: Hers, nobody: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(agent, method, params) naming alice's tasks (or, with `nobody`, ids nobody has)."""
    w, m, p = (
        ("no-such-task", "no-such-task", "no-such-task")
        if nobody
        else (h.working["id"], h.waiting["id"], h.pushed["id"])
    )
    return [
        ("slow", "GetTask", {"id": w}),
        ("slow", "CancelTask", {"id": w}),
        ("slow", "SubscribeToTask", {"id": w}),
        ("push", "CreateTaskPushNotificationConfig", {"taskId": p, "id": "h2", "url": PUBLIC_HOOK}),
        ("push", "GetTaskPushNotificationConfig", {"taskId": p, "id": "h1"}),
        ("push", "ListTaskPushNotificationConfigs", {"taskId": p}),
        ("push", "DeleteTaskPushNotificationConfig", {"taskId": p, "id": "h1"}),
        ("multiturn", "SendMessage", {"message": message("mine now", taskId=m)}),
        ("multiturn", "SendStreamingMessage", {"message": message("mine now", taskId=m)}),
    ]


def rest_calls(h: Hers, nobody: bool) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(verb, path, body) naming alice's tasks (or ids nobody has)."""
    w, m, p = (
        ("no-such-task", "no-such-task", "no-such-task")
        if nobody
        else (h.working["id"], h.waiting["id"], h.pushed["id"])
    )
    return [
        ("GET", f"/a2a/slow/rest/tasks/{w}", None),
        ("POST", f"/a2a/slow/rest/tasks/{w}:cancel", {}),
        ("GET", f"/a2a/slow/rest/tasks/{w}:subscribe", None),
        ("POST", f"/a2a/slow/rest/tasks/{w}:subscribe", {}),
        ("POST", f"/a2a/push/rest/tasks/{p}/pushNotificationConfigs", {"id": "h2", "url": PUBLIC_HOOK}),
        ("GET", f"/a2a/push/rest/tasks/{p}/pushNotificationConfigs/h1", None),
        ("GET", f"/a2a/push/rest/tasks/{p}/pushNotificationConfigs", None),
        ("DELETE", f"/a2a/push/rest/tasks/{p}/pushNotificationConfigs/h1", None),
        ("POST", "/a2a/multiturn/rest/message:send", {"message": message("mine now", taskId=m)}),
        ("POST", "/a2a/multiturn/rest/message:stream", {"message": message("mine now", taskId=m)}),
    ]


async def test_bob_gets_task_not_found_for_alices_tasks_over_jsonrpc(plane: Plane, hers: Hers) -> None:
    with anyio.fail_after(20):
        for (agent, method, params), (_, _, unknown) in zip(
            jsonrpc_calls(hers, False), jsonrpc_calls(hers, True), strict=True
        ):
            r = await plane.http.post(
                f"/a2a/{agent}", json=rpc(method, params, rid=method), headers=plane.headers("bob")
            )
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), (
                method,
                r.text,
            )
            err = r.json()["error"]
            assert r.json()["id"] == method and err["code"] == -32001, (method, err)
            # ... the very answer an id nobody has gets (the agent's own, for an unknown id)
            other = await plane.http.post(
                f"/a2a/{agent}", json=rpc(method, unknown, rid=method), headers=plane.headers("bob")
            )
            assert other.json()["error"]["code"] == -32001, (method, other.text)


async def test_bob_gets_task_not_found_for_alices_tasks_over_http_json(plane: Plane, hers: Hers) -> None:
    with anyio.fail_after(20):
        for verb, path, body in rest_calls(hers, False):
            r = await plane.http.request(verb, path, json=body, headers=plane.headers("bob"))
            assert r.status_code == 404, (verb, path, r.text)
            [info] = r.json()["error"]["details"]
            assert info["reason"] == "TASK_NOT_FOUND", (verb, path, info)
        for verb, path, body in rest_calls(hers, True):
            r = await plane.http.request(verb, path, json=body, headers=plane.headers("bob"))
            assert r.status_code == 404 and r.json()["error"]["details"][0]["reason"] == "TASK_NOT_FOUND", (
                path,
                r.text,
            )


@pytest.mark.parametrize("binding", ["jsonrpc", "rest"])
async def test_bob_cannot_join_alices_conversation(plane: Plane, hers: Hers, binding: str) -> None:
    msg = message("me too", contextId=hers.waiting["contextId"])
    with anyio.fail_after(20):
        if binding == "jsonrpc":
            r = await plane.http.post(
                "/a2a/multiturn", json=rpc("SendMessage", {"message": msg}), headers=plane.headers("bob")
            )
            assert r.status_code == 200 and r.json()["error"]["code"] == -32001
        else:
            r = await plane.http.post(
                "/a2a/multiturn/rest/message:send", json={"message": msg}, headers=plane.headers("bob")
            )
            assert r.status_code == 404 and r.json()["error"]["details"][0]["reason"] == "TASK_NOT_FOUND"


@pytest.mark.parametrize("binding", ["jsonrpc", "rest"])
async def test_list_tasks_shows_bob_his_tasks_and_none_of_alices(
    plane: Plane, hers: Hers, binding: str
) -> None:
    with anyio.fail_after(20):
        mine = (await plane.call("push", "SendMessage", {"message": message("bob's")}, who="bob"))["task"]
        if binding == "jsonrpc":
            everything = await plane.call("push", "ListTasks", {}, who="bob")
            hers_by_ctx = await plane.call(
                "push", "ListTasks", {"contextId": hers.pushed["contextId"]}, who="bob"
            )
        else:
            h = plane.headers("bob")
            everything = (await plane.http.get("/a2a/push/rest/tasks", headers=h)).json()
            hers_by_ctx = (
                await plane.http.get(
                    "/a2a/push/rest/tasks", params={"contextId": hers.pushed["contextId"]}, headers=h
                )
            ).json()
        alices = await plane.call("push", "ListTasks", {})
    ids = [t["id"] for t in everything["tasks"]]
    assert mine["id"] in ids and hers.pushed["id"] not in ids
    assert hers_by_ctx.get("tasks", []) == []
    assert hers.pushed["id"] in [t["id"] for t in alices["tasks"]] and mine["id"] not in [
        t["id"] for t in alices["tasks"]
    ]


async def test_nothing_bob_tried_changed_alices_tasks(plane: Plane, hers: Hers) -> None:
    with anyio.fail_after(20):
        for verb, path, body in rest_calls(hers, False):  # bob tries everything once more first
            await plane.http.request(verb, path, json=body, headers=plane.headers("bob"))
        working = await plane.call("slow", "GetTask", {"id": hers.working["id"]})
        configs = await plane.call("push", "ListTaskPushNotificationConfigs", {"taskId": hers.pushed["id"]})
        waiting = await plane.call("multiturn", "GetTask", {"id": hers.waiting["id"]})
    assert working["status"]["state"] == "TASK_STATE_WORKING"
    assert [c["id"] for c in configs["configs"]] == ["h1"]
    assert waiting["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"


# Protobuf JSON (what a2a-sdk agents parse) accepts a field's snake_case name as well as its camelCase one: a
# message naming alice's task as `task_id` must be refused like one naming it `taskId`.


@pytest.mark.parametrize("field", ["task_id", "context_id"])
async def test_bob_cannot_continue_alices_task_by_naming_it_in_snake_case(
    plane: Plane, hers: Hers, field: str
) -> None:
    with anyio.fail_after(20):
        # a task of her own for this test: a bypass would complete it
        task = (await plane.call("multiturn", "SendMessage", {"message": message("book")}))["task"]
        ids = {"task_id": task["id"]} if field == "task_id" else {"context_id": task["contextId"]}
        msg = {**message("mine now"), **ids}
        r = await plane.http.post(
            "/a2a/multiturn", json=rpc("SendMessage", {"message": msg}), headers=plane.headers("bob")
        )
        waiting = await plane.call("multiturn", "GetTask", {"id": task["id"]})
    assert waiting["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"  # her task did not move on
    assert r.json().get("error", {}).get("code") == -32001, r.text


async def test_the_gateways_task_not_found_is_indistinguishable_from_the_agents(
    plane: Plane, hers: Hers
) -> None:
    with anyio.fail_after(20):
        theirs = await plane.http.post(
            "/a2a/slow", json=rpc("GetTask", {"id": hers.working["id"]}), headers=plane.headers("bob")
        )
        # what an a2a-sdk agent itself answers for a task it does not have
        nobodys = await plane.http.post(
            hers.slow_url, json=rpc("GetTask", {"id": "no-such-task"}), headers={"A2A-Version": "1.0"}
        )
    refused, unknown = theirs.json()["error"], nobodys.json()["error"]
    assert refused["code"] == unknown["code"] == -32001
    assert refused.get("data") == unknown.get("data"), (refused, unknown)
