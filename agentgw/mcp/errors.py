"""The MCP plane's failures and their JSON-RPC shape: which GatewayError becomes which JSON-RPC error code.
The table is a contract (docs/mcp.md): clients may switch on `error.code` and on `error.data.code`."""

from __future__ import annotations

from typing import Any

import orjson
from mcp.shared.exceptions import MCPError

from agentgw.errors import GatewayError, NotFound, UpstreamError
from agentgw.http import Message, Send

# JSON-RPC 2.0 and MCP codes the plane emits itself.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Gateway codes: JSON-RPC leaves -32000..-32099 to implementations; MCP reserves -32020..-32099 for the spec
# and the SDK uses -32000 (connection closed) and -32001 (request timeout), so the gateway lives in -32010..-32019.
UPSTREAM_TIMEOUT = -32001  # the same meaning as the SDK's REQUEST_TIMEOUT
UNAUTHENTICATED = -32010
PERMISSION_DENIED = -32011
LIMIT_EXCEEDED = -32012
UPSTREAM_FAILED = -32013
PAYLOAD_TOO_LARGE = -32014

_BY_STATUS = {
    400: INVALID_PARAMS,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: INVALID_PARAMS,  # the spec's answer to an unknown tool, prompt or resource
    413: PAYLOAD_TOO_LARGE,
    429: LIMIT_EXCEEDED,
    502: UPSTREAM_FAILED,
    503: UPSTREAM_FAILED,
    504: UPSTREAM_TIMEOUT,
}
_BY_CODE = {"stage_failed": INTERNAL_ERROR, "internal_error": INTERNAL_ERROR}


class UnknownTool(NotFound):
    code = "unknown_tool"


class UnknownPrompt(NotFound):
    code = "unknown_prompt"


class UnknownResource(NotFound):
    code = "unknown_resource"


class ServerUnavailable(UpstreamError):
    """The MCP server cannot be reached right now (down, restarting, or backing off after a failure)."""

    status, code = 503, "mcp_server_unavailable"


class UpstreamRPCError(GatewayError):
    """The MCP server answered with a JSON-RPC error: relayed to the caller unchanged (code, message, data)."""

    status, code = 502, "upstream_rpc_error"

    def __init__(self, rpc_code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        self.rpc_data = data


def rpc_code(err: GatewayError) -> int:
    if isinstance(err, UpstreamRPCError):
        return err.rpc_code
    return _BY_CODE.get(err.code) or _BY_STATUS.get(err.status, INTERNAL_ERROR)


def to_mcp_error(err: GatewayError, task_id: str | None = None) -> MCPError:
    """The JSON-RPC error a caller sees for `err`: upstream errors verbatim, gateway errors by the table above,
    with the stable agentgw code (and the task) in `data`."""
    if isinstance(err, UpstreamRPCError):
        return MCPError(err.rpc_code, err.message, err.rpc_data)
    data: dict[str, Any] = {"code": err.code, "status": err.status}
    if task_id:
        data["task"] = task_id
    for name, value in err.headers.items():  # what the task has left, and when to retry (budgets)
        key = name.lower()
        if key.startswith(_REMAINING):
            data.setdefault("remaining", {})[key[len(_REMAINING) :]] = _number(value)
        elif key == "retry-after":
            data["retryAfter"] = _number(value)
    return MCPError(rpc_code(err), err.message, data)


_REMAINING = "x-agentgw-budget-remaining-"


def _number(value: str) -> int | float | str:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def error_body(code: int, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-RPC error response with `id: null`, for refusals before a request reaches the protocol layer."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": None, "error": error}


_REFUSALS = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
}


def jsonrpc_refusals(send: Send) -> Send:
    """`send`, with every error answer (status >= 400) in the JSON-RPC envelope: the SDK server refuses some
    requests in plain text ("Invalid Content-Type header") or with an empty body, and leaves `data` out of
    others; those are rewritten (its message kept, `data` = the stable code and the status). Successful answers
    pass untouched (and unbuffered)."""
    held: list[Message] = []
    chunks: list[bytes] = []

    async def guarded(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held.append(message)
            return
        if not held or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        start = held[0]
        status: int = start["status"]
        body = _envelope(status, b"".join(chunks))
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-type", b"content-length")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return guarded


def _envelope(status: int, body: bytes) -> bytes:
    data = {
        "code": _REFUSALS.get(status, "invalid_request" if status < 500 else "internal_error"),
        "status": status,
    }
    try:
        answer = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error = answer["error"]
        if "data" in error:
            return body  # already ours (or the SDK's with its own data)
        return orjson.dumps({**answer, "error": {**error, "data": data}})
    text = body.decode("utf-8", "replace").strip()[:200] if body and answer is None else ""
    code = INVALID_REQUEST if status < 500 else INTERNAL_ERROR
    return orjson.dumps(error_body(code, text or f"The request was refused (HTTP {status}).", data))
