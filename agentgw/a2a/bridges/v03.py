"""A2A 0.3 ↔ 1.0 on wire JSON dicts: params, results, stream events and errors, both ways (a 0.3 client in front
of a 1.0 agent, a 1.0 client in front of a 0.3 agent). Shapes go through the a2a-sdk's own converters
(`a2a.compat.v0_3.conversions`: 0.3 pydantic models ↔ 1.0 protobuf); errors and cards are handled in `v03_errors`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from agentgw.a2a.bridges.v03_errors import (
    INVALID_AGENT_RESPONSE,
    INVALID_PARAMS,
    BridgeError,
    card_to_v03,
    error_to_v03,
    error_to_v10,
    sdk,
)
from agentgw.a2a.methods import METHODS

__all__ = [
    "BridgeError",
    "error_to_v03",
    "error_to_v10",
    "event_to_v03",
    "event_to_v10",
    "params_to_v03",
    "params_to_v10",
    "result_to_v03",
    "result_to_v10",
]

# 0.3 status updates carry `final`: the SDK's converter sets it on terminal states only, but a 0.3 stream also ends
# when the agent needs the client (input or auth required), and 0.3 clients stop reading on `final`.
_FINAL_STATES = frozenset({"completed", "canceled", "failed", "rejected", "input-required", "auth-required"})


def _guard(code: int, what: str, fn: Callable[[], Any]) -> Any:
    """`fn()`, with any failure of the SDK's validation or conversion as a clean BridgeError (never a 500)."""
    try:
        return fn()
    except BridgeError:
        raise
    except Exception as exc:  # pydantic ValidationError, protobuf ParseError, ValueError, KeyError, ...
        raise BridgeError(code, f"{what}: {_detail(exc)}") from None


def _detail(exc: Exception) -> str:
    """The first problem, where it is (a pydantic error names the field path), in one short line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return f"{where}: {first.get('msg', '')}"[:200] if where else str(first.get("msg", ""))[:200]
        except Exception:  # not a pydantic error after all
            pass
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _to_dict(message: Any) -> dict[str, Any]:
    s = sdk()
    return cast(dict[str, Any], s.MessageToDict(message, preserving_proto_field_name=False))


def _parse(doc: Any, cls: Any, lenient: bool) -> Any:
    s = sdk()
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    return s.ParseDict(doc, cls(), ignore_unknown_fields=lenient)


def _v03_name(method: str) -> str:
    m = METHODS.get(method)
    if m is None or m.v03 is None:
        raise BridgeError(-32601, f"Method not found: A2A 0.3 has no {method}.")
    return m.v03


# -- requests ------------------------------------------------------------------------------------------------------


def params_to_v10(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A 0.3 client's params for `method` (named by its 1.0 name) as 1.0 params, or BridgeError(-32602)."""
    s = sdk()
    name = _v03_name(method)
    if method == "GetExtendedAgentCard":
        return {}
    t, conv = s.t03, s.conv
    models: dict[str, tuple[Any, Callable[[Any], Any]]] = {
        "SendMessage": (t.SendMessageRequest, conv.to_core_send_message_request),
        # a streaming request's params are the same MessageSendParams
        "SendStreamingMessage": (t.SendStreamingMessageRequest, conv.to_core_send_message_request),
        "GetTask": (t.GetTaskRequest, conv.to_core_get_task_request),
        "CancelTask": (t.CancelTaskRequest, conv.to_core_cancel_task_request),
        "SubscribeToTask": (t.TaskResubscriptionRequest, conv.to_core_subscribe_to_task_request),
        "CreateTaskPushNotificationConfig": (
            t.SetTaskPushNotificationConfigRequest,
            conv.to_core_create_task_push_notification_config_request,
        ),
        "GetTaskPushNotificationConfig": (
            t.GetTaskPushNotificationConfigRequest,
            conv.to_core_get_task_push_notification_config_request,
        ),
        "ListTaskPushNotificationConfigs": (
            t.ListTaskPushNotificationConfigRequest,
            conv.to_core_list_task_push_notification_config_request,
        ),
        "DeleteTaskPushNotificationConfig": (
            t.DeleteTaskPushNotificationConfigRequest,
            conv.to_core_delete_task_push_notification_config_request,
        ),
    }
    model, to_core = models[method]

    def run() -> dict[str, Any]:
        req = model.model_validate({"jsonrpc": "2.0", "id": 0, "method": name, "params": params})
        return _to_dict(to_core(req))

    return cast(dict[str, Any], _guard(INVALID_PARAMS, "Invalid params", run))


