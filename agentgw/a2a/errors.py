"""The A2A plane's failures and their two envelopes: a JSON-RPC error object (A2A codes -32001…-32009, the
gateway's own -32010…-32015 as on the MCP plane) and the HTTP+JSON error body (`google.rpc.Status` with an
`ErrorInfo`). The tables are a contract (docs/a2a.md): clients switch on the code and on `data`/`reason`."""

from __future__ import annotations

from typing import Any

from agentgw.errors import GatewayError
from agentgw.guardrails.engine import GuardBlocked

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
TASK_NOT_FOUND = -32001
TASK_NOT_CANCELABLE = -32002
PUSH_NOT_SUPPORTED = -32003
UNSUPPORTED_OPERATION = -32004
CONTENT_TYPE_NOT_SUPPORTED = -32005
INVALID_AGENT_RESPONSE = -32006
EXTENDED_CARD_NOT_CONFIGURED = -32007
EXTENSION_SUPPORT_REQUIRED = -32008
VERSION_NOT_SUPPORTED = -32009
# The gateway's own (the pipeline's refusals), as on the MCP plane.
UNAUTHENTICATED = -32010
PERMISSION_DENIED = -32011
LIMIT_EXCEEDED = -32012
UPSTREAM_FAILED = -32013
PAYLOAD_TOO_LARGE = -32014
AGENT_NOT_FOUND = -32015

# JSON-RPC code → (HTTP status, gRPC status name, ErrorInfo reason) for the HTTP+JSON binding (as a2a-sdk maps them).
REST: dict[int, tuple[int, str, str]] = {
    TASK_NOT_FOUND: (404, "NOT_FOUND", "TASK_NOT_FOUND"),
    TASK_NOT_CANCELABLE: (400, "FAILED_PRECONDITION", "TASK_NOT_CANCELABLE"),
    PUSH_NOT_SUPPORTED: (400, "FAILED_PRECONDITION", "PUSH_NOTIFICATION_NOT_SUPPORTED"),
    UNSUPPORTED_OPERATION: (400, "FAILED_PRECONDITION", "UNSUPPORTED_OPERATION"),
    CONTENT_TYPE_NOT_SUPPORTED: (400, "INVALID_ARGUMENT", "CONTENT_TYPE_NOT_SUPPORTED"),
    INVALID_AGENT_RESPONSE: (500, "INTERNAL", "INVALID_AGENT_RESPONSE"),
    EXTENDED_CARD_NOT_CONFIGURED: (400, "FAILED_PRECONDITION", "EXTENDED_AGENT_CARD_NOT_CONFIGURED"),
    EXTENSION_SUPPORT_REQUIRED: (400, "FAILED_PRECONDITION", "EXTENSION_SUPPORT_REQUIRED"),
    VERSION_NOT_SUPPORTED: (400, "FAILED_PRECONDITION", "VERSION_NOT_SUPPORTED"),
    INVALID_PARAMS: (400, "INVALID_ARGUMENT", "INVALID_PARAMS"),
    INVALID_REQUEST: (400, "INVALID_ARGUMENT", "INVALID_REQUEST"),
    METHOD_NOT_FOUND: (404, "NOT_FOUND", "METHOD_NOT_FOUND"),
    INTERNAL_ERROR: (500, "INTERNAL", "INTERNAL_ERROR"),
    PARSE_ERROR: (400, "INVALID_ARGUMENT", "PARSE_ERROR"),
}
_GRPC_BY_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    421: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_RPC_BY_STATUS = {
    400: INVALID_PARAMS,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: AGENT_NOT_FOUND,
    413: PAYLOAD_TOO_LARGE,
    415: CONTENT_TYPE_NOT_SUPPORTED,
    429: LIMIT_EXCEEDED,
    502: UPSTREAM_FAILED,
    503: UPSTREAM_FAILED,
    504: UPSTREAM_FAILED,
}
_RPC_BY_CODE = {"stage_failed": INTERNAL_ERROR, "internal_error": INTERNAL_ERROR}


class A2AError(GatewayError):
    """An A2A protocol error: the agent's (relayed as it came: code, message, data) or one the gateway answers
    itself (TaskNotFound for a task the caller does not own, VersionNotSupported, …). HTTP 200 on JSON-RPC, as
    a2a-sdk answers; the HTTP+JSON binding's status from REST."""

    status, code = 200, "a2a_error"

    def __init__(self, rpc_code: int, message: str, data: Any = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code or _REASONS.get(rpc_code, "a2a_error"))
        self.rpc_code = rpc_code
        self.rpc_data = data


_REASONS = {rpc: reason.lower() for rpc, (_, _, reason) in REST.items()}


