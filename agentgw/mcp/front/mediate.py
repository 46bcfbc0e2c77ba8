"""What every MCP endpoint handler shares: the front door's record of the HTTP request, one Exchange per operation
run through the pipeline (audited, authorized), the upstream request stamped with the task, the trace and the
caller's progress, log and input wiring, and the rewriting of upstream URIs in results."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio
from mcp.server.context import ServerRequestContext
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import methods
from opentelemetry import context as otel_context
from pydantic import ValidationError

from agentgw.errors import GatewayError, UpstreamInvalidResponse
from agentgw.exchange import Attempt, Exchange, Principal, Result, TaskContext
from agentgw.identity import OutboundIdentity
from agentgw.mcp.bridges.relay import Caller
from agentgw.mcp.bridges.state import StateSeal
from agentgw.mcp.catalog.catalog import Catalog
from agentgw.mcp.catalog.naming import View
from agentgw.mcp.errors import INTERNAL_ERROR, to_mcp_error
from agentgw.mcp.front.confirm import ask_caller
from agentgw.mcp.upstream.inflight import Relay
from agentgw.mcp.upstream.upstream import ParamMap, Upstreams
from agentgw.mcp.upstream.wire import identity_headers
from agentgw.pipeline import Pipeline
from agentgw.stages.authz import AuthzStage

FRONT_KEY = "agentgw.mcp"  # the ASGI scope entry the plane's front door fills for the handlers
TASK_META_KEY = "io.agentgw/task"
_PROTOCOL_META = "io.modelcontextprotocol/"
_REPLY = "mcp.reply_headers"
_VERSION = "mcp.protocol_version"  # the caller's protocol version (SDK server path)
_DROPPED_META = frozenset({"progressToken", TASK_META_KEY, "traceparent", "tracestate"})
_NO_TRACE = otel_context.Context()

Ctx = ServerRequestContext[Any, Any]


@dataclass(slots=True)
class Front:
    """What the front door established for one HTTP request: who, which task, and the request's headers."""

    principal: Principal
    task: TaskContext
    headers: dict[str, str]
    client: str | None
    rule: str | None
    scopes: frozenset[str] | None = None  # what a JWT granted (API keys carry none)
    reply: dict[str, str] = field(default_factory=dict)  # headers for the answer (what the task has left)


@dataclass(slots=True)
class Call:
    """One request as the handlers see it, whichever path serves it: the SDK server (`Call.of(ctx)`) or the
    direct path (direct.py), which builds its own without a session."""

    front: Front
    params: dict[str, Any]  # the request's params as the caller sent them
    ctx: Ctx | None = None
    _caller: Caller | None = None

    @classmethod
    def of(cls, ctx: Ctx) -> Call:
        return cls(front_of(ctx), dict(ctx.params) if ctx.params else {}, ctx)

    def caller(self) -> Caller:
        if self._caller is None:
            assert self.ctx is not None
            self._caller = Caller.of(self.ctx)
        return self._caller

    def progress(self) -> ProgressFnT | None:
        """Where upstream progress goes: onto the caller's own request stream, with the caller's own token,
        when it asked for progress."""
        meta = self.params.get("_meta")
        ctx = self.ctx
        if ctx is None or not isinstance(meta, dict) or meta.get("progressToken") is None:
            return None
        session = ctx.session

        async def report(progress: float, total: float | None, message: str | None) -> None:
            await session.report_progress(progress, total, message)

        return report


