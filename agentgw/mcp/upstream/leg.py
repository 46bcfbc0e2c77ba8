"""The hot upstream leg for Streamable HTTP MCP servers: one JSON-RPC request POSTed over the process's pooled
aiohttp session with orjson, its reply read as JSON or as an SSE stream (progress, log messages and the server's
own requests about this call are routed to the caller as they arrive). The SDK client still opens the session
(`server/discover` or `initialize`) and keeps the GET and listen streams; it costs ~1.5 ms of CPU per call, this
leg a fraction of that (docs/benchmarks.md)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import anyio
import orjson
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST

from agentgw import jsontext
from agentgw.mcp.upstream.inflight import RELAYED_REQUESTS, Relay, unasked
from agentgw.sse import SSEDecoder, SSEError
from agentgw.upstream import BASE_HEADERS

log = logging.getLogger("agentgw.mcp")

_ids = itertools.count(1)
_JSON = "application/json"
_SSE = "text/event-stream"
_POST_HEADERS = {**BASE_HEADERS, "Content-Type": _JSON, "Accept": f"{_JSON}, {_SSE}"}
_CANCEL_WAIT_S = 5.0
MAX_EVENT_BYTES = 64 * 1024 * 1024  # one SSE event from an upstream


class SessionExpired(MCPError):
    """The server answered 404 to our session id: it forgot the session (restart, expiry)."""

    def __init__(self) -> None:
        super().__init__(CONNECTION_CLOSED, "The MCP server ended the session.")


class InvalidAnswer(MCPError):
    """The server answered with something that is not JSON-RPC (HTML, bad JSON, another content type, a
    message that answers nothing we asked): a broken upstream, not an error the server meant to send."""

    def __init__(self, message: str) -> None:
        super().__init__(INTERNAL_ERROR, message)


class HttpLeg:
    """Requests to one Streamable HTTP server. `session_id` reads the SDK transport's current session id (None
    for a stateless 2026-07-28 server). Fails with MCPError: the server's own JSON-RPC error verbatim,
    SessionExpired on a 404 to our session, CONNECTION_CLOSED when the connection or stream broke before the
    answer, InvalidAnswer for an answer that is not JSON-RPC."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        session: Callable[[], aiohttp.ClientSession],
        session_id: Callable[[], str | None],
    ) -> None:
        self.url = url
        # Upstream credentials come only from the registry; nothing of the caller's request is copied here.
        self.headers = {**_POST_HEADERS, **headers}
        self._session = session
        self._session_id = session_id

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {**self.headers, **extra}
        sid = self._session_id()
        if sid:
            headers["mcp-session-id"] = sid
        return headers

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        headers: dict[str, str],
        *,
        request_id: str | None = None,
        on_progress: ProgressFnT | None = None,
        relay: Relay | None = None,
        cancel_notice: bool = False,
    ) -> dict[str, Any]:
        """Send one request and return its raw result. When the caller goes away first (cancellation,
        deadline), the response is closed, which is a 2026-07-28 server's cancellation; with `cancel_notice`
        (handshake era) the server is also sent `notifications/cancelled`."""
        rid = request_id or f"agw-h{next(_ids)}"
        if on_progress is not None:
            params = {**params, "_meta": {**(params.get("_meta") or {}), "progressToken": rid}}
        body = jsontext.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        sent = self._headers(headers)
        try:
            async with self._session().post(self.url, data=body, headers=sent) as resp:
                if resp.status == 404 and "mcp-session-id" in sent:
                    raise SessionExpired()
                kind = resp.headers.get("Content-Type", "").lower()
                if kind.startswith(_SSE) and resp.status < 400:
                    return await self._stream(resp, rid, sent, on_progress, relay)
                data = await resp.read()
                if resp.status < 400 and not kind.startswith(_JSON):
                    raise InvalidAnswer(
                        f"The MCP server answered HTTP {resp.status} with content type {kind[:60]!r}."
                    )
                return _answer(_decode(data, resp.status), rid, resp.status)
        except anyio.get_cancelled_exc_class():
            if cancel_notice:
                with anyio.CancelScope(shield=True):
                    await self._notify_cancelled(rid, sent)
            raise
        except aiohttp.ClientError as exc:
            raise MCPError(CONNECTION_CLOSED, f"The connection to the MCP server failed: {exc}") from None

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        rid: str,
        sent: dict[str, str],
        on_progress: ProgressFnT | None,
        relay: Relay | None,
    ) -> dict[str, Any]:
        decoder = SSEDecoder(MAX_EVENT_BYTES)
        try:
            async for chunk in resp.content.iter_any():
                for event in decoder.feed(chunk):
                    if not event.is_message:
                        continue  # a priming event (an id, empty data), a comment, a retry hint
                    message = _decode(event.data or b"", resp.status)
                    if not isinstance(message, dict):
                        continue
                    if "method" not in message:
                        if message.get("id") == rid:
                            return _answer(message, rid, resp.status)
                        continue
                    if "id" in message:
                        await self._answer_server(message, sent, relay)
                    else:
                        await _notification(message, rid, on_progress, relay)
        except SSEError as exc:
            raise InvalidAnswer(f"The MCP server's stream is unreadable: {exc}") from None
        raise MCPError(CONNECTION_CLOSED, "The MCP server's stream ended before its answer.")

    async def _answer_server(
        self, message: dict[str, Any], sent: dict[str, str], relay: Relay | None
    ) -> None:
        """A server-to-client request about our call (elicitation, sampling, roots): ask the caller, POST the
        answer back on the session."""
        method, params = message.get("method"), message.get("params")
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        if method not in RELAYED_REQUESTS:
            reply["error"] = {"code": INVALID_REQUEST, "message": "The gateway does not relay this request."}
        else:
            try:
                if relay is None:  # about no request of a caller (cannot happen on a call's own stream)
                    reply["result"] = unasked(str(method))
                else:
                    reply["result"] = await relay.ask(str(method), params if isinstance(params, dict) else {})
            except MCPError as err:
                reply["error"] = {"code": err.code, "message": err.message}
                if err.data is not None:
                    reply["error"]["data"] = err.data
        await self._post(reply, sent)

    async def _notify_cancelled(self, rid: str, sent: dict[str, str]) -> None:
        notice = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": rid, "reason": "The caller cancelled the request."},
        }
        try:
            with anyio.fail_after(_CANCEL_WAIT_S):
                await self._post(notice, sent)
        except (MCPError, TimeoutError) as exc:
            log.debug("could not tell the MCP server of a cancellation: %s", exc)

    async def _post(self, message: dict[str, Any], sent: dict[str, str]) -> None:
        try:
            async with self._session().post(self.url, data=jsontext.dumps(message), headers=sent) as resp:
                await resp.read()
        except aiohttp.ClientError as exc:
            raise MCPError(CONNECTION_CLOSED, f"The connection to the MCP server failed: {exc}") from None


