"""The JSON-RPC binding at POST /a2a/{agent}, end to end: every A2A 1.0 method through the gateway with the
a2a-sdk client and as raw JSON, and bad input answered with the right JSON-RPC code (HTTP 200/4xx, never 500)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from tests.a2a import sdk_calls
from tests.a2a.agents import run_agent
from tests.a2a.plane import Plane, message, rpc, run_plane, sse_data

Scenario = Callable[[Plane, str], Awaitable[None]]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide: one gateway and its agents serve every test here


@pytest.fixture(scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    tmp_path = tmp_path_factory.mktemp("jsonrpc")
    async with (
        run_agent("echo") as echo,
        run_agent("multiturn") as multiturn,
        run_agent("slow") as slow,
        run_agent("push") as push,
        run_agent("extended") as extended,
        run_plane(tmp_path, echo, multiturn, slow, push, extended) as p,
    ):
        yield p


@pytest.mark.parametrize(
    "scenario",
    [
        sdk_calls.send_stream_get_and_list,
        sdk_calls.continue_a_multiturn_task,
        sdk_calls.subscribe_then_cancel,
        sdk_calls.push_config_round_trip,
        sdk_calls.extended_card_points_at_the_gateway,
    ],
    ids=lambda f: f.__name__,
)
async def test_the_sdk_client_uses_every_method_over_jsonrpc_through_the_gateway(
    plane: Plane, scenario: Scenario
) -> None:
    with anyio.fail_after(20):
        await scenario(plane, "JSONRPC")


async def post(p: Plane, agent: str, body: Any, **headers: str) -> Any:
    r = await p.http.post(f"/a2a/{agent}", json=body, headers={**p.headers(), **headers})
    assert r.status_code == 200, r.text
    return r.json()


async def test_raw_send_get_and_list_answer_a2a_1_0_json_with_the_callers_id(plane: Plane) -> None:
    with anyio.fail_after(20):
        sent = await post(plane, "echo", rpc("SendMessage", {"message": message("hi")}, rid="req-7"))
        assert sent["id"] == "req-7" and sent["jsonrpc"] == "2.0"
        task = sent["result"]["task"]
        assert task["status"]["state"] == "TASK_STATE_COMPLETED"
        assert task["artifacts"][0]["parts"] == [{"text": "echo: hi"}]
        got = await post(plane, "echo", rpc("GetTask", {"id": task["id"], "historyLength": 0}, rid=8))
        assert got["id"] == 8 and got["result"]["id"] == task["id"] and "history" not in got["result"]
        listed = await post(plane, "echo", rpc("ListTasks", {"contextId": task["contextId"]}))
        assert [t["id"] for t in listed["result"]["tasks"]] == [task["id"]]


async def test_raw_streaming_send_frames_every_event_with_the_callers_id(plane: Plane) -> None:
    body = rpc("SendStreamingMessage", {"message": message("yo")}, rid=42)
    with anyio.fail_after(20):
        async with plane.http.stream("POST", "/a2a/echo", json=body, headers=plane.headers()) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            frames = sse_data((await r.aread()).decode())
    assert {f["id"] for f in frames} == {42}
    kinds = [next(iter(f["result"])) for f in frames]
    assert kinds == ["task", "statusUpdate", "artifactUpdate", "statusUpdate"]
    assert frames[-1]["result"]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_raw_subscribe_and_cancel_follow_a_running_task(plane: Plane) -> None:
    with anyio.fail_after(20):
        sent = await post(
            plane,
            "slow",
            rpc("SendMessage", {"message": message("work"), "configuration": {"returnImmediately": True}}),
        )
        tid = sent["result"]["task"]["id"]
        body = rpc("SubscribeToTask", {"id": tid}, rid="sub")
        async with plane.http.stream("POST", "/a2a/slow", json=body, headers=plane.headers()) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.aiter_lines()
            first = await anext(line async for line in lines if line.startswith("data: "))
            assert sse_data(first)[0]["result"]["task"]["id"] == tid
            cancelled = await post(plane, "slow", rpc("CancelTask", {"id": tid}))
            assert cancelled["result"]["status"]["state"] == "TASK_STATE_CANCELED"
            rest = sse_data("\n".join([line async for line in lines]))
        assert rest[-1]["id"] == "sub"
        assert rest[-1]["result"]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"
        again = await post(plane, "slow", rpc("CancelTask", {"id": tid}))
        assert again["error"]["code"] == -32002  # TaskNotCancelable, the agent's, relayed


async def test_raw_push_config_methods_create_get_list_and_delete(plane: Plane) -> None:
    with anyio.fail_after(20):
        tid = (await plane.call("push", "SendMessage", {"message": message("hi")}))["task"]["id"]
        config = {"taskId": tid, "id": "h1", "url": sdk_calls.PUBLIC_HOOK, "token": "tok"}
        made = await plane.call("push", "CreateTaskPushNotificationConfig", config)
        assert made["url"] == sdk_calls.PUBLIC_HOOK and made["id"] == "h1"
        got = await plane.call("push", "GetTaskPushNotificationConfig", {"taskId": tid, "id": "h1"})
        assert got["token"] == "tok"
        listed = await plane.call("push", "ListTaskPushNotificationConfigs", {"taskId": tid})
        assert [c["id"] for c in listed["configs"]] == ["h1"]
        await plane.call("push", "DeleteTaskPushNotificationConfig", {"taskId": tid, "id": "h1"})
        empty = await plane.call("push", "ListTaskPushNotificationConfigs", {"taskId": tid})
        assert empty.get("configs", []) == []
        internal = {**config, "url": "http://127.0.0.1:9/hook"}
        refused = await plane.http.post(
            "/a2a/push", json=rpc("CreateTaskPushNotificationConfig", internal), headers=plane.headers()
        )
        # never reaches the agent: 400 push_url_forbidden, as docs/a2a.md says
        assert refused.status_code == 400 and refused.json()["error"]["code"] == -32602
        assert refused.json()["error"]["data"]["code"] == "push_url_forbidden"


async def test_raw_extended_card_is_the_agents_rewritten_for_the_gateway(plane: Plane) -> None:
    with anyio.fail_after(20):
        card = await plane.call("extended", "GetExtendedAgentCard")
        none = await post(plane, "echo", rpc("GetExtendedAgentCard"))
    assert [s["id"] for s in card["skills"]] == ["extended", "secret"]
    assert card["supportedInterfaces"][0]["url"] == f"{plane.url}/a2a/extended"
    assert "error" in none and none["error"]["code"] < 0  # the echo agent has no extended card


BAD_INPUT = [
    pytest.param(b"{not json", {}, -32700, id="unreadable-json"),
    pytest.param(b'"a string"', {}, -32600, id="not-an-object"),
    pytest.param(b"[1, 2]", {}, -32600, id="a-batch"),
    pytest.param(b'{"jsonrpc": "1.0", "id": 3, "method": "GetTask"}', {}, -32600, id="wrong-jsonrpc"),
    pytest.param(b'{"jsonrpc": "2.0", "id": 3, "params": {}}', {}, -32600, id="no-method"),
    pytest.param(b'{"jsonrpc": "2.0", "id": 3, "method": "tasks/explode"}', {}, -32601, id="unknown-method"),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": [1]}', {}, -32602, id="params-list"
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {}}', {}, -32602, id="no-task-id"
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 3, "method": "SendMessage", "params": {"message": 5}}',
        {},
        -32602,
        id="message-not-object",
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 3, "method": "SendMessage", "params": {"message": {"parts": []}}}',
        {"A2A-Version": "0.3"},
        -32009,
        id="1.0-method-as-0.3",
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"id": "x"}}',
        {"A2A-Version": "2.0"},
        -32009,
        id="version-2",
    ),
]


@pytest.mark.parametrize(("body", "headers", "code"), BAD_INPUT)
async def test_bad_input_gets_the_right_jsonrpc_error_with_http_200(
    plane: Plane, body: bytes, headers: dict[str, str], code: int
) -> None:
    with anyio.fail_after(20):
        r = await plane.http.post(
            "/a2a/echo",
            content=body,
            headers={**plane.headers(), "content-type": "application/json", **headers},
        )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["jsonrpc"] == "2.0" and doc["error"]["code"] == code, doc
    assert "Traceback" not in r.text
    if b'"id": 3' in body:  # a readable id is answered to, even when the request is refused
        assert doc["id"] == 3


async def test_a_1_0_method_without_a_version_is_version_not_supported(plane: Plane) -> None:
    with anyio.fail_after(20):
        r = await plane.http.post(
            "/a2a/echo",
            json=rpc("SendMessage", {"message": message("hi")}, rid=9),
            headers=plane.headers(version=None),
        )
        query = await plane.http.post(
            "/a2a/echo?A2A-Version=1.0",
            json=rpc("SendMessage", {"message": message("hi")}, rid=10),
            headers=plane.headers(version=None),
        )
    assert r.status_code == 200 and r.json()["error"]["code"] == -32009 and r.json()["id"] == 9
    assert query.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_the_gateways_refusals_keep_their_http_status_and_say_why_in_data(plane: Plane) -> None:
    with anyio.fail_after(20):
        nokey = await plane.http.post(
            "/a2a/echo", json=rpc("GetTask", {"id": "x"}), headers={"A2A-Version": "1.0"}
        )
        unknown = await plane.http.post(
            "/a2a/nobody", json=rpc("GetTask", {"id": "x"}), headers=plane.headers()
        )
        hidden = await plane.http.post(
            "/a2a/slow", json=rpc("GetTask", {"id": "x"}), headers=plane.headers("carol")
        )
        wrong_verb = await plane.http.get("/a2a/echo", headers=plane.headers())
    assert nokey.status_code == 401 and nokey.json()["error"]["code"] == -32010
    assert "www-authenticate" in nokey.headers
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == -32015
    # an agent the caller may not use answers exactly like one that does not exist
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == -32015
    assert hidden.json()["error"]["message"].replace("slow", "nobody") == unknown.json()["error"]["message"]
    assert wrong_verb.status_code == 405


async def test_a_body_over_the_limit_is_413_in_each_bindings_envelope_and_never_reaches_the_agent(
    plane: Plane,
) -> None:
    big = "x" * (10 * 1024 * 1024 + 1)  # limits.max_body_bytes: 10 MiB by default
    with anyio.fail_after(30):
        over_rpc = await plane.http.post(
            "/a2a/echo", json=rpc("SendMessage", {"message": message(big)}), headers=plane.headers()
        )
        over_rest = await plane.http.post(
            "/a2a/echo/rest/message:send", json={"message": message(big)}, headers=plane.headers()
        )
    assert over_rpc.status_code == 413 and over_rpc.json()["error"]["code"] == -32014
    assert over_rpc.json()["id"] is None  # the body was never read whole, so its id is unknown
    assert over_rest.status_code == 413
    error = over_rest.json()["error"]
    assert (error["code"], error["details"][0]["reason"]) == (413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    "hook",
    [
        sdk_calls.PUBLIC_HOOK,
        "http://127.0.0.1:9/hook",  # the card's answer comes before the callback's egress check
    ],
)
async def test_push_config_on_an_agent_without_push_is_push_notification_not_supported(
    plane: Plane, hook: str
) -> None:
    with anyio.fail_after(20):
        tid = (await plane.call("echo", "SendMessage", {"message": message("hi")}))["task"]["id"]
        r = await plane.http.post(
            "/a2a/echo",
            json=rpc("CreateTaskPushNotificationConfig", {"taskId": tid, "url": hook}),
            headers=plane.headers(),
        )
        listed = await plane.http.post(
            "/a2a/echo", json=rpc("ListTaskPushNotificationConfigs", {"taskId": tid}), headers=plane.headers()
        )
    assert r.status_code == 200 and r.json()["error"]["code"] == -32003, r.text
    assert listed.json()["error"]["code"] == -32003


@pytest.mark.parametrize(
    "params",
    [
        pytest.param(
            {"message": {"messageId": 5, "role": "ROLE_USER", "parts": [{"text": "x"}]}}, id="bad-id"
        ),
        pytest.param({"message": {"role": "ROLE_NOPE", "parts": "x"}}, id="bad-role-and-parts"),
        pytest.param(
            {"message": message("x"), "configuration": {"historyLength": -5}}, id="negative-history"
        ),
    ],
)
async def test_params_the_agent_cannot_read_are_its_invalid_params_relayed(
    plane: Plane, params: dict[str, Any]
) -> None:
    with anyio.fail_after(20):
        doc = await post(plane, "echo", rpc("SendMessage", params, rid="bad"))
    assert doc["id"] == "bad" and doc["error"]["code"] == -32602
    assert doc["error"]["data"][0]["reason"] == "INVALID_PARAMS"  # the agent's own ErrorInfo, as it sent it
