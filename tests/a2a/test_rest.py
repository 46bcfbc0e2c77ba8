"""The HTTP+JSON binding under /a2a/{agent}/rest, end to end: every A2A 1.0 route through the gateway with the
a2a-sdk client and as raw HTTP, and errors as the binding's status with a google.rpc.Status body (415 for a body
that is not JSON, 404 for an unknown route), never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from tests.a2a import sdk_calls
from tests.a2a.agents import run_agent
from tests.a2a.plane import Plane, message, run_plane, sse_data

Scenario = Callable[[Plane, str], Awaitable[None]]
MEDIA = "application/a2a+json"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide: one gateway and its agents serve every test here


@pytest.fixture(scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    async with (
        run_agent("echo") as echo,
        run_agent("multiturn") as multiturn,
        run_agent("slow") as slow,
        run_agent("push") as push,
        run_agent("extended") as extended,
        run_plane(tmp_path_factory.mktemp("rest"), echo, multiturn, slow, push, extended) as p,
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
async def test_the_sdk_client_uses_every_method_over_http_json_through_the_gateway(
    plane: Plane, scenario: Scenario
) -> None:
    with anyio.fail_after(20):
        await scenario(plane, "HTTP+JSON")


def status_body(doc: Any, status: int, grpc: str, reason: str, domain: str) -> None:
    """`doc` is a google.rpc.Status error body whose first detail is an ErrorInfo."""
    err = doc["error"]
    assert (err["code"], err["status"]) == (status, grpc), doc
    assert isinstance(err["message"], str) and err["message"]
    info = err["details"][0]  # an agent's may go on (a BadRequest with field violations)
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert (info["reason"], info["domain"]) == (reason, domain), doc


async def test_raw_routes_send_get_list_cancel_and_subscribe(plane: Plane) -> None:
    h = plane.headers()
    with anyio.fail_after(20):
        sent = await plane.http.post(
            "/a2a/echo/rest/message:send", json={"message": message("hi")}, headers=h
        )
        assert sent.status_code == 200 and sent.headers["content-type"].startswith(MEDIA)
        task = sent.json()["task"]
        assert task["artifacts"][0]["parts"] == [{"text": "echo: hi"}]
        got = await plane.http.get(
            f"/a2a/echo/rest/tasks/{task['id']}", params={"historyLength": 0}, headers=h
        )
        assert got.json()["id"] == task["id"] and "history" not in got.json()
        listed = await plane.http.get(
            "/a2a/echo/rest/tasks", params={"contextId": task["contextId"]}, headers=h
        )
        assert [t["id"] for t in listed.json()["tasks"]] == [task["id"]]

        body = {"message": message("work"), "configuration": {"returnImmediately": True}}
        tid = (await plane.http.post("/a2a/slow/rest/message:send", json=body, headers=h)).json()["task"][
            "id"
        ]
        async with plane.http.stream("GET", f"/a2a/slow/rest/tasks/{tid}:subscribe", headers=h) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.aiter_lines()
            first = await anext(line async for line in lines if line.startswith("data: "))
            assert sse_data(first)[0]["task"]["id"] == tid
            cancel = await plane.http.post(f"/a2a/slow/rest/tasks/{tid}:cancel", headers=h)
            assert cancel.json()["status"]["state"] == "TASK_STATE_CANCELED"
            rest = sse_data("\n".join([line async for line in lines]))
        assert rest[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"
        again = await plane.http.post(f"/a2a/slow/rest/tasks/{tid}:cancel", headers=h)
    assert again.status_code == 400
    status_body(again.json(), 400, "FAILED_PRECONDITION", "TASK_NOT_CANCELABLE", "a2a-protocol.org")


async def test_raw_streaming_send_is_server_sent_events_of_stream_responses(plane: Plane) -> None:
    with anyio.fail_after(20):
        async with plane.http.stream(
            "POST", "/a2a/echo/rest/message:stream", json={"message": message("yo")}, headers=plane.headers()
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse_data((await r.aread()).decode())
    assert [next(iter(e)) for e in events] == ["task", "statusUpdate", "artifactUpdate", "statusUpdate"]


async def test_raw_push_config_routes_create_get_list_and_delete(plane: Plane) -> None:
    h = plane.headers()
    with anyio.fail_after(20):
        sent = await plane.http.post(
            "/a2a/push/rest/message:send", json={"message": message("hi")}, headers=h
        )
        tid = sent.json()["task"]["id"]
        base = f"/a2a/push/rest/tasks/{tid}/pushNotificationConfigs"
        made = await plane.http.post(base, json={"id": "h1", "url": sdk_calls.PUBLIC_HOOK}, headers=h)
        assert made.status_code == 200 and made.json()["taskId"] == tid, made.text
        got = await plane.http.get(f"{base}/h1", headers=h)
        assert got.json()["url"] == sdk_calls.PUBLIC_HOOK
        listed = await plane.http.get(base, headers=h)
        assert [c["id"] for c in listed.json()["configs"]] == ["h1"]
        gone = await plane.http.delete(f"{base}/h1", headers=h)
        assert gone.status_code == 200
        assert (await plane.http.get(base, headers=h)).json().get("configs", []) == []
        internal = await plane.http.post(base, json={"url": "http://169.254.169.254/latest"}, headers=h)
    assert internal.status_code == 400
    status_body(internal.json(), 400, "INVALID_ARGUMENT", "PUSH_URL_FORBIDDEN", "agentgw")


async def test_raw_extended_card_route_serves_the_rewritten_card(plane: Plane) -> None:
    with anyio.fail_after(20):
        r = await plane.http.get("/a2a/extended/rest/extendedAgentCard", headers=plane.headers())
    assert r.status_code == 200
    card = r.json()
    assert [s["id"] for s in card["skills"]] == ["extended", "secret"]
    assert card["supportedInterfaces"][1] == {
        "url": f"{plane.url}/a2a/extended/rest",
        "protocolBinding": "HTTP+JSON",
        "protocolVersion": "1.0",
    }


async def test_a_task_nobody_has_is_404_task_not_found(plane: Plane) -> None:
    with anyio.fail_after(20):
        r = await plane.http.get("/a2a/echo/rest/tasks/no-such-task", headers=plane.headers())
    assert r.status_code == 404
    status_body(r.json(), 404, "NOT_FOUND", "TASK_NOT_FOUND", "a2a-protocol.org")


async def test_a_body_that_is_not_json_is_415(plane: Plane) -> None:
    headers = {**plane.headers(), "content-type": "text/plain"}
    with anyio.fail_after(20):
        r = await plane.http.post("/a2a/echo/rest/message:send", content=b"hello", headers=headers)
    assert r.status_code == 415
    status_body(r.json(), 415, "INVALID_ARGUMENT", "UNSUPPORTED_MEDIA_TYPE", "agentgw")


@pytest.mark.parametrize(
    ("verb", "path", "status", "grpc", "reason"),
    [
        ("GET", "/a2a/echo/rest/nowhere", 404, "NOT_FOUND", "UNKNOWN_ROUTE"),
        ("POST", "/a2a/echo/rest/v2/message:send", 404, "NOT_FOUND", "UNKNOWN_ROUTE"),  # /v1/...: 0.3
        ("DELETE", "/a2a/echo/rest/tasks/t1", 405, "UNIMPLEMENTED", "UNKNOWN_ROUTE"),
        ("GET", "/a2a/echo/rest/message:send", 405, "UNIMPLEMENTED", "UNKNOWN_ROUTE"),
        ("GET", "/a2a/nobody/rest/tasks", 404, "NOT_FOUND", "AGENT_NOT_FOUND"),
    ],
)
async def test_an_unknown_route_or_verb_is_a_status_body_not_a_crash(
    plane: Plane, verb: str, path: str, status: int, grpc: str, reason: str
) -> None:
    with anyio.fail_after(20):
        r = await plane.http.request(verb, path, headers=plane.headers())
    assert r.status_code == status, r.text
    status_body(r.json(), status, grpc, reason, "agentgw")


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(b"{not json", {}, id="unreadable-json"),
        pytest.param(b"[1]", {}, id="not-an-object"),
        pytest.param(b'{"message": 5}', {}, id="message-not-object"),
        pytest.param(b'{"message": {"parts": [{"text": "x"}]}}', {"A2A-Version": "0.3"}, id="version-0.3"),
    ],
)
async def test_bad_input_is_a_400_status_body(plane: Plane, body: bytes, headers: dict[str, str]) -> None:
    with anyio.fail_after(20):
        r = await plane.http.post(
            "/a2a/echo/rest/message:send",
            content=body,
            headers={**plane.headers(), "content-type": MEDIA, **headers},
        )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == 400 and err["status"] in ("INVALID_ARGUMENT", "FAILED_PRECONDITION")
    assert err["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"


async def test_without_a_key_it_is_401_with_a_challenge(plane: Plane) -> None:
    with anyio.fail_after(20):
        r = await plane.http.get("/a2a/echo/rest/tasks", headers={"A2A-Version": "1.0"})
    assert r.status_code == 401 and "www-authenticate" in r.headers
    status_body(r.json(), 401, "UNAUTHENTICATED", r.json()["error"]["details"][0]["reason"], "agentgw")


@pytest.mark.parametrize(
    ("verb", "path", "body"),
    [
        pytest.param("GET", "/a2a/echo/rest/tasks?pageSize=abc", None, id="page-size-not-a-number"),
        pytest.param("GET", "/a2a/echo/rest/tasks?historyLength=-1", None, id="negative-history"),
        pytest.param("POST", "/a2a/echo/rest/message:send", {"message": {"role": 99}}, id="bad-message"),
        pytest.param("POST", "/a2a/echo/rest/tasks/x:cancel", [1], id="body-not-an-object"),
    ],
)
async def test_params_that_cannot_be_read_are_400_invalid_params(
    plane: Plane, verb: str, path: str, body: Any
) -> None:
    with anyio.fail_after(20):
        r = await plane.http.request(verb, path, json=body, headers=plane.headers())
    assert r.status_code == 400, r.text
    status_body(r.json(), 400, "INVALID_ARGUMENT", "INVALID_PARAMS", "a2a-protocol.org")
