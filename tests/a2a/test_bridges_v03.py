"""The 0.3 ↔ 1.0 translations one by one, both ways, on wire JSON: params, results, events, errors, cards, and bad
input answered as BridgeError (Invalid params for a client's, InvalidAgentResponse for an agent's)."""

from __future__ import annotations

from typing import Any

import pytest

from agentgw.a2a.bridges import v03

STATES = [
    ("submitted", "TASK_STATE_SUBMITTED"),
    ("working", "TASK_STATE_WORKING"),
    ("input-required", "TASK_STATE_INPUT_REQUIRED"),
    ("auth-required", "TASK_STATE_AUTH_REQUIRED"),
    ("completed", "TASK_STATE_COMPLETED"),
    ("canceled", "TASK_STATE_CANCELED"),
    ("failed", "TASK_STATE_FAILED"),
    ("rejected", "TASK_STATE_REJECTED"),
]

PARTS = [  # (0.3, 1.0) of every kind
    ({"kind": "text", "text": "hi"}, {"text": "hi"}),
    (
        {"kind": "file", "file": {"uri": "https://x/f.txt", "mimeType": "text/plain", "name": "f.txt"}},
        {"url": "https://x/f.txt", "mediaType": "text/plain", "filename": "f.txt"},
    ),
    (
        {"kind": "file", "file": {"bytes": "aGk=", "mimeType": "application/octet-stream", "name": "b.bin"}},
        {"raw": "aGk=", "mediaType": "application/octet-stream", "filename": "b.bin"},
    ),
    ({"kind": "data", "data": {"a": "b", "n": [1.5]}}, {"data": {"a": "b", "n": [1.5]}}),
    ({"kind": "text", "text": "t", "metadata": {"k": "v"}}, {"text": "t", "metadata": {"k": "v"}}),
]


def msg03(parts: list[dict[str, Any]], role: str = "user") -> dict[str, Any]:
    return {"kind": "message", "messageId": "m1", "role": role, "parts": parts, "contextId": "c1"}


def msg10(parts: list[dict[str, Any]], role: str = "ROLE_USER") -> dict[str, Any]:
    return {"messageId": "m1", "role": role, "parts": parts, "contextId": "c1"}


def task10(state: str = "TASK_STATE_COMPLETED") -> dict[str, Any]:
    return {
        "id": "t1",
        "contextId": "c1",
        "status": {"state": state, "timestamp": "2026-01-01T00:00:00Z"},
        "artifacts": [{"artifactId": "a1", "name": "echo", "parts": [{"text": "echo: hi"}]}],
        "history": [msg10([{"text": "hi"}])],
    }


@pytest.mark.parametrize(("p03", "p10"), PARTS)
def test_every_part_kind_crosses_from_0_3_to_1_0_and_back(p03: dict[str, Any], p10: dict[str, Any]) -> None:
    params = v03.params_to_v10("SendMessage", {"message": msg03([p03])})
    assert params["message"]["parts"] == [p10]
    assert params["message"]["role"] == "ROLE_USER"
    back = v03.params_to_v03("SendMessage", params)
    assert back["message"]["parts"] == [p03]
    assert back["message"]["kind"] == "message" and back["message"]["role"] == "user"


@pytest.mark.parametrize(("s03", "s10"), STATES)
def test_every_task_state_crosses_both_ways(s03: str, s10: str) -> None:
    t = v03.result_to_v03("GetTask", task10(s10))
    assert t["status"]["state"] == s03 and t["kind"] == "task"
    assert v03.result_to_v10("GetTask", t)["status"]["state"] == s10


def test_an_unspecified_1_0_state_is_unknown_in_0_3_and_unknown_reads_back_unspecified() -> None:
    t = v03.result_to_v03("GetTask", task10("TASK_STATE_UNSPECIFIED"))
    assert t["status"]["state"] == "unknown"
    assert v03.result_to_v10("GetTask", t)["status"].get("state", "TASK_STATE_UNSPECIFIED") == (
        "TASK_STATE_UNSPECIFIED"
    )


def test_a_send_result_is_a_bare_task_or_message_in_0_3_and_wrapped_in_1_0() -> None:
    t = v03.result_to_v03("SendMessage", {"task": task10()})
    assert t["kind"] == "task" and t["artifacts"][0]["parts"] == [{"kind": "text", "text": "echo: hi"}]
    assert t["history"][0]["role"] == "user"
    assert v03.result_to_v10("SendMessage", t) == {"task": task10()}
    m = v03.result_to_v03("SendMessage", {"message": msg10([{"text": "ok"}], "ROLE_AGENT")})
    assert m["kind"] == "message" and m["role"] == "agent"
    assert v03.result_to_v10("SendMessage", m) == {"message": msg10([{"text": "ok"}], "ROLE_AGENT")}


