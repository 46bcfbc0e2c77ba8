"""`/admin/tools`: pinned MCP tool definitions on a running gateway. `GET /admin/tools` lists every upstream tool
with its pin state; `POST /admin/tools/{name}/approve` pins what the server offers now (body, optional:
`{"fingerprint": "sha256:…"}`, the definition the operator reviewed). The MCP plane does the work (a PinBoard)."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from agentgw.errors import GatewayError, NotFound
from agentgw.exchange import Principal
from agentgw.http import ClientGone, Receive, Scope, Send, header_dict, read_body, send_bytes

PREFIX = "/admin/tools"
_MAX_BODY = 4096


class PinBoard(Protocol):
    async def tools(self) -> dict[str, Any]: ...

    async def approve(
        self, name: str, principal: Principal, headers: dict[str, str], expected: str | None = None
    ) -> dict[str, Any]: ...


async def serve_tools(
    board: PinBoard | None, principal: Principal, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer one `/admin/tools…` request of an admin. Fails with 404 (no MCP servers, unknown path or tool),
    405, 400 (a body that is not `{"fingerprint": "<string>"}`), and what the board raises."""
    if board is None:
        raise NotFound("No MCP servers are configured.", code="no_mcp_servers")
    path, method = scope["path"], scope["method"]
    if path in (PREFIX, PREFIX + "/"):
        if method != "GET":
            raise GatewayError("Use GET.", status=405, code="method_not_allowed")
        await send_bytes(send, 200, orjson.dumps(await board.tools()))
        return
    name, _, action = path[len(PREFIX) + 1 :].partition("/")
    if not name or action != "approve":
        raise NotFound(f"Unknown admin path {path}.", code="unknown_url")
    if method != "POST":
        raise GatewayError("Use POST.", status=405, code="method_not_allowed")
    headers = header_dict(scope)
    try:
        body = await read_body(receive, headers, _MAX_BODY)
    except ClientGone:
        return
    result = await board.approve(name, principal, headers, _expected(body))
    await send_bytes(send, 200, orjson.dumps(result))


def _expected(body: bytes | None) -> str | None:
    if not body or not body.strip():
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    fp = data.get("fingerprint") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or set(data) - {"fingerprint"}
        or (fp is not None and not isinstance(fp, str))
    ):
        raise GatewayError(
            'The body is optional; when sent it is {"fingerprint": "sha256:…"}.',
            status=400,
            code="invalid_request",
        )
    return fp
