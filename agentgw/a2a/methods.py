"""The A2A operations the gateway serves: one table, by A2A 1.0 method name, with each one's Casbin action, whether
it answers with a stream, its A2A 0.3 JSON-RPC name and its HTTP+JSON route. Both front doors and the upstream
speak from this table."""

from __future__ import annotations

from dataclasses import dataclass


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

# The metadata key under which a delegated message carries the child task minted for it (also sent as the
# `x-agentgw-task` header), so an agent calling back through the gateway charges that task and its ancestors.
TASK_META_KEY = "io.agentgw/task"
