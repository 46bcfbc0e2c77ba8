"""Input requests and log messages between an upstream and the caller whose request they belong to: the caller as
a relay target (its session's request stream, its declared capabilities, its log level), the loop that answers a
2026-07-28 upstream's `input_required` results by asking a handshake-era caller, and the calls of handshake-era
upstreams held open while a 2026-07-28 caller answers their questions in `input_required` rounds."""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import anyio.abc
import mcp.types as types
from mcp.server.connection import Connection as SessionConnection
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INVALID_PARAMS, INVALID_REQUEST, LOG_LEVEL_META_KEY, METHOD_NOT_FOUND, RequestId
from mcp_types.methods import parse_server_request
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, ValidationError

from agentgw.errors import GatewayError, UpstreamError, UpstreamTimeout
from agentgw.mcp.bridges.state import STATE_TTL_S, Binding
from agentgw.mcp.upstream.inflight import log_rank

log = logging.getLogger("agentgw.mcp")

Ctx = ServerRequestContext[Any, Any]
INPUT_CAPABILITY = {
    "elicitation/create": "elicitation",
    "sampling/createMessage": "sampling",
    "roots/list": "roots",
}
LEVEL_KEY = "agentgw.log_level"  # the handshake session's logging/setLevel, in its connection state
MAX_ROUNDS = 16  # input_required rounds one handshake-era call may take


def session_connection(ctx: Ctx) -> SessionConnection | None:
    """The caller's connection (per handshake session; per request in 2026-07-28). The SDK keeps it private on
    the session; the plane needs its scratch state (the log level) and its exit stack (cleanup at session end)."""
    conn = getattr(ctx.session, "_connection", None)
    return conn if isinstance(conn, SessionConnection) else None


def input_caps(declared: Mapping[str, Any] | None) -> dict[str, Any]:
    """The input capabilities (elicitation, sampling, roots) among a client's declared capabilities."""
    if not declared:
        return {}
    return {k: declared[k] for k in ("elicitation", "sampling", "roots") if k in declared}


class _RawRequest(BaseModel):
    """A server-to-client request passed on verbatim (params are not re-modelled, so nothing is dropped)."""

    method: str
    params: dict[str, Any] | None = None


class _AnyResult(BaseModel):
    model_config = ConfigDict(extra="allow")