def task_not_found(task_id: object) -> A2AError:
    """The one answer for a task that does not exist and for one another principal owns (existence is not told)."""
    return A2AError(
        TASK_NOT_FOUND, f"Task not found: {task_id}" if isinstance(task_id, str) else "Task not found"
    )


def as_a2a(err: GatewayError) -> GatewayError:
    """A guard's refusal of content (400 `sensitive_data`, `prompt_injection`, `content_blocked`) is the A2A
    InvalidParams error, answered as the a2a-sdk answers one (HTTP 200 on JSON-RPC, 400 INVALID_ARGUMENT on
    HTTP+JSON) with the guard's code in its ErrorInfo metadata: an SDK client raises InvalidParamsError with
    `data == {"code": ...}` instead of a bare HTTP error. Any other error is itself."""
    if isinstance(err, GuardBlocked):
        info = error_info(REST[INVALID_PARAMS][2], {"code": err.code})
        return A2AError(INVALID_PARAMS, err.message, [info], code=err.code)
    return err


def rpc_code(err: GatewayError) -> int:
    err = as_a2a(err)
    if isinstance(err, A2AError):
        return err.rpc_code
    return _RPC_BY_CODE.get(err.code) or _RPC_BY_STATUS.get(err.status, INTERNAL_ERROR)


def error_info(reason: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `google.rpc.ErrorInfo` typed detail in the A2A domain (as a2a-sdk builds them)."""
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "a2a-protocol.org",
        "metadata": metadata if metadata is not None else {},
    }


def rpc_error(err: GatewayError, task_id: str | None = None) -> dict[str, Any]:
    """The JSON-RPC error object for `err`: an agent's verbatim; an A2A error the gateway raised itself with
    `data` as a list holding its ErrorInfo (as a2a-sdk answers: clients read the reason there); the gateway's
    own refusals with its stable code in `data`."""
    err = as_a2a(err)
    if isinstance(err, A2AError):
        out: dict[str, Any] = {"code": err.rpc_code, "message": err.message}
        if err.rpc_data is not None:
            out["data"] = err.rpc_data
        elif err.rpc_code in REST and err.rpc_code != PARSE_ERROR:
            out["data"] = [error_info(REST[err.rpc_code][2])]
        return out
    data: dict[str, Any] = {"code": err.code, "status": err.status}
    if task_id is not None:
        data["task"] = task_id
    return {"code": rpc_code(err), "message": err.message, "data": data}


def http_status(err: GatewayError) -> int:
    """The HTTP status of a JSON-RPC answer carrying `err`: 200 for A2A errors (as a2a-sdk), the pipeline's own
    status for its refusals (401 with its challenge, 403, 404 unknown agent, 413, 429 with Retry-After, 5xx)."""
    return 200 if isinstance(as_a2a(err), A2AError) else err.status


def rest_error(err: GatewayError) -> tuple[int, dict[str, Any]]:
    """The HTTP+JSON binding's status and body for `err`."""
    err = as_a2a(err)
    if isinstance(err, A2AError):
        status, grpc, reason = REST.get(err.rpc_code, (500, "INTERNAL", "INTERNAL_ERROR"))
        meta = err.rpc_data if isinstance(err.rpc_data, dict) else {}
        details: list[Any] = [error_info(reason, meta)]
        if isinstance(err.rpc_data, list):  # already typed details (an agent's, relayed)
            details = err.rpc_data
        return status, {"error": {"code": status, "status": grpc, "message": err.message, "details": details}}
    status = err.status
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": err.code.upper(),
        "domain": "agentgw",
        "metadata": {"code": err.code},
    }
    body = {
        "error": {
            "code": status,
            "status": _GRPC_BY_STATUS.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"),
            "message": err.message,
            "details": [info],
        }
    }
    return status, body


def from_rest(status: int, body: Any) -> A2AError:
    """An agent's HTTP+JSON error body as the A2AError it stands for (by its ErrorInfo reason, else its status)."""
    err = body.get("error") if isinstance(body, dict) else None
    message = err.get("message") if isinstance(err, dict) and isinstance(err.get("message"), str) else ""
    details = err.get("details") if isinstance(err, dict) else None
    reason = None
    if isinstance(details, list):
        for d in details:
            if isinstance(d, dict) and isinstance(d.get("reason"), str):
                reason = d["reason"]
                break
    for rpc, (_, _, name) in REST.items():
        if name == reason:
            return A2AError(rpc, message or name, details if isinstance(details, list) else None)
    rpc = {404: TASK_NOT_FOUND, 400: INVALID_PARAMS}.get(status, INTERNAL_ERROR)
    return A2AError(
        rpc, message or f"the agent answered HTTP {status}", details if isinstance(details, list) else None
    )