def params_to_v03(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """1.0 params for `method` as the params of its 0.3 request (the gateway calling a 0.3-only agent), or
    BridgeError(-32602). 0.3 has no tenant: it is dropped."""
    s = sdk()
    _v03_name(method)
    if method == "GetExtendedAgentCard":
        return {}
    pb, conv = s.pb, s.conv
    shapes: dict[str, tuple[Any, Callable[[Any, int], Any]]] = {
        "SendMessage": (pb.SendMessageRequest, conv.to_compat_send_message_request),
        "SendStreamingMessage": (pb.SendMessageRequest, conv.to_compat_send_message_request),
        "GetTask": (pb.GetTaskRequest, conv.to_compat_get_task_request),
        "CancelTask": (pb.CancelTaskRequest, conv.to_compat_cancel_task_request),
        "SubscribeToTask": (pb.SubscribeToTaskRequest, conv.to_compat_subscribe_to_task_request),
        "CreateTaskPushNotificationConfig": (
            pb.TaskPushNotificationConfig,
            conv.to_compat_create_task_push_notification_config_request,
        ),
        "GetTaskPushNotificationConfig": (
            pb.GetTaskPushNotificationConfigRequest,
            conv.to_compat_get_task_push_notification_config_request,
        ),
        "ListTaskPushNotificationConfigs": (
            pb.ListTaskPushNotificationConfigsRequest,
            conv.to_compat_list_task_push_notification_config_request,
        ),
        "DeleteTaskPushNotificationConfig": (
            pb.DeleteTaskPushNotificationConfigRequest,
            conv.to_compat_delete_task_push_notification_config_request,
        ),
    }
    cls, to_compat = shapes[method]

    def run() -> dict[str, Any]:
        return cast(dict[str, Any], _dump(to_compat(_parse(params, cls, lenient=False), 0).params))

    return cast(dict[str, Any], _guard(INVALID_PARAMS, "Invalid params", run))


# -- results -------------------------------------------------------------------------------------------------------


def result_to_v03(method: str, result: Any) -> Any:
    """A 1.0 result of `method` as a 0.3 client expects it: a bare Task or Message for a send, a 0.3 push config,
    a list for the push config listing, null for a delete, a 0.3 card. BridgeError(-32006) if it does not parse."""
    s = sdk()
    pb, conv = s.pb, s.conv

    def run() -> Any:
        if method == "SendMessage":
            return _dump(
                conv.to_compat_send_message_response(_parse(result, pb.SendMessageResponse, True)).root.result
            )
        if method in ("GetTask", "CancelTask"):
            return _dump(conv.to_compat_task(_parse(result, pb.Task, True)))
        if method in ("CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig"):
            core = _parse(result, pb.TaskPushNotificationConfig, True)
            return _dump(conv.to_compat_task_push_notification_config(core))
        if method == "ListTaskPushNotificationConfigs":
            core = _parse(result, pb.ListTaskPushNotificationConfigsResponse, True)
            return [_dump(conv.to_compat_task_push_notification_config(c)) for c in core.configs]
        if method == "DeleteTaskPushNotificationConfig":
            return None
        if method == "GetExtendedAgentCard":
            return card_to_v03(result)
        return result  # the streaming methods answer with events; ListTasks has no 0.3 form

    return _guard(INVALID_AGENT_RESPONSE, "The agent's answer has no A2A 0.3 form", run)


def result_to_v10(method: str, result: Any) -> Any:
    """A 0.3 agent's result of `method` in 1.0 shape (a send's bare Task/Message wrapped as `{task}`/`{message}`,
    push configs flattened, the listing as `{configs}`, a 1.0 card). BridgeError(-32006) if it is not valid 0.3."""
    s = sdk()
    t, conv = s.t03, s.conv

    def run() -> Any:
        if method == "SendMessage":
            ok = t.SendMessageSuccessResponse(id=0, result=result)
            return _to_dict(conv.to_core_send_message_response(t.SendMessageResponse(root=ok)))
        if method in ("GetTask", "CancelTask"):
            return _to_dict(conv.to_core_task(t.Task.model_validate(result)))
        if method in ("CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig"):
            cfg = t.TaskPushNotificationConfig.model_validate(result)
            return _to_dict(conv.to_core_task_push_notification_config(cfg))
        if method == "ListTaskPushNotificationConfigs":
            ok = t.ListTaskPushNotificationConfigSuccessResponse(id=0, result=result or [])
            res = t.ListTaskPushNotificationConfigResponse(root=ok)
            return _to_dict(conv.to_core_list_task_push_notification_config_response(res))
        if method == "DeleteTaskPushNotificationConfig":
            return {}
        if method == "GetExtendedAgentCard":
            return _to_dict(conv.to_core_agent_card(t.AgentCard.model_validate(result)))
        return result

    return _guard(INVALID_AGENT_RESPONSE, "The agent's A2A 0.3 answer is not valid", run)


# -- stream events -------------------------------------------------------------------------------------------------


def event_to_v03(event: dict[str, Any]) -> dict[str, Any]:
    """A 1.0 StreamResponse (`{task}|{message}|{statusUpdate}|{artifactUpdate}`) as the 0.3 event (`kind`
    task | message | status-update with `final` | artifact-update). BridgeError(-32006) if it does not parse."""
    s = sdk()

    def run() -> dict[str, Any]:
        core = _parse(event, s.pb.StreamResponse, True)
        if core.WhichOneof("payload") is None:
            raise ValueError("not a StreamResponse (task, message, statusUpdate or artifactUpdate)")
        out = cast(dict[str, Any], _dump(s.conv.to_compat_stream_response(core).result))
        if out.get("kind") == "status-update":
            out["final"] = (out.get("status") or {}).get("state") in _FINAL_STATES
        return out

    return cast(dict[str, Any], _guard(INVALID_AGENT_RESPONSE, "The agent's event has no A2A 0.3 form", run))


def event_to_v10(event: dict[str, Any]) -> dict[str, Any]:
    """A 0.3 agent's stream event (by its `kind`) as a 1.0 StreamResponse (`final` has no 1.0 field: the stream's
    end says it). BridgeError(-32006) if it is not a valid 0.3 event."""
    s = sdk()

    def run() -> dict[str, Any]:
        wrapped = s.t03.SendStreamingMessageSuccessResponse.model_validate({"id": 0, "result": event})
        return _to_dict(s.conv.to_core_stream_response(wrapped))

    return cast(dict[str, Any], _guard(INVALID_AGENT_RESPONSE, "The agent's A2A 0.3 event is not valid", run))