def _decode(data: bytes, status: int) -> Any:
    try:
        return jsontext.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidAnswer(f"The MCP server answered HTTP {status} without a JSON-RPC message.") from None


def _answer(message: Any, rid: str, status: int) -> dict[str, Any]:
    if isinstance(message, dict):
        error = message.get("error")
        if isinstance(error, dict):
            code, text = error.get("code"), error.get("message")
            raise MCPError(
                code if isinstance(code, int) else INTERNAL_ERROR,
                text if isinstance(text, str) else "The MCP server returned an error.",
                error.get("data"),
            )
        result = message.get("result")
        if isinstance(result, dict) and message.get("id") == rid:
            return result
    raise InvalidAnswer(f"The MCP server answered HTTP {status} without a result for our request.")


async def _notification(
    message: dict[str, Any], rid: str, on_progress: ProgressFnT | None, relay: Relay | None
) -> None:
    method, params = message.get("method"), message.get("params")
    if not isinstance(params, dict):
        return
    if method == "notifications/progress":
        progress = params.get("progress")
        if (
            on_progress is not None
            and params.get("progressToken") == rid
            and isinstance(progress, int | float)
        ):
            total, text = params.get("total"), params.get("message")
            await on_progress(
                float(progress),
                float(total) if isinstance(total, int | float) else None,
                text if isinstance(text, str) else None,
            )
    elif method == "notifications/message" and relay is not None:
        await relay.log(params)