def test_send_configuration_maps_blocking_history_and_push() -> None:
    p = {
        "message": msg03([{"kind": "text", "text": "x"}]),
        "configuration": {
            "blocking": False,
            "historyLength": 3,
            "acceptedOutputModes": ["text/plain"],
            "pushNotificationConfig": {"url": "https://h/p", "token": "tok"},
        },
        "metadata": {"trace": "1"},
    }
    out = v03.params_to_v10("SendStreamingMessage", p)
    cfg = out["configuration"]
    assert cfg["returnImmediately"] is True and cfg["historyLength"] == 3
    assert cfg["acceptedOutputModes"] == ["text/plain"]
    assert cfg["taskPushNotificationConfig"] == {"url": "https://h/p", "token": "tok"}
    assert out["metadata"] == {"trace": "1"}
    back = v03.params_to_v03("SendStreamingMessage", out)
    assert back["configuration"]["blocking"] is False
    assert back["configuration"]["pushNotificationConfig"] == {"url": "https://h/p", "token": "tok"}


def test_get_task_history_length_crosses_and_0_means_unlimited() -> None:
    assert v03.params_to_v10("GetTask", {"id": "t1", "historyLength": 2}) == {"id": "t1", "historyLength": 2}
    assert v03.params_to_v10("GetTask", {"id": "t1", "historyLength": 0}) == {"id": "t1"}
    assert v03.params_to_v03("GetTask", {"id": "t1", "historyLength": 2}) == {"id": "t1", "historyLength": 2}
    assert v03.params_to_v03("GetTask", {"id": "t1", "tenant": "acme"}) == {"id": "t1"}


def test_cancel_and_subscribe_params_cross_both_ways() -> None:
    assert v03.params_to_v10("CancelTask", {"id": "t1", "metadata": {"why": "x"}}) == {
        "id": "t1",
        "metadata": {"why": "x"},
    }
    assert v03.params_to_v03("CancelTask", {"id": "t1"}) == {"id": "t1"}
    assert v03.params_to_v10("SubscribeToTask", {"id": "t1"}) == {"id": "t1"}
    assert v03.params_to_v03("SubscribeToTask", {"id": "t1"}) == {"id": "t1"}


def test_push_config_params_and_results_cross_both_ways() -> None:
    set03 = {
        "taskId": "t1",
        "pushNotificationConfig": {
            "id": "c1",
            "url": "https://h/p",
            "token": "tok",
            "authentication": {"schemes": ["Bearer"], "credentials": "secret"},
        },
    }
    cfg10 = {
        "taskId": "t1",
        "id": "c1",
        "url": "https://h/p",
        "token": "tok",
        "authentication": {"scheme": "Bearer", "credentials": "secret"},
    }
    assert v03.params_to_v10("CreateTaskPushNotificationConfig", set03) == cfg10
    assert v03.params_to_v03("CreateTaskPushNotificationConfig", cfg10) == set03
    assert v03.result_to_v03("CreateTaskPushNotificationConfig", cfg10) == set03
    assert v03.result_to_v10("GetTaskPushNotificationConfig", set03) == cfg10
    get03 = {"id": "t1", "pushNotificationConfigId": "c1"}
    assert v03.params_to_v10("GetTaskPushNotificationConfig", get03) == {"taskId": "t1", "id": "c1"}
    assert v03.params_to_v03("GetTaskPushNotificationConfig", {"taskId": "t1", "id": "c1"}) == get03
    assert v03.params_to_v10("DeleteTaskPushNotificationConfig", get03) == {"taskId": "t1", "id": "c1"}
    assert v03.params_to_v03("DeleteTaskPushNotificationConfig", {"taskId": "t1", "id": "c1"}) == get03
    assert v03.params_to_v10("ListTaskPushNotificationConfigs", {"id": "t1"}) == {"taskId": "t1"}
    assert v03.params_to_v03("ListTaskPushNotificationConfigs", {"taskId": "t1", "pageSize": 5}) == {
        "id": "t1"
    }