@dataclass(slots=True)
class Caller:
    """The client a request came from, as a relay target: the request stream its logs and (handshake era) input
    requests go on, the input capabilities it declared, and the least severe log level it wants. Without a
    session (a request the direct path serves, see front/direct.py) there is no stream: nothing is relayed and input
    requests are refused; the direct path takes only requests for which that changes nothing."""

    session: ServerSession | None
    request_id: RequestId | None
    version: str
    caps: dict[str, Any]  # elicitation / sampling / roots, as the caller declared them
    log_level: str | None

    @classmethod
    def of(cls, ctx: Ctx) -> Caller:
        declared = ctx.session.client_capabilities
        caps = input_caps(
            declared.model_dump(by_alias=True, mode="json", exclude_none=True)
            if declared is not None
            else None
        )
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            meta = (ctx.params or {}).get("_meta")
            level = meta.get(LOG_LEVEL_META_KEY) if isinstance(meta, dict) else None
        else:
            conn = session_connection(ctx)
            level = conn.state.get(LEVEL_KEY) if conn is not None else None
        wanted = level if isinstance(level, str) and log_rank(level) is not None else None
        return cls(ctx.session, ctx.request_id, ctx.protocol_version, caps, wanted)

    @property
    def modern(self) -> bool:
        return self.version in MODERN_PROTOCOL_VERSIONS

    def can(self, method: str) -> bool:
        return INPUT_CAPABILITY.get(method, "") in self.caps

    async def log(self, params: dict[str, Any]) -> None:
        """Relay an upstream `notifications/message` on this request's stream if the caller wants its level."""
        rank, wanted = log_rank(params.get("level")), log_rank(self.log_level)
        if rank is None or wanted is None or rank < wanted or self.session is None:
            return
        try:
            note = types.LoggingMessageNotification(
                params=types.LoggingMessageNotificationParams.model_validate(params)
            )
            await self.session.send_notification(note, related_request_id=self.request_id)
        except (ValidationError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.debug("dropped an upstream log message for request %r", self.request_id)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self.session is not None:
            await self.session.report_progress(progress, total, message)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a server-to-client request to a handshake-era caller on this request's stream; its result."""
        capability = INPUT_CAPABILITY.get(method, method)
        if self.modern:
            raise MCPError(INVALID_REQUEST, f"The caller cannot be sent {method} (protocol {self.version}).")
        if not self.can(method):
            raise MCPError(INVALID_REQUEST, f"The caller did not declare the {capability} capability.")
        try:
            parse_server_request(method, self.version, params)
        except KeyError:
            raise MCPError(METHOD_NOT_FOUND, f"{method} does not exist in protocol {self.version}.") from None
        except ValidationError:
            raise MCPError(INVALID_PARAMS, f"The server's {method} request is malformed.") from None
        if self.session is None:
            raise MCPError(INVALID_REQUEST, f"The caller's request has no stream to carry {method}.")
        request = _RawRequest(method=method, params=params)
        try:
            result = await self.session.send_request(
                cast(Any, request),
                _AnyResult,
                request_read_timeout_seconds=STATE_TTL_S,
                metadata=ServerMessageMetadata(related_request_id=self.request_id),
            )
        except NoBackChannelError:
            raise MCPError(INVALID_REQUEST, f"The caller's stream cannot carry {method}.") from None
        except ValidationError:
            raise MCPError(INVALID_PARAMS, f"The caller's answer to {method} is malformed.") from None
        return result.model_dump(by_alias=True, mode="json")


async def answer_inputs(caller: Caller, result: Mapping[str, Any]) -> dict[str, Any]:
    """Ask a handshake-era caller every input request of a 2026-07-28 `input_required` result, in order; the
    `inputResponses` for the retry."""
    requests = result.get("inputRequests")
    answers: dict[str, Any] = {}
    if not isinstance(requests, dict):
        return answers
    for key, request in requests.items():
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise MCPError(INVALID_PARAMS, f"The server's input request {key!r} is malformed.")
        params = request.get("params")
        answers[key] = await caller.ask(request["method"], dict(params) if isinstance(params, dict) else {})
    return answers


@dataclass(slots=True, eq=False)
class _Ask:
    method: str
    params: dict[str, Any]
    done: anyio.Event = field(default_factory=anyio.Event)
    value: dict[str, Any] | None = None


class HeldCall:
    """A handshake-era upstream's call that sends server-to-client requests while a 2026-07-28 caller waits: each
    question is handed to the caller as an `input_required` round (`inputRequests` plus a sealed `requestState`
    naming this call), and the caller's retry delivers the answers. The upstream call keeps running in the
    background between rounds; a round not retried within the TTL cancels it."""

    def __init__(self, bind: Binding, caller: Caller, ttl: float = STATE_TTL_S) -> None:
        self.id = secrets.token_urlsafe(16)
        self.bind = bind
        self.caller = caller  # the current round's caller: logs and progress go on its stream
        self.ttl = ttl
        self.round = 0
        self.scope = anyio.CancelScope()
        self._asks: dict[str, _Ask] = {}
        self._keys = itertools.count(1)
        self._wake = anyio.Event()
        self._outcome: dict[str, Any] | GatewayError | None = None
        self.collected = anyio.Event()  # a round delivered the outcome (or gave up on the call)

    @property
    def done(self) -> bool:
        return self._outcome is not None

    # -- the upstream side: a Relay ---------------------------------------------------------------------------

    async def log(self, params: dict[str, Any]) -> None:
        await self.caller.log(params)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self.caller.progress(progress, total, message)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if not self.caller.can(method):
            raise MCPError(
                INVALID_REQUEST, f"The caller did not declare the {INPUT_CAPABILITY[method]} capability."
            )
        ask = _Ask(method, params)
        key = f"input-{next(self._keys)}"
        self._asks[key] = ask
        self._poke()
        try:
            await ask.done.wait()
        finally:
            self._asks.pop(key, None)
        assert ask.value is not None
        return ask.value

    async def run(self, call: Callable[[HeldCall], Awaitable[dict[str, Any]]]) -> None:
        """Run the upstream call to its end (or the TTL), keeping the outcome for the round that collects it."""
        outcome: dict[str, Any] | GatewayError
        with self.scope:
            try:
                outcome = await call(self)
            except GatewayError as err:
                outcome = err
            except Exception:  # never into the plane's task group
                log.exception("held MCP call failed")
                outcome = UpstreamError("the upstream call failed unexpectedly")
        if self.scope.cancelled_caught:
            outcome = UpstreamTimeout("The caller did not answer the server's questions in time.")
        self._outcome = outcome
        self._poke()

    # -- the caller side: rounds ------------------------------------------------------------------------------

    def answer(self, responses: object) -> None:
        """The caller's retry: deliver the answers it gave to questions still open."""
        if not isinstance(responses, dict):
            return
        for key, value in responses.items():
            ask = self._asks.get(key)
            if ask is not None and not ask.done.is_set() and isinstance(value, dict):
                ask.value = value
                ask.done.set()

    async def next(self, caller: Caller) -> dict[str, Any] | None:
        """Wait for the call's next question(s) or its end: the open questions as `inputRequests`, or None when
        the call is over (then `outcome()`). The TTL is suspended while a round waits here."""
        self.caller = caller
        self.scope.deadline = math.inf
        try:
            while True:
                wake = self._wake
                if self._outcome is not None:
                    return None
                open_asks = {k: a for k, a in self._asks.items() if not a.done.is_set()}
                if open_asks:
                    self.round += 1
                    return {k: {"method": a.method, "params": a.params} for k, a in open_asks.items()}
                await wake.wait()
        finally:
            if self._outcome is None:
                self.scope.deadline = anyio.current_time() + self.ttl

    def outcome(self) -> dict[str, Any]:
        out = self._outcome
        if isinstance(out, GatewayError):
            raise out
        assert out is not None
        return out

    def _poke(self) -> None:
        wake, self._wake = self._wake, anyio.Event()
        wake.set()


class HeldCalls:
    """The held calls of one plane, by id. Runs each call in the plane's task group (it outlives the HTTP request
    that started it); forgets a call once its outcome is collected, or one TTL after it ended uncollected."""

    def __init__(self) -> None:
        self._calls: dict[str, HeldCall] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg

    def has(self, held_id: str) -> bool:
        return held_id in self._calls

    def get(self, held_id: str, bind: Binding) -> HeldCall | None:
        call = self._calls.get(held_id)
        return call if call is not None and call.bind == bind else None

    def begin(self, call: HeldCall, run: Callable[[HeldCall], Awaitable[dict[str, Any]]]) -> None:
        if self._tg is None:
            raise GatewayError("The MCP plane is not running.", status=503, code="unavailable")
        self._calls[call.id] = call
        call.scope.deadline = anyio.current_time() + call.ttl
        self._tg.start_soon(self._own, call, run, name=f"mcp-held-{call.id[:8]}")

    def collected(self, call: HeldCall) -> None:
        self._calls.pop(call.id, None)
        call.collected.set()

    async def _own(self, call: HeldCall, run: Callable[[HeldCall], Awaitable[dict[str, Any]]]) -> None:
        try:
            await call.run(run)
            with anyio.move_on_after(call.ttl):  # an outcome nobody comes back for is dropped after the TTL
                await call.collected.wait()
        finally:
            self._calls.pop(call.id, None)
