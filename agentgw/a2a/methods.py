"""The A2A operations the gateway serves: one table, by A2A 1.0 method name, with each one's Casbin action, whether
it answers with a stream, its A2A 0.3 JSON-RPC name and its HTTP+JSON route. Both front doors and the upstream
speak from this table, and `canonical()` spells a request's params the one way the gateway's checks read them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentgw.a2a.errors import INVALID_PARAMS, A2AError


@dataclass(frozen=True, slots=True)
class Method:
    name: str  # the A2A 1.0 JSON-RPC method (also the audit record's operation)
    action: str  # the Casbin action on `a2a:<agent>`: call (send, stream, cancel) | read
    streams: bool
    v03: str | None  # the A2A 0.3 JSON-RPC name (None: 0.3 has no such operation)
    verb: (
        str  # HTTP+JSON binding: verb and path template under `/rest` ({id}: task id, {pid}: push config id)
    )
    path: str
    task_param: str | None = None  # the params field naming an existing task (checked for ownership)
    sends: bool = False  # a delegation: one `agent_calls` unit, a child task, a message to stamp


SEND = Method("SendMessage", "call", False, "message/send", "POST", "/message:send", sends=True)
STREAM = Method("SendStreamingMessage", "call", True, "message/stream", "POST", "/message:stream", sends=True)
GET_TASK = Method("GetTask", "read", False, "tasks/get", "GET", "/tasks/{id}", "id")
LIST_TASKS = Method("ListTasks", "read", False, None, "GET", "/tasks")
CANCEL = Method("CancelTask", "call", False, "tasks/cancel", "POST", "/tasks/{id}:cancel", "id")
SUBSCRIBE = Method(
    "SubscribeToTask", "read", True, "tasks/resubscribe", "POST", "/tasks/{id}:subscribe", "id"
)
PUSH_CREATE = Method(
    "CreateTaskPushNotificationConfig",
    "call",
    False,
    "tasks/pushNotificationConfig/set",
    "POST",
    "/tasks/{id}/pushNotificationConfigs",
    "taskId",
)
PUSH_GET = Method(
    "GetTaskPushNotificationConfig",
    "read",
    False,
    "tasks/pushNotificationConfig/get",
    "GET",
    "/tasks/{id}/pushNotificationConfigs/{pid}",
    "taskId",
)
PUSH_LIST = Method(
    "ListTaskPushNotificationConfigs",
    "read",
    False,
    "tasks/pushNotificationConfig/list",
    "GET",
    "/tasks/{id}/pushNotificationConfigs",
    "taskId",
)
PUSH_DELETE = Method(
    "DeleteTaskPushNotificationConfig",
    "call",
    False,
    "tasks/pushNotificationConfig/delete",
    "DELETE",
    "/tasks/{id}/pushNotificationConfigs/{pid}",
    "taskId",
)
EXTENDED_CARD = Method(
    "GetExtendedAgentCard", "read", False, "agent/getAuthenticatedExtendedCard", "GET", "/extendedAgentCard"
)

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        SEND,
        STREAM,
        GET_TASK,
        LIST_TASKS,
        CANCEL,
        SUBSCRIBE,
        PUSH_CREATE,
        PUSH_GET,
        PUSH_LIST,
        PUSH_DELETE,
        EXTENDED_CARD,
    )
}
V03_METHODS: dict[str, Method] = {m.v03: m for m in METHODS.values() if m.v03}
PUSH_METHODS = frozenset({PUSH_CREATE.name, PUSH_GET.name, PUSH_LIST.name, PUSH_DELETE.name})

# Each method's params as the A2A 1.0 protobuf message an a2a-sdk agent parses them into (a2a.types).
REQUEST_TYPES = {
    SEND.name: "SendMessageRequest",
    STREAM.name: "SendMessageRequest",
    GET_TASK.name: "GetTaskRequest",
    LIST_TASKS.name: "ListTasksRequest",
    CANCEL.name: "CancelTaskRequest",
    SUBSCRIBE.name: "SubscribeToTaskRequest",
    PUSH_CREATE.name: "TaskPushNotificationConfig",
    PUSH_GET.name: "GetTaskPushNotificationConfigRequest",
    PUSH_LIST.name: "ListTaskPushNotificationConfigsRequest",
    PUSH_DELETE.name: "DeleteTaskPushNotificationConfigRequest",
    EXTENDED_CARD.name: "GetExtendedAgentCardRequest",
}


def canonical(method: Method, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with every field under its JSON name (`taskId`, `contextId`, `referenceTaskIds`, ...). An agent
    parses params with protobuf's json_format, which also accepts each field's proto name (`task_id`): the
    ownership checks read the JSON names, so a request must reach them, and the agent, spelled that one way.
    A field given under both names is refused (json_format would refuse it too). Free-form values (metadata,
    data parts: google.protobuf types) and unknown keys are left as they came."""
    from a2a import types

    desc = getattr(types, REQUEST_TYPES[method.name]).DESCRIPTOR
    return _canonical(desc, params, "")


def _canonical(desc: Any, obj: dict[str, Any], at: str) -> dict[str, Any]:  # desc: a protobuf Descriptor
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}  # field (JSON name) -> the key it came under
    by_json = {f.json_name: f for f in desc.fields}
    for key, value in obj.items():
        field = by_json.get(key) or desc.fields_by_name.get(key)
        if field is None:
            out[key] = value
            continue
        name = field.json_name
        if name in seen:
            raise A2AError(
                INVALID_PARAMS, f"Invalid params: '{at}{name}' is given twice ('{seen[name]}', '{key}')."
            )
        seen[name] = key
        inner = field.message_type
        if inner is not None and not inner.full_name.startswith("google.protobuf."):
            if isinstance(value, dict):
                value = _canonical(inner, value, f"{at}{name}.")
            elif isinstance(value, list):
                value = [_canonical(inner, v, f"{at}{name}.") if isinstance(v, dict) else v for v in value]
        out[name] = value
    return out


# The metadata key under which a delegated message carries the child task minted for it (also sent as the
# `x-agentgw-task` header), so an agent calling back through the gateway charges that task and its ancestors.
TASK_META_KEY = "io.agentgw/task"