def test_push_config_listings_are_a_list_in_0_3_and_configs_in_1_0() -> None:
    cfg10 = {"taskId": "t1", "id": "c1", "url": "https://h/p"}
    listed = v03.result_to_v03("ListTaskPushNotificationConfigs", {"configs": [cfg10]})
    assert listed == [{"taskId": "t1", "pushNotificationConfig": {"id": "c1", "url": "https://h/p"}}]
    assert v03.result_to_v10("ListTaskPushNotificationConfigs", listed) == {"configs": [cfg10]}
    assert v03.result_to_v10("ListTaskPushNotificationConfigs", []) == {}
    assert v03.result_to_v03("DeleteTaskPushNotificationConfig", {}) is None
    assert v03.result_to_v10("DeleteTaskPushNotificationConfig", None) == {}


def test_stream_events_cross_with_final_on_terminal_and_interrupted_states() -> None:
    for s03, s10 in STATES:
        ev = {"statusUpdate": {"taskId": "t1", "contextId": "c1", "status": {"state": s10}}}
        out = v03.event_to_v03(ev)
        assert out["kind"] == "status-update" and out["status"]["state"] == s03
        assert out["final"] is (s03 not in ("submitted", "working"))
        assert v03.event_to_v10(out) == ev
    art = {
        "artifactUpdate": {
            "taskId": "t1",
            "contextId": "c1",
            "artifact": {"artifactId": "a", "parts": [{"text": "x"}]},
        }
    }
    out = v03.event_to_v03(art)
    assert out["kind"] == "artifact-update" and out["artifact"]["parts"] == [{"kind": "text", "text": "x"}]
    assert v03.event_to_v10(out)["artifactUpdate"]["artifact"] == art["artifactUpdate"]["artifact"]
    assert v03.event_to_v03({"task": task10()})["kind"] == "task"
    assert v03.event_to_v10(v03.event_to_v03({"task": task10()})) == {"task": task10()}
    assert v03.event_to_v03({"message": msg10([{"text": "m"}])})["kind"] == "message"


def test_errors_cross_eras_with_1_0_only_codes_as_internal_error() -> None:
    assert v03.error_to_v03({"code": -32009, "message": "nope"}) == {"code": -32603, "message": "nope"}
    assert v03.error_to_v03({"code": -32008, "message": "ext"})["code"] == -32603
    assert v03.error_to_v03({"code": -32001, "message": "Task not found"}) == {
        "code": -32001,
        "message": "Task not found",
    }
    typed = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "TASK_NOT_FOUND",
            "domain": "a2a-protocol.org",
            "metadata": {"taskId": "t1"},
        }
    ]
    assert v03.error_to_v03({"code": -32001, "message": "m", "data": typed})["data"] == {"taskId": "t1"}
    assert "data" not in v03.error_to_v03(
        {"code": -32001, "message": "m", "data": [{**typed[0], "metadata": {}}]}
    )
    gw = {"code": -32012, "message": "limit", "data": {"code": "rate_limited", "status": 429}}
    assert v03.error_to_v03(gw) == gw  # the gateway's own codes are valid JSON-RPC server errors in 0.3 too
    assert v03.error_to_v03({"message": 5}) == {"code": -32603, "message": ""}


def test_a_0_3_agent_error_becomes_1_0_with_typed_details() -> None:
    out = v03.error_to_v10({"code": -32001, "message": "gone", "data": {"taskId": "t1", "n": 2}})
    assert out["code"] == -32001 and out["message"] == "gone"
    assert out["data"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "TASK_NOT_FOUND",
            "domain": "a2a-protocol.org",
            "metadata": {"taskId": "t1", "n": "2"},
        }
    ]
    assert "data" not in v03.error_to_v10({"code": -32603, "message": "x", "data": "text"})


def card10(interfaces: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "echo",
        "description": "d",
        "version": "1",
        "supportedInterfaces": interfaces,
        "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "s", "name": "s", "description": "s", "tags": ["t"]}],
    }


