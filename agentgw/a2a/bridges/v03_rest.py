"""The A2A 0.3 HTTP+JSON binding upstream (an agent whose card offers only 0.3 REST): 1.0 params as the 0.3 REST
request (`/v1/...` paths, bodies in the 0.3 protobuf JSON), and its answers, events and errors back in 1.0 shape.
0.3 REST speaks the 0.3 protobuf messages (not the 0.3 JSON-RPC shapes), so this goes 1.0 → 0.3 pydantic → 0.3
protobuf with the a2a-sdk's `conversions` and `proto_utils`, as the SDK's own 0.3 REST client does."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote, urlencode

import orjson

from agentgw.a2a.bridges.v03 import _guard, _parse, _to_dict
from agentgw.a2a.bridges.v03_errors import INVALID_AGENT_RESPONSE, INVALID_PARAMS, BridgeError, sdk
from agentgw.a2a.methods import Method

# A 0.3 REST error body of the a2a-sdk 0.3 servers: {"type": "<ErrorClass>", "message": ...}.
_ERROR_TYPES = {
    "TaskNotFoundError": -32001,
    "TaskNotCancelableError": -32002,
    "PushNotificationNotSupportedError": -32003,
    "UnsupportedOperationError": -32004,
    "ContentTypeNotSupportedError": -32005,
    "InvalidAgentResponseError": -32006,
    "AuthenticatedExtendedCardNotConfiguredError": -32007,
    "InvalidParamsError": -32602,
    "InvalidRequestError": -32600,
    "MethodNotFoundError": -32601,
    "InternalError": -32603,
}


def _pb03() -> tuple[Any, Any]:
    from a2a.compat.v0_3 import a2a_v0_3_pb2, proto_utils

    return a2a_v0_3_pb2, proto_utils


def _seg(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BridgeError(INVALID_PARAMS, "Invalid params: a task or push config id is required.")
    return quote(value, safe="")


def request(base: str, method: Method, params: dict[str, Any]) -> tuple[str, str, bytes | None]:
    """The verb, URL and body of `method` (1.0 params) on a 0.3 HTTP+JSON agent at `base`."""
    s = sdk()
    pb03, pu = _pb03()
    root = base.rstrip("/") + "/v1"
    name = method.name

    def body(msg: Any) -> bytes:
        return orjson.dumps(s.MessageToDict(msg, preserving_proto_field_name=False))

    def run() -> tuple[str, str, bytes | None]:
        if name in ("SendMessage", "SendStreamingMessage"):
            req = s.conv.to_compat_send_message_request(_parse(params, s.pb.SendMessageRequest, False), 0)
            proto = pb03.SendMessageRequest(
                request=pu.ToProto.message(req.params.message),
                configuration=pu.ToProto.message_send_configuration(req.params.configuration),
                metadata=pu.ToProto.metadata(req.params.metadata),
            )
            path = "/message:send" if name == "SendMessage" else "/message:stream"
            return "POST", root + path, body(proto)
        if name == "GetTask":
            core = _parse(params, s.pb.GetTaskRequest, False)
            query = f"?{urlencode({'historyLength': core.history_length})}" if core.history_length else ""
            return "GET", f"{root}/tasks/{_seg(core.id)}{query}", None
        if name == "CancelTask":
            return "POST", f"{root}/tasks/{_seg(params.get('id'))}:cancel", b"{}"
        if name == "SubscribeToTask":
            return "POST", f"{root}/tasks/{_seg(params.get('id'))}:subscribe", b"{}"
        task = _seg(params.get("taskId"))
        if name == "CreateTaskPushNotificationConfig":
            core = _parse(params, s.pb.TaskPushNotificationConfig, False)
            compat = s.conv.to_compat_create_task_push_notification_config_request(core, 0).params
            proto = pb03.CreateTaskPushNotificationConfigRequest(
                parent=f"tasks/{core.task_id}",
                config_id=compat.push_notification_config.id or "",
                config=pu.ToProto.task_push_notification_config(compat),
            )
            return "POST", f"{root}/tasks/{task}/pushNotificationConfigs", body(proto)
        if name == "ListTaskPushNotificationConfigs":
            return "GET", f"{root}/tasks/{task}/pushNotificationConfigs", None
        verb = {"GetTaskPushNotificationConfig": "GET", "DeleteTaskPushNotificationConfig": "DELETE"}[name]
        return verb, f"{root}/tasks/{task}/pushNotificationConfigs/{_seg(params.get('id'))}", None

    if name == "GetExtendedAgentCard":
        return "GET", root + "/card", None
    if name == "ListTasks":
        raise BridgeError(-32004, "The agent speaks A2A 0.3, which has no ListTasks.")
    return cast(tuple[str, str, bytes | None], _guard(INVALID_PARAMS, "Invalid params", run))


def result_to_v10(method: str, doc: Any) -> Any:
    """A 0.3 REST answer (0.3 protobuf JSON) to `method` in 1.0 shape; BridgeError(-32006) if it does not parse."""
    s = sdk()
    pb03, pu = _pb03()
    conv = s.conv

    def run() -> Any:
        if method == "SendMessage":
            resp = _parse(doc, pb03.SendMessageResponse, True)
            which = resp.WhichOneof("payload")
            if which == "task":
                return {"task": _to_dict(conv.to_core_task(pu.FromProto.task(resp.task)))}
            if which == "msg":
                return {"message": _to_dict(conv.to_core_message(pu.FromProto.message(resp.msg)))}
            raise ValueError("neither a task nor a message")
        if method in ("GetTask", "CancelTask"):
            return _to_dict(conv.to_core_task(pu.FromProto.task(_parse(doc, pb03.Task, True))))
        if method in ("CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig"):
            cfg = pu.FromProto.task_push_notification_config(
                _parse(doc, pb03.TaskPushNotificationConfig, True)
            )
            return _to_dict(conv.to_core_task_push_notification_config(cfg))
        if method == "ListTaskPushNotificationConfigs":
            listed = _parse(doc, pb03.ListTaskPushNotificationConfigResponse, True)
            res = pu.FromProto.list_task_push_notification_config_response(listed)
            return _to_dict(conv.to_core_list_task_push_notification_config_response(res))
        if method == "DeleteTaskPushNotificationConfig":
            return {}
        if (
            method == "GetExtendedAgentCard"
        ):  # the SDK's 0.3 REST serves the 0.3 JSON card, older ones protobuf
            try:
                card = s.t03.AgentCard.model_validate(doc)
            except ValueError:
                card = pu.FromProto.agent_card(_parse(doc, pb03.AgentCard, True))
            return _to_dict(conv.to_core_agent_card(card))
        return doc

    return _guard(INVALID_AGENT_RESPONSE, "The agent's A2A 0.3 answer is not valid", run)


def event_to_v10(doc: dict[str, Any]) -> dict[str, Any]:
    """A 0.3 REST stream event (a 0.3 protobuf StreamResponse in JSON) as a 1.0 StreamResponse."""
    s = sdk()
    pb03, pu = _pb03()

    def run() -> dict[str, Any]:
        event = pu.FromProto.stream_response(_parse(doc, pb03.StreamResponse, True))
        wrapped = s.t03.SendStreamingMessageSuccessResponse(id=0, result=event)
        return _to_dict(s.conv.to_core_stream_response(wrapped))

    return cast(dict[str, Any], _guard(INVALID_AGENT_RESPONSE, "The agent's A2A 0.3 event is not valid", run))


def error_code(body: Any) -> tuple[int, str] | None:
    """(JSON-RPC code, message) of an a2a-sdk 0.3 REST error body (`{"type", "message"}`), else None (the body is a
    google.rpc.Status, read by the caller like a 1.0 one)."""
    if isinstance(body, dict) and isinstance(body.get("type"), str) and body["type"] in _ERROR_TYPES:
        message = body.get("message")
        return _ERROR_TYPES[body["type"]], message if isinstance(message, str) else body["type"]
    return None
