"""The A2A 0.3 HTTP+JSON binding, both ways. Upstream (an agent whose card offers only 0.3 REST): 1.0 params as the
0.3 REST request (`/v1/...` paths, bodies in the 0.3 protobuf JSON), its answers, events and errors back in 1.0
shape. Front door (a 0.3 REST client): its request as 1.0 params, 1.0 answers and events as 0.3 protobuf JSON.
0.3 REST speaks the 0.3 protobuf messages (not the 0.3 JSON-RPC shapes), so this goes 1.0 → 0.3 pydantic → 0.3
protobuf with the a2a-sdk's `conversions` and `proto_utils`, as the SDK's own 0.3 REST client does."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote, urlencode

import orjson

from agentgw.a2a.bridges.v03 import _FINAL_STATES, _guard, _parse, _to_dict
from agentgw.a2a.bridges.v03_errors import (
    INVALID_AGENT_RESPONSE,
    INVALID_PARAMS,
    BridgeError,
    card_to_v03,
    sdk,
)
from agentgw.a2a.methods import Method

# A 0.3 REST error body as the a2a-sdk's 0.3 REST client reads it: {"type": "<error class>", "message": ...}, the
# class named as in the SDK's JSON_RPC_ERROR_CODE_MAP (the client maps the name back to its exception).
ERROR_TYPE_OF = {
    -32001: "TaskNotFoundError",
    -32002: "TaskNotCancelableError",
    -32003: "PushNotificationNotSupportedError",
    -32004: "UnsupportedOperationError",
    -32005: "ContentTypeNotSupportedError",
    -32006: "InvalidAgentResponseError",
    -32007: "ExtendedAgentCardNotConfiguredError",
    -32008: "ExtensionSupportRequiredError",
    -32009: "VersionNotSupportedError",
    -32602: "InvalidParamsError",
    -32600: "InvalidRequestError",
    -32601: "MethodNotFoundError",
    -32603: "InternalError",
    -32700: "JSONParseError",
}
# Read from a 0.3 agent: those names, and the 0.3 SDK's name for -32007.
_ERROR_TYPES = {name: code for code, name in ERROR_TYPE_OF.items()} | {
    "AuthenticatedExtendedCardNotConfiguredError": -32007
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


# -- front door: a 0.3 REST client ----------------------------------------------------------------------------------


def _body(body: bytes, cls: Any) -> Any:
    """A 0.3 REST request body (JSON, already depth-checked) as the 0.3 protobuf `cls`; unknown fields are ignored
    as the a2a-sdk's 0.3 REST server ignores them. BridgeError(-32700) for a body that is not a JSON object,
    (-32602) for fields of the wrong type."""
    s = sdk()
    try:
        doc = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise BridgeError(-32700, "The request body is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise BridgeError(-32700, "The request body must be a JSON object.")
    return _guard(
        INVALID_PARAMS, "Invalid params", lambda: s.ParseDict(doc, cls(), ignore_unknown_fields=True)
    )


def client_params(method: str, ids: tuple[str, ...], query: dict[str, str], body: bytes) -> dict[str, Any]:
    """A 0.3 REST client's request (path ids, query, body) for `method` (its 1.0 name) as 1.0 params, read as the
    a2a-sdk's REST03Handler reads it; BridgeError(-32602 / -32700) for bad input."""
    s = sdk()
    pb03, pu = _pb03()
    t, conv = s.t03, s.conv
    if method in ("SendMessage", "SendStreamingMessage"):
        req = _body(body, pb03.SendMessageRequest)
        if not req.HasField("request"):
            raise BridgeError(INVALID_PARAMS, "Invalid params: 'request' (the message) is required.")

        def send() -> dict[str, Any]:
            rpc = t.SendMessageRequest(id="", params=pu.FromProto.message_send_params(req))
            return _to_dict(conv.to_core_send_message_request(rpc))

        # Read as the SDK's 0.3 REST server reads it: no `configuration` waits for the task; in one, `blocking` is a
        # protobuf bool (absent = false, an answer at once), so a client that wants to wait says `blocking: true`.
        return cast(dict[str, Any], _guard(INVALID_PARAMS, "Invalid params", send))
    if method == "GetTask":
        params: dict[str, Any] = {"id": ids[0]}
        if query.get("historyLength"):
            try:
                params["historyLength"] = int(query["historyLength"])
            except ValueError:
                raise BridgeError(
                    INVALID_PARAMS, "Invalid params: 'historyLength' must be an integer."
                ) from None
            if params["historyLength"] < 0:
                raise BridgeError(INVALID_PARAMS, "Invalid params: 'historyLength' must not be negative.")
        return params
    if method in ("CancelTask", "SubscribeToTask"):
        return {"id": ids[0]}
    if method == "CreateTaskPushNotificationConfig":
        req = _body(body, pb03.CreateTaskPushNotificationConfigRequest)
        # The path names the task (the SDK's server overrides `parent` with it); `configId` names the config
        # when the config itself carries no id.
        req.parent = f"tasks/{ids[0]}"
        if req.config_id and not req.config.push_notification_config.id:
            req.config.push_notification_config.id = req.config_id
        if not req.config.push_notification_config.url:
            raise BridgeError(
                INVALID_PARAMS, "Invalid params: 'config.pushNotificationConfig.url' is required."
            )

        def create() -> dict[str, Any]:
            cfg = pu.FromProto.task_push_notification_config_request(req)
            cfg.task_id = ids[0]
            rpc = t.SetTaskPushNotificationConfigRequest(id="", params=cfg)
            return _to_dict(conv.to_core_create_task_push_notification_config_request(rpc))

        return cast(dict[str, Any], _guard(INVALID_PARAMS, "Invalid params", create))
    if method == "ListTaskPushNotificationConfigs":
        return {"taskId": ids[0]}
    if method in ("GetTaskPushNotificationConfig", "DeleteTaskPushNotificationConfig"):
        return {"taskId": ids[0], "id": ids[1]}
    return {}  # GetExtendedAgentCard