def _user_channels(ex: Exchange, call: Call, seal: StateSeal | None, endpoint: str) -> None:
    """How the hold stage (stages/hold.py) reaches this caller while its call is held: progress notifications on
    its request stream (when it sent a progressToken), and a question through elicitation (confirm.py: an
    `elicitation/create` request on a handshake-era session, an `input_required` round in 2026-07-28)."""
    report = call.progress()
    if report is not None:
        sent = 0

        async def notify(message: str) -> None:
            nonlocal sent
            sent += 1
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await report(float(sent), None, message)

        ex.attrs["notify_progress"] = notify

    async def ask_user(message: str, schema: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        return await ask_caller(ex, call.caller(), call.params, seal, endpoint, message, schema)

    ex.attrs["ask_user"] = ask_user


def front_of(ctx: Ctx) -> Front:
    request = ctx.request
    front = getattr(request, "scope", {}).get(FRONT_KEY) if request is not None else None
    if not isinstance(
        front, Front
    ):  # only reachable if the manager were mounted without the plane's front door
        raise MCPError(INTERNAL_ERROR, "The request did not pass the gateway's front door.")
    return front


def _meta_out(raw: Mapping[str, Any], ex: Exchange, traceparent: str) -> dict[str, Any]:
    """The caller's `_meta` minus protocol keys (re-stamped for the upstream's era) and the progress token
    (the dispatcher mints an upstream-unique one), plus the task and trace context."""
    meta = raw.get("_meta")
    out = (
        {k: v for k, v in meta.items() if not k.startswith(_PROTOCOL_META) and k not in _DROPPED_META}
        if isinstance(meta, dict)
        else {}
    )
    task = ex.outbound_task  # a child task when the budget stage minted one for this delegation
    assert task is not None
    out[TASK_META_KEY] = task
    out["traceparent"] = traceparent
    return out


def _strip_protocol_meta(result: dict[str, Any]) -> None:
    """The upstream's serverInfo stamp must not pass as the gateway's own."""
    meta = result.get("_meta")
    if isinstance(meta, dict) and any(k.startswith(_PROTOCOL_META) for k in meta):
        kept = {k: v for k, v in meta.items() if not k.startswith(_PROTOCOL_META)}
        if kept:
            result["_meta"] = kept
        else:
            del result["_meta"]


def rewrite_content(item: Any, expose: Callable[[str], str]) -> None:
    """Resource links and embedded resources in a tool result or prompt message, named as the endpoint names them."""
    if not isinstance(item, dict):
        return
    kind = item.get("type")
    if kind == "resource_link" and isinstance(item.get("uri"), str):
        item["uri"] = expose(item["uri"])
    elif kind == "resource":
        res = item.get("resource")
        if isinstance(res, dict) and isinstance(res.get("uri"), str):
            res["uri"] = expose(res["uri"])


def _shaped(
    forward: Callable[[Exchange], Awaitable[Result]], version: str
) -> Callable[[Exchange], Awaitable[Result]]:
    """`forward`, its result checked against the caller's protocol version inside the pipeline, where the SDK
    server would check it only after the audit record was written: a result the caller cannot be sent is the
    call's error (502 upstream_invalid_response), never an `ok` on the record and a -32603 on the wire. A
    2026-07-28 result needs `resultType`; "complete" is implied for one built without it (a handshake-era
    answer drops the field)."""

    async def run(ex: Exchange) -> Result:
        result = await forward(ex)
        payload = result.payload
        if isinstance(payload, dict):
            payload.setdefault("resultType", "complete")
            try:
                methods.serialize_server_result(ex.operation, version, payload)
            except KeyError:
                pass  # not a spec method in this version: nothing to check against
            except ValidationError:
                raise UpstreamInvalidResponse(
                    f"The MCP server's answer to {ex.operation} is not a valid result for protocol {version}."
                ) from None
        return result

    return run


class Mediator:
    """The plumbing of one endpoint's handlers. Decides nothing about access itself: every operation is an
    Exchange the pipeline decides (and audits). Fails with the JSON-RPC error of the GatewayError (errors.py)."""

    def __init__(
        self,
        view: View,
        catalog: Catalog,
        upstreams: Upstreams,
        pipeline: Pipeline,
        identity: OutboundIdentity | None = None,
    ) -> None:
        self.view = view
        self.identity = identity  # per-caller credentials for upstreams with an `identity:` block
        self.catalog = catalog
        self.upstreams = upstreams
        self.pipeline = pipeline
        self.path = f"/mcp/{view.name}" if view.name else "/mcp"
        self.authz = next((s for s in pipeline.stages if isinstance(s, AuthzStage)), None)
        self.seal: StateSeal | None = None  # the plane's requestState seal (2026-07-28 confirmation rounds)

    def _exchange(self, call: Call, operation: str, target: str) -> Exchange:
        front = call.front
        ex = Exchange("mcp", operation, target, front.headers, front.client)
        ex.principal = front.principal  # authenticated by the front door for this very HTTP request
        ex.decide("authn", "allow", rule=front.rule)
        ex.task = front.task
        ex.payload = call.params
        ex.attrs["endpoint"] = self.path
        if call.ctx is not None:  # the SDK server's path: it checks the result's shape for this version
            ex.attrs[_VERSION] = call.ctx.protocol_version
        ex.attrs[_REPLY] = front.reply
        if front.scopes:
            ex.attrs["scopes"] = front.scopes
        _user_channels(ex, call, self.seal, self.path)
        return ex

    def _allows(self, ex: Exchange, target: str, action: str) -> bool:
        """Would the policy let this exchange's principal do `action` on `target`? (For listings and filters.)"""
        principal, authz = ex.principal, self.authz
        return authz is None or (principal is not None and authz.allows(principal, target, action))

    async def _run(
        self,
        ex: Exchange,
        forward: Callable[[Exchange], Awaitable[Result]],
        unseen: GatewayError | None = None,
    ) -> dict[str, Any]:
        """Mediate `ex`. `unseen` is the error for a name that does not exist: authz answers a policy denial with
        it (unless authz.reveal_denied), so what a caller may not use is indistinguishable from what does not
        exist. The audit record still says denied, with the deciding rule."""
        ex.unseen = unseen
        version = ex.attrs.get(_VERSION)
        try:
            result = await self.pipeline.run(ex, forward if version is None else _shaped(forward, version))
        except GatewayError as err:
            raise to_mcp_error(err, ex.task.task_id if ex.task else None) from None
        reply = ex.attrs.get("reply_headers")
        if reply:  # on the HTTP answer when it is still to be sent (JSON answers; stream headers went first)
            ex.attrs[_REPLY].update(reply)
        payload: dict[str, Any] = result.payload
        return payload

    async def _refuse(self, ex: Exchange, err: GatewayError) -> NoReturn:
        """An operation refused before forwarding (unknown name): recorded like any other."""
        err = await self.pipeline.reject(ex, err)
        raise to_mcp_error(err, ex.task.task_id if ex.task else None)

    async def _upstream(
        self,
        call: Call,
        ex: Exchange,
        server: str,
        method: str,
        params: dict[str, Any],
        param_map: ParamMap | None = None,
        *,
        caller: Caller | None = None,
        relay: Relay | None = None,
        progress: ProgressFnT | None = None,
    ) -> dict[str, Any]:
        """Send one request upstream as part of `ex`, and return its raw result. Progress goes to `progress`, else
        onto the caller's own request stream with its own token (when it asked for progress); `caller` brings
        its input capabilities and log level, `relay` receives the server's log messages and input requests."""
        up = self.upstreams.get(server)
        assert up is not None and ex.task is not None
        attempt = Attempt(len(ex.attempts) + 1, f"mcp:{server}", "ok")
        traceparent = f"00-{ex.task.trace_id}-{attempt.span_id}-01"  # the upstream's parent: this attempt
        params["_meta"] = _meta_out(call.params, ex, traceparent)
        headers = {"x-agentgw-task": ex.outbound_task or ex.task.task_id, "traceparent": traceparent}
        on_progress = progress or call.progress()
        started = time.perf_counter()
        ex.attempts.append(attempt)
        # The mcp SDK injects the ambient OpenTelemetry context into `_meta`; on this task that is the caller's
        # (extracted from its `_meta`), which would overwrite the gateway's traceparent: clear it for the leg.
        detached = otel_context.attach(_NO_TRACE)
        reset = None
        try:
            creds = self.identity.of(f"mcp:{server}") if self.identity is not None else None
            if (
                creds is not None
            ):  # who the caller is, as the gateway vouches for it (never the caller's token)
                extra = await creds.headers(ex.principal, headers["x-agentgw-task"])
                reset = identity_headers.set(extra)  # for transports that send headers per connection (SSE)
                headers.update(extra)
            result = await up.request(
                method,
                params,
                headers=headers,
                on_progress=on_progress,
                param_map=param_map,
                relay=relay,
                caps=caller.caps if caller is not None else None,
                log_level=caller.log_level if caller is not None else None,
                principal=ex.principal,  # whose upstream session (registry `session_scope`)
            )
        except GatewayError as err:
            attempt.outcome = "timeout" if err.status == 504 else "error"
            attempt.error = err.code
            raise
        except BaseException:  # cancelled (the caller went away or cancelled), or a bug: not an answer
            attempt.outcome = "cancelled"
            raise
        finally:
            if reset is not None:
                identity_headers.reset(reset)
            otel_context.detach(detached)
            attempt.latency_ms = (time.perf_counter() - started) * 1000.0
        _strip_protocol_meta(result)
        result.setdefault("resultType", "complete")
        return result

    def _expose(self, server: str) -> Callable[[str], str]:
        return lambda uri: self.catalog.expose_uri(self.view, server, uri)
