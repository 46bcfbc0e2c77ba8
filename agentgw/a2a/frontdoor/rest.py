"""The HTTP+JSON binding under `/a2a/{agent}/rest`: a route (verb and path) read into a method and its A2A 1.0
params (path, query and body, as a2a-sdk's REST dispatcher reads them), and answers written back: results as
`application/a2a+json`, errors as a `google.rpc.Status` body with the binding's HTTP status, streams as SSE."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from agentgw import jsontext
from agentgw.a2a.errors import INVALID_PARAMS, METHOD_NOT_FOUND, A2AError, rest_error
from agentgw.a2a.methods import (
    CANCEL,
    EXTENDED_CARD,
    GET_TASK,
    LIST_TASKS,
    PUSH_CREATE,
    PUSH_DELETE,
    PUSH_GET,
    PUSH_LIST,
    SEND,
    STREAM,
    SUBSCRIBE,
    Method,
    canonical,
)
from agentgw.errors import GatewayError

MEDIA_TYPE = "application/a2a+json"
_SEG = r"([^/]+?)"
ROUTES: list[tuple[str, re.Pattern[str], Method]] = [
    ("POST", re.compile(r"/message:send"), SEND),
    ("POST", re.compile(r"/message:stream"), STREAM),
    ("GET", re.compile(r"/tasks"), LIST_TASKS),
    ("POST", re.compile(rf"/tasks/{_SEG}:cancel"), CANCEL),
    ("GET", re.compile(rf"/tasks/{_SEG}:subscribe"), SUBSCRIBE),
    ("POST", re.compile(rf"/tasks/{_SEG}:subscribe"), SUBSCRIBE),
    ("GET", re.compile(rf"/tasks/{_SEG}/pushNotificationConfigs/{_SEG}"), PUSH_GET),
    ("DELETE", re.compile(rf"/tasks/{_SEG}/pushNotificationConfigs/{_SEG}"), PUSH_DELETE),
    ("POST", re.compile(rf"/tasks/{_SEG}/pushNotificationConfigs"), PUSH_CREATE),
    ("GET", re.compile(rf"/tasks/{_SEG}/pushNotificationConfigs"), PUSH_LIST),
    ("GET", re.compile(rf"/tasks/{_SEG}"), GET_TASK),
    ("GET", re.compile(r"/extendedAgentCard"), EXTENDED_CARD),
]
# Typed query parameters, under both the names json_format accepts (canonical() renames them afterwards).
_INTS = frozenset({"historyLength", "history_length", "pageSize", "page_size"})
_BOOLS = frozenset({"includeArtifacts", "include_artifacts"})


class NoRoute(A2AError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(METHOD_NOT_FOUND, message)
        self.http = status


@dataclass(slots=True)
class Route:
    method: Method
    path_params: tuple[str, ...]


def match(verb: str, path: str, routes: list[tuple[str, re.Pattern[str], Method]] = ROUTES) -> Route:
    """The method a verb and path (below `/rest`) name; NoRoute 404 (unknown path) or 405 (known path, other verb)."""
    known = False
    for v, pattern, method in routes:
        m = pattern.fullmatch(path)
        if m is None:
            continue
        if v == verb:
            return Route(method, tuple(unquote(g) for g in m.groups()))
        known = True
    if known:
        raise NoRoute(405, f"Method {verb} is not allowed on {path[:200]}.")
    raise NoRoute(404, f"Unknown path {path[:200]}.")


def params_of(route: Route, query: bytes, body: bytes) -> dict[str, Any]:
    """The 1.0 params of a REST call: the body (POST), then the query, then the path's ids (canonical names)."""
    m = route.method
    params: dict[str, Any] = {}
    if m.verb == "POST" and body.strip():
        try:
            doc = jsontext.loads(body)
        except (orjson.JSONDecodeError, ValueError):
            raise A2AError(INVALID_PARAMS, "The request body is not valid JSON.") from None
        if not isinstance(doc, dict):
            raise A2AError(INVALID_PARAMS, "The request body must be a JSON object.")
        params.update(doc)
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=False):
        if key in _INTS:
            try:
                params[key] = int(value)
            except ValueError:
                raise A2AError(INVALID_PARAMS, f"'{key}' must be an integer.") from None
        elif key in _BOOLS:
            params[key] = value.lower() in ("true", "1")
        elif key != "A2A-Version":
            params[key] = value
    params = canonical(m, params)  # before the path's ids: `task_id` in the body cannot stand beside them
    ids = route.path_params
    if m.task_param == "id":
        params["id"] = ids[0]
    elif m.task_param == "taskId":
        params["taskId"] = ids[0]
        if len(ids) > 1:
            params["id"] = ids[1]
    return params


def result_body(result: Any) -> bytes:
    return orjson.dumps(result if result is not None else {})


def error_response(err: GatewayError) -> tuple[int, bytes]:
    if isinstance(err, NoRoute):
        status, body = rest_error(GatewayError(err.message, status=err.http, code="unknown_route"))
        return status, orjson.dumps(body)
    status, body = rest_error(err)
    return status, orjson.dumps(body)


def event_frame(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def error_frame(err: GatewayError) -> bytes:
    return b"event: error\ndata: " + error_response(err)[1] + b"\n\n"
