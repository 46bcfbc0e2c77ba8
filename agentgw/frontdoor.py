"""The front door: what every request must pass before a plane sees it. Host/Origin (DNS rebinding: 421/403 in
the plane's envelope) and JSON nesting depth (a byte scan before parsing). The connection-level limits (header
size and time, body time) are in server.py."""

from __future__ import annotations

import re
from itertools import accumulate

import orjson

from agentgw.errors import BadRequest
from agentgw.http import Scope, client_host
from agentgw.settings import Settings, is_loopback

_WILDCARDS = frozenset(("", "0.0.0.0", "::", "[::]"))


def host_name(value: str) -> str:
    """`host[:port]` lower-cased, without a numeric port (`[::1]:8080` → `[::1]`)."""
    v = value.strip().lower()
    name, sep, port = v.rpartition(":")
    if sep and port.isdigit() and (not name.startswith("[") or name.endswith("]")):
        return name
    return v


def loopback_host(value: str) -> bool:
    """A Host (or an origin's authority) naming this machine: `localhost`, 127.0.0.0/8 or `[::1]`, any port."""
    name = host_name(value)
    return (
        name == "localhost"
        or (name[:1] == "[" and name[-1:] == "]" and is_loopback(name[1:-1]))
        or (name[:1].isdigit() and is_loopback(name))
    )


def plane_of(path: str) -> str:
    """The plane a path belongs to, for the tally of refusals: `llm`, `mcp`, or `http` (everything else, and a
    request whose path was never received)."""
    if path == "/mcp" or path.startswith("/mcp/"):
        return "mcp"
    return "llm" if path.startswith("/v1/") else "http"


def refusal_body(path: str, status: int, code: str, message: str) -> bytes:
    """A refusal in the envelope of the plane `path` belongs to: JSON-RPC on /mcp, OpenAI error JSON elsewhere."""
    if path == "/mcp" or path.startswith("/mcp/"):
        data = {"code": code, "status": status}
        return orjson.dumps(
            {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message, "data": data}}
        )
    return orjson.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    )


class HostGuard:
    """Decides whether a request's Host and Origin may reach the gateway (one rule for every plane).

    Host: a loopback peer must name a loopback host, the listen host or one of `server.allowed_hosts`; with
    `allowed_hosts` configured, every peer must (a LAN browser can be rebound too). Otherwise 421.
    Origin (browsers only send it): one of `server.allowed_origins`, the request's own Host (same origin), or,
    for a loopback peer, a loopback origin. Otherwise 403."""

    def __init__(self, settings: Settings) -> None:
        extra = {host_name(h) for h in settings.server.allowed_hosts}
        listen = host_name(settings.listen.host)
        self.hosts = frozenset(extra | ({listen} if listen not in _WILDCARDS else set()))
        self.every_peer = bool(extra)
        self.origins = frozenset(o.strip().lower().rstrip("/") for o in settings.server.allowed_origins)

    def _host_ok(self, host: str) -> bool:
        return loopback_host(host) or host_name(host) in self.hosts

    def check(self, scope: Scope) -> tuple[int, str, str] | None:
        """None, or (status, code, message) to refuse with."""
        host = origin = None
        for k, v in scope["headers"]:
            if k == b"host" and host is None:
                host = v.decode("latin-1")
            elif k == b"origin" and origin is None:
                origin = v.decode("latin-1")
        client = client_host(scope)
        local = client is not None and is_loopback(client)
        if (local or self.every_peer) and not self._host_ok(host or ""):
            return 421, "misdirected_request", "Invalid Host header."
        if origin is not None and not self._origin_ok(origin, host or "", local):
            return 403, "origin_refused", "Invalid Origin header."
        return None

    def _origin_ok(self, origin: str, host: str, local: bool) -> bool:
        value = origin.strip().lower().rstrip("/")
        if value in self.origins:
            return True
        scheme, sep, authority = value.partition("://")
        if not sep or scheme not in ("http", "https") or not authority or "/" in authority:
            return False
        return authority == host.strip().lower() or (local and loopback_host(authority))


# -- JSON depth ------------------------------------------------------------------------------------------------

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # brackets inside strings do not nest
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte but the brackets
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def json_depth(body: bytes) -> int:
    """The deepest nesting of objects and arrays in a JSON text (C-speed passes, no parsing)."""
    structure = _STRING.sub(b"", body).translate(_STEP, _BRACKETS)
    return max(accumulate(memoryview(structure).cast("b")), default=0)


class TooDeep(BadRequest):
    code = "json_too_deep"


def check_depth(body: bytes, limit: int) -> None:
    """Raise TooDeep when `body` nests deeper than `limit`: refused before it is parsed, so no structure deeper
    than the gateway can serialise again (forward, record) ever exists. Cheap when it cannot be: a body with at
    most `limit` brackets is not scanned."""
    if body.count(b"[") + body.count(b"{") > limit and json_depth(body) > limit:
        raise TooDeep(f"The JSON body nests deeper than the limit of {limit} levels.")
