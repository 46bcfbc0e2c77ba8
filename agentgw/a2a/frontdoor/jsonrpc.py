"""The JSON-RPC binding at `POST /a2a/{agent}`: a request read into a method and its A2A 1.0 params, and answers
(results, errors, stream events) written back in the era the client speaks. The method name picks the era (1.0
PascalCase or 0.3 slash names, as a2a-sdk serves both on one endpoint); `A2A-Version` must match it (empty means
0.3), else VersionNotSupported (-32009)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from agentgw import jsontext
from agentgw.a2a.errors import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    VERSION_NOT_SUPPORTED,
    A2AError,
    rpc_error,
)
from agentgw.a2a.methods import METHODS, V03_METHODS, Method, canonical
from agentgw.errors import GatewayError


class Refused(A2AError):
    """A request refused before mediation, answered to its JSON-RPC id (when it had a readable one) and, once its
    method is known, in that method's era: a 1.0 method refused for its `A2A-Version` is answered in 1.0's
    envelope, whatever the header said."""

    def __init__(
        self,
        rpc_code: int,
        message: str,
        rpc_id: Any = None,
        method: str | None = None,
        era: str | None = None,
    ) -> None:
        super().__init__(rpc_code, message)
        self.rpc_id = rpc_id
        self.method = method
        self.era = era


@dataclass(slots=True)
class Request:
    method: Method
    params: dict[str, Any]
    rpc_id: Any
    version: str  # the client's era: 1.0 | 0.3


def version_of(headers: dict[str, str], query: bytes) -> str:
    """The A2A version the client asked for (header, else `?A2A-Version=`); empty means 0.3."""
    value = headers.get("a2a-version")
    if value is None and query:
        from urllib.parse import parse_qs

        found = parse_qs(query.decode("latin-1")).get("A2A-Version")
        value = found[0] if found else None
    value = (value or "").strip()
    return value or "0.3"


def major_minor(version: str) -> str:
    parts = version.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else f"{parts[0]}.0"


def read(body: bytes, version: str) -> Request:
    """The request in `body`, or Refused with the JSON-RPC code a2a-sdk gives the same input."""
    try:
        doc = jsontext.loads(body)
    except (orjson.JSONDecodeError, ValueError):
        raise Refused(PARSE_ERROR, "Parse error: the body is not valid JSON.") from None
    if isinstance(doc, list):
        raise Refused(INVALID_REQUEST, "Batch requests are not supported.")
    if not isinstance(doc, dict):
        raise Refused(INVALID_REQUEST, "Invalid request: the body must be a JSON-RPC request object.")
    rpc_id = doc.get("id")
    if isinstance(rpc_id, bool) or (rpc_id is not None and not isinstance(rpc_id, str | int)):
        raise Refused(INVALID_REQUEST, "Invalid request: id must be a string, integer, or null.")
    if doc.get("jsonrpc") != "2.0":
        raise Refused(INVALID_REQUEST, "Invalid request: 'jsonrpc' must be exactly '2.0'.", rpc_id)
    name = doc.get("method")
    if not isinstance(name, str) or not name:
        raise Refused(INVALID_REQUEST, "Invalid request: 'method' is required.", rpc_id)
    method = METHODS.get(name)
    era = "1.0"
    if method is None:
        method, era = V03_METHODS.get(name), "0.3"
    if method is None:
        raise Refused(METHOD_NOT_FOUND, f"Method not found: {name[:100]}", rpc_id)
    if major_minor(version) != era:
        raise Refused(
            VERSION_NOT_SUPPORTED,
            f"A2A version '{version[:20]}' is not supported for {name}.",
            rpc_id,
            method.name,
            era,
        )
    params = doc.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise Refused(INVALID_PARAMS, "Invalid params: 'params' must be an object.", rpc_id, method.name, era)
    if era == "0.3":
        from agentgw.a2a.bridges import v03

        try:
            params = v03.params_to_v10(method.name, params)
        except v03.BridgeError as exc:
            raise Refused(exc.code, exc.message, rpc_id, method.name, era) from None
    try:
        params = canonical(method, params)
    except A2AError as exc:
        raise Refused(exc.rpc_code, exc.message, rpc_id, method.name, era) from None
    return Request(method, params, rpc_id, era)


def result_body(rpc_id: Any, method: Method, result: Any, version: str) -> bytes:
    if version == "0.3":
        from agentgw.a2a.bridges import v03

        try:
            result = v03.result_to_v03(method.name, result)
        except v03.BridgeError as exc:  # an agent's answer with no 0.3 form: an error, never a 500
            error = v03.error_to_v03({"code": exc.code, "message": exc.message})
            return orjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error})
    return orjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result})


def error_object(err: GatewayError, version: str, task_id: str | None = None) -> dict[str, Any]:
    obj = rpc_error(err, task_id)
    if version == "0.3":
        from agentgw.a2a.bridges import v03

        obj = v03.error_to_v03(obj)
    return obj


def error_body(rpc_id: Any, err: GatewayError, version: str, task_id: str | None = None) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error_object(err, version, task_id)})


def event_frame(rpc_id: Any, event: dict[str, Any], version: str) -> bytes:
    if version == "0.3":
        from agentgw.a2a.bridges import v03

        try:
            event = v03.event_to_v03(event)
        except v03.BridgeError as exc:
            error = v03.error_to_v03({"code": exc.code, "message": exc.message})
            return b"data: " + orjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error}) + b"\n\n"
    return b"data: " + orjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": event}) + b"\n\n"


def error_frame(rpc_id: Any, err: GatewayError, version: str) -> bytes:
    return b"data: " + error_body(rpc_id, err, version) + b"\n\n"