def client_result(method: str, result: Any) -> Any:
    """A 1.0 result of `method` as the a2a-sdk's 0.3 REST server answers it (0.3 protobuf JSON; the extended
    card as the 0.3 JSON card); BridgeError(-32006) when the agent's answer has no 0.3 form."""
    s = sdk()
    pb03, pu = _pb03()
    pb, conv = s.pb, s.conv

    def out(msg: Any) -> dict[str, Any]:
        return cast(dict[str, Any], s.MessageToDict(msg))

    def run() -> Any:
        if method == "SendMessage":
            sent = conv.to_compat_send_message_response(_parse(result, pb.SendMessageResponse, True))
            return out(pu.ToProto.task_or_message(sent.root.result))
        if method in ("GetTask", "CancelTask"):
            return out(pu.ToProto.task(conv.to_compat_task(_parse(result, pb.Task, True))))
        if method in ("CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig"):
            cfg = conv.to_compat_task_push_notification_config(
                _parse(result, pb.TaskPushNotificationConfig, True)
            )
            return out(pu.ToProto.task_push_notification_config(cfg))
        if method == "ListTaskPushNotificationConfigs":
            listed = _parse(result, pb.ListTaskPushNotificationConfigsResponse, True)
            configs = [
                pu.ToProto.task_push_notification_config(conv.to_compat_task_push_notification_config(c))
                for c in listed.configs
            ]
            return out(pb03.ListTaskPushNotificationConfigResponse(configs=configs))
        if method == "DeleteTaskPushNotificationConfig":
            return {}
        if method == "GetExtendedAgentCard":
            return card_to_v03(result)
        raise ValueError(f"{method} has no A2A 0.3 REST form")

    return _guard(INVALID_AGENT_RESPONSE, "The agent's answer has no A2A 0.3 form", run)


def client_event(event: dict[str, Any]) -> dict[str, Any]:
    """A 1.0 StreamResponse as the 0.3 REST stream event (a 0.3 protobuf StreamResponse in JSON), `final` set on
    the status updates where a 0.3 stream ends; BridgeError(-32006) when it has no 0.3 form."""
    s = sdk()
    _, pu = _pb03()

    def run() -> dict[str, Any]:
        core = _parse(event, s.pb.StreamResponse, True)
        if core.WhichOneof("payload") is None:
            raise ValueError("not a StreamResponse (task, message, statusUpdate or artifactUpdate)")
        ev = s.conv.to_compat_stream_response(core).result
        if isinstance(
            ev, s.t03.TaskStatusUpdateEvent
        ):  # where a 0.3 stream ends, as the JSON-RPC bridge says
            ev.final = ev.status.state.value in _FINAL_STATES
        return cast(dict[str, Any], s.MessageToDict(pu.ToProto.stream_response(ev)))

    return cast(dict[str, Any], _guard(INVALID_AGENT_RESPONSE, "The agent's event has no A2A 0.3 form", run))