def test_an_extended_card_for_a_0_3_client_names_the_json_rpc_endpoint_as_its_0_3_interface() -> None:
    c = v03.result_to_v03(
        "GetExtendedAgentCard",
        card10(
            [
                {"url": "https://gw/a2a/echo", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                {"url": "https://gw/a2a/echo/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
            ]
        ),
    )
    assert c["url"] == "https://gw/a2a/echo" and c["preferredTransport"] == "JSONRPC"
    assert c["protocolVersion"] == "0.3" and "supportedInterfaces" not in c
    assert c["skills"][0]["id"] == "s" and c["capabilities"]["streaming"] is True


def test_a_0_3_agent_card_becomes_a_1_0_card_with_supported_interfaces() -> None:
    c03 = {
        "name": "legacy",
        "description": "d",
        "version": "1",
        "url": "http://a/",
        "preferredTransport": "JSONRPC",
        "protocolVersion": "0.3.0",
        "additionalInterfaces": [{"url": "http://a/rest", "transport": "HTTP+JSON"}],
        "capabilities": {},
        "defaultInputModes": [],
        "defaultOutputModes": [],
        "skills": [],
    }
    c = v03.result_to_v10("GetExtendedAgentCard", c03)
    assert c["supportedInterfaces"][0] == {
        "url": "http://a/",
        "protocolBinding": "JSONRPC",
        "protocolVersion": "0.3.0",
    }
    assert c["supportedInterfaces"][1]["protocolBinding"] == "HTTP+JSON"


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("SendMessage", {"message": {"role": "robot"}}),
        ("SendMessage", {"message": "text"}),
        ("SendMessage", {}),
        ("SendMessage", {"message": msg03([{"kind": "file", "file": {"bytes": "!!notbase64"}}])}),
        ("GetTask", {}),
        ("GetTask", {"id": 5}),
        ("CreateTaskPushNotificationConfig", {"taskId": "t"}),
        ("GetTaskPushNotificationConfig", {"pushNotificationConfigId": "c"}),
    ],
)
def test_bad_0_3_params_are_invalid_params(method: str, params: dict[str, Any]) -> None:
    with pytest.raises(v03.BridgeError) as info:
        v03.params_to_v10(method, params)
    assert info.value.code == -32602 and info.value.message.startswith("Invalid params")


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("GetTask", {"id": 5}),
        ("SendMessage", {"message": {"role": "ROLE_BOSS"}}),
        ("CancelTask", {"bogus": 1}),
    ],
)
def test_bad_1_0_params_for_a_0_3_agent_are_invalid_params(method: str, params: dict[str, Any]) -> None:
    with pytest.raises(v03.BridgeError) as info:
        v03.params_to_v03(method, params)
    assert info.value.code == -32602


def test_list_tasks_has_no_0_3_form() -> None:
    with pytest.raises(v03.BridgeError) as info:
        v03.params_to_v03("ListTasks", {})
    assert info.value.code == -32601


def test_an_untranslatable_answer_is_an_invalid_agent_response() -> None:
    for call in (
        lambda: v03.result_to_v10("GetTask", {"kind": "task"}),
        lambda: v03.result_to_v10("SendMessage", {"kind": "banana"}),
        lambda: v03.event_to_v10({"kind": "status-update"}),
        lambda: v03.result_to_v03("GetTask", "not a task"),
        lambda: v03.event_to_v03({}),
        lambda: v03.result_to_v03("GetExtendedAgentCard", card10([])),
    ):
        with pytest.raises(v03.BridgeError) as info:
            call()
        assert info.value.code == -32006


def test_a_state_from_a_newer_1_0_reads_as_unknown_in_0_3() -> None:
    ev = {
        "statusUpdate": {"taskId": "t1", "contextId": "c1", "status": {"state": "TASK_STATE_FROM_THE_FUTURE"}}
    }
    out = v03.event_to_v03(ev)
    assert out["status"]["state"] == "unknown" and out["final"] is False


def test_the_front_door_answers_an_untranslatable_result_or_event_with_an_error_for_a_0_3_client() -> None:
    import orjson

    from agentgw.a2a.frontdoor import jsonrpc
    from agentgw.a2a.methods import GET_TASK

    body = orjson.loads(jsonrpc.result_body(7, GET_TASK, "not a task", "0.3"))
    assert body["id"] == 7 and body["error"]["code"] == -32006
    frame = jsonrpc.event_frame(7, {"nothing": 1}, "0.3")
    assert frame.startswith(b"data: ") and orjson.loads(frame[6:])["error"]["code"] == -32006
    ok = orjson.loads(jsonrpc.event_frame(7, {"statusUpdate": {"taskId": "t", "status": {}}}, "0.3")[6:])
    assert ok["result"]["kind"] == "status-update" and ok["result"]["status"]["state"] == "unknown"


def test_a_missing_a2a_sdk_is_a_clean_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from agentgw.a2a.bridges import v03_errors

    monkeypatch.setattr(v03_errors, "_loaded", [])
    monkeypatch.setitem(sys.modules, "a2a.compat.v0_3", None)  # makes the import fail as if not installed
    with pytest.raises(v03.BridgeError) as info:
        v03.params_to_v10("GetTask", {"id": "t"})
    assert info.value.code == -32603 and "unavailable" in info.value.message
    # errors need no SDK
    assert v03.error_to_v03({"code": -32009, "message": "m"}) == {"code": -32603, "message": "m"}
