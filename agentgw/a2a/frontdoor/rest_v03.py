"""The A2A 0.3 HTTP+JSON binding under `/a2a/{agent}/rest/v1/...` (the routes of the a2a-sdk's REST03Adapter): a
route read into the 1.0 method and its 1.0 params, answers written back as the SDK's 0.3 REST server writes them
(0.3 protobuf JSON, SSE `data:` events), errors in a body both 0.3 REST clients and google.rpc.Status readers read."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson

from agentgw.a2a.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    VERSION_NOT_SUPPORTED,
    A2AError,
    rest_error,
    rpc_code,
)
from agentgw.a2a.frontdoor import rest
from agentgw.a2a.frontdoor.rest import NoRoute, Route
from agentgw.a2a.methods import (
    EXTENDED_CARD,
    LIST_TASKS,
    PUSH_CREATE,
    SEND,
    STREAM,
    Method,
)
from agentgw.errors import GatewayError

PREFIX = "/v1/"
# The 1.0 routes under /v1 (as REST03Adapter.routes()), but for ListTasks (0.3 has none) and the extended card
# (0.3: /v1/card); DELETE of a push config stays, as the 0.3 spec's HTTP+JSON table has it (the SDK's server
# does not).
ROUTES: list[tuple[str, re.Pattern[str], Method]] = [
    (verb, re.compile("/v1" + pattern.pattern), method)
    for verb, pattern, method in rest.ROUTES
    if method not in (LIST_TASKS, EXTENDED_CARD)
] + [("GET", re.compile(r"/v1/card"), EXTENDED_CARD)]
# Bodies the route reads (the others, e.g. a cancel's, are ignored as the SDK's server ignores them).
_READS_BODY = frozenset({SEND.name, STREAM.name, PUSH_CREATE.name})


def match(verb: str, path: str) -> Route:
    """The method a verb and path (below `/rest`) name; NoRoute 404 (unknown path) or 405 (known path, other verb:
    the SDK's 0.3 client retries a subscribe with GET on a 405)."""
    return rest.match(verb, path, ROUTES)


def reads_body(route: Route) -> bool:
    return route.method.name in _READS_BODY


def check_version(version: str) -> None:
    """0.3 paths speak 0.3: `A2A-Version` absent or 0.3 (as the SDK's `validate_version(0.3)`)."""
    parts = version.split(".")
    if parts[:2] != ["0", "3"]:
        raise A2AError(
            VERSION_NOT_SUPPORTED, f"A2A version '{version[:20]}' is not supported on the 0.3 paths."
        )


def params_of(route: Route, query: bytes, body: bytes) -> dict[str, Any]:
    """The 1.0 params of a 0.3 REST request; A2AError (-32602, -32700) for bad input."""
    from agentgw.a2a.bridges import v03_rest
    from agentgw.a2a.bridges.v03_errors import BridgeError

    q = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=False))
    if any(not i for i in route.path_params):
        raise A2AError(INVALID_PARAMS, "Invalid params: a task or push config id is required.")
    try:
        return v03_rest.client_params(
            route.method.name, route.path_params, q, body if reads_body(route) else b""
        )
    except BridgeError as exc:
        raise A2AError(exc.code, exc.message) from None


def result_body(method: Method, result: Any) -> tuple[int, bytes]:
    """A 1.0 result as the 0.3 REST answer (an agent's answer with no 0.3 form: its error, never a 500)."""
    from agentgw.a2a.bridges import v03_rest
    from agentgw.a2a.bridges.v03_errors import BridgeError

    try:
        return 200, orjson.dumps(v03_rest.client_result(method.name, result))
    except BridgeError as exc:
        return error_response(A2AError(exc.code, exc.message))


def error_body(err: GatewayError) -> tuple[int, dict[str, Any]]:
    """The status and body of `err`: the google.rpc.Status the a2a-sdk's 0.3 REST server answers (`error`, as on
    the 1.0 binding), plus the `type` and `message` its 0.3 REST client reads (`type` names the SDK's error class:
    A2A errors only; a gateway refusal has none and is read by its HTTP status)."""
    if isinstance(err, NoRoute):
        status, body = rest_error(GatewayError(err.message, status=err.http, code="unknown_route"))
        return status, {"message": err.message, **body}
    from agentgw.a2a.bridges.v03_rest import ERROR_TYPE_OF

    status, body = rest_error(err)
    out: dict[str, Any] = {}
    if isinstance(err, A2AError):
        out["type"] = ERROR_TYPE_OF.get(rpc_code(err), ERROR_TYPE_OF[INTERNAL_ERROR])
    out["message"] = err.message
    return status, {**out, **body}


def error_response(err: GatewayError) -> tuple[int, bytes]:
    status, body = error_body(err)
    return status, orjson.dumps(body)


def event_frame(event: dict[str, Any]) -> bytes:
    """One 1.0 StreamResponse as the 0.3 SSE event (an event with no 0.3 form: an error event)."""
    from agentgw.a2a.bridges import v03_rest
    from agentgw.a2a.bridges.v03_errors import BridgeError

    try:
        return b"data: " + orjson.dumps(v03_rest.client_event(event)) + b"\n\n"
    except BridgeError as exc:
        return error_frame(A2AError(exc.code, exc.message))


def error_frame(err: GatewayError) -> bytes:
    """An error mid-stream: an SSE `error` event (the SDK's client raises it) carrying the error body."""
    return b"event: error\ndata: " + error_response(err)[1] + b"\n\n"
