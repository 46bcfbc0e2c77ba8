"""The MCP plane's front door (pure ASGI, both eras, `/mcp` and `/mcp/{virtual_server}`): API key, body limit,
JSON depth, batch and JSON refusals, the task context and the session's owner, then the endpoint's session
manager. It also owns the upstream connections' lifetime (start/aclose)."""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from agentgw import jsontext
from agentgw.errors import BadRequest, GatewayError, InvalidJSON, NotFound, PayloadTooLarge
from agentgw.exchange import Exchange, Principal, TaskContext, task_from_headers
from agentgw.frontdoor import TooDeep, check_depth
from agentgw.http import (
    ClientGone,
    Message,
    Receive,
    Scope,
    Send,
    client_host,
    header_dict,
    read_body,
    send_bytes,
)
from agentgw.identity import OutboundIdentity
from agentgw.mcp.bridges.relay import HeldCalls
from agentgw.mcp.bridges.roundtrip import RoundTrips
from agentgw.mcp.bridges.state import StateSeal, gateway_secret
from agentgw.mcp.catalog.catalog import Catalog
from agentgw.mcp.catalog.naming import View, views
from agentgw.mcp.catalog.pinning import Pins
from agentgw.mcp.catalog.pinops import PinOps
from agentgw.mcp.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    PAYLOAD_TOO_LARGE,
    UNAUTHENTICATED,
    error_body,
    jsonrpc_refusals,
    rpc_code,
)
from agentgw.mcp.front.endpoint import FRONT_KEY, TASK_META_KEY, Endpoint, Front
from agentgw.mcp.front.sessions import OPENING, Opening
from agentgw.mcp.front.shared import make_shared
from agentgw.mcp.guard_content import MCPContent
from agentgw.mcp.upstream.upstream import Upstreams
from agentgw.metrics import Metrics
from agentgw.pipeline import Pipeline
from agentgw.registry import MCPSection, MCPServer
from agentgw.secrets import without_credentials
from agentgw.settings import Settings, secret_of
from agentgw.stages.audit import AuditStage
from agentgw.stages.guard import guard_stage
from agentgw.upstream import UpstreamPool

log = logging.getLogger("agentgw.mcp")


# DNS-rebinding protection for loopback peers (the SDK's defaults, checked the same way, without building a
# Request per call): the Host must be a loopback name and a browser Origin a loopback origin. A remote peer's
# Origin, when sent, must be the Host's own.
class MCPPlane:
    """The MCP endpoint. Decides who may talk to it (a valid API key on every HTTP request; a session is usable
    only by the principal that opened it, anyone else gets 404; Host and Origin are the front door's, see
    agentgw/frontdoor.py), and what each request's task is (`x-agentgw-task`, else
    `params._meta["io.agentgw/task"]`, else one per handshake session or one per request).
    Fails with HTTP 401 (+ `WWW-Authenticate: Bearer`), 404 (unknown endpoint or session), 413 (body limit)
    and 400 (-32700 parse error, -32600 batch, non-object or nested deeper than `limits.max_json_depth`), each with a JSON-RPC
    error body; everything after that is the protocol's (see front/endpoint.py)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        pool: UpstreamPool | None = None,
        identity: OutboundIdentity | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        section = settings.registry_data.mcp
        self.pipeline = pipeline
        self.limit = settings.limits.max_body_bytes
        self.depth = settings.limits.max_json_depth
        self.identify = [s for s in pipeline.stages if s.identifies]
        guard = guard_stage(pipeline)
        if guard is not None:  # guardrails configured: tell the stage where arguments and answers' texts are
            guard.serve("mcp", MCPContent())

        def cwd_of(server: MCPServer) -> Path:
            return settings.resolve(server.cwd) if server.cwd else settings.base_dir

        http = (lambda: pool.session) if pool is not None else None
        self.upstreams = Upstreams(list(section.servers), cwd_of, self._changed, self._updated, http)
        pinning = settings.tool_pinning
        self.pins = Pins(pinning, settings.resolve(pinning.lock_file), metrics)
        self.catalog = Catalog(section, self.upstreams, self.pins if self.pins.active else None)
        audit = next((s for s in pipeline.stages if isinstance(s, AuditStage)), None)

        async def record(ex: Exchange) -> None:
            if audit is not None:
                await audit.submit(ex, time.perf_counter())

        self.pinops = PinOps(self.catalog, self.pins, self._repinned, record)
        self.held = HeldCalls()
        secret = gateway_secret(secret_of(settings))
        self.trips = RoundTrips(StateSeal(secret), self.held)
        # Host/Origin are checked at the front door (agentgw/frontdoor.py), not by the session managers.

        def endpoint(view: View) -> Endpoint:
            return Endpoint(
                view,
                self.catalog,
                self.upstreams,
                pipeline,
                self.limit,
                self.trips,
                secret,
                settings.mcp.sessions,
                identity,
                make_shared(settings, view.name),
            )

        self._endpoint = endpoint
        self.endpoints = {name: self._endpoint(view) for name, view in views(section).items()}
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._users: dict[Principal, AuthenticatedUser] = {}
        # server -> the connection whose listings were fetched after it opened; set once they are in
        self._listed: dict[str, int] = {}
        self._warmed: dict[str, anyio.Event] = {}

    def _user(self, principal: Principal) -> AuthenticatedUser:
        """The SDK's view of the principal (what a session is bound to), built once per principal."""
        user = self._users.get(principal)
        if user is None:
            if len(self._users) > 10_000:
                self._users.clear()
            user = self._users[principal] = AuthenticatedUser(
                AccessToken(
                    token=f"agentgw:{principal.key_id or principal.subject}",  # never the credential itself
                    client_id=principal.subject,
                    scopes=list(principal.roles),
                    subject=principal.subject,
                )
            )
        return user

    def _changed(self, server: str, kind: str | None) -> None:
        """An upstream's list changed (or it reconnected: kind None): refetch, and tell the endpoints' callers."""
        self.catalog.invalidate(server, kind)
        if kind is None and self._tg is not None:
            self._tg.start_soon(self._warm, server)
        if kind is not None:
            for endpoint in self.endpoints.values():
                if server in endpoint.view.servers:
                    endpoint.events.list_changed(kind)

    def _repinned(self, servers: set[str]) -> None:
        """Pins changed (an approval): callers of the endpoints that show those servers re-list their tools."""
        for endpoint in self.endpoints.values():
            if servers.intersection(endpoint.view.servers):
                endpoint.events.list_changed("tools")

    async def _warm(self, server: str) -> None:
        """A server just (re)connected: fetch its listings now, so a server that connects but cannot be listed
        (an answer the gateway cannot read) is known at once (`status`, /readyz), not at the first caller's
        listing. Failures are the catalog's to record."""
        up = self.upstreams.get(server)
        if up is None:  # pragma: no cover - only registry servers connect
            return
        connects = up.connects
        try:
            for kind in ("tools", "prompts", "resources", "templates"):
                await self.catalog.listing(server, kind, "fresh")
            self._listed[server] = connects
        except GatewayError:  # down again already: its state says so
            pass
        finally:
            self._warmed.setdefault(server, anyio.Event()).set()

    async def warmed(self, server: str) -> None:
        """Wait until the server's listings were fetched after it first connected (for tests; no timeout)."""
        await self._warmed.setdefault(server, anyio.Event()).wait()

    def _updated(self, server: str, uri: str) -> None:
        """An upstream's resource changed: tell the callers subscribed to it, under the endpoint's URI."""
        for endpoint in self.endpoints.values():
            if server in endpoint.view.servers:
                exposed = self.catalog.expose_uri(endpoint.view, server, uri)
                endpoint.events.resource_updated(server, uri, exposed)

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every endpoint's session manager and every upstream's owner task (stdio servers launch now)."""
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            self._tg = tg
            self.upstreams.start(tg)
            self.held.start(tg)
            for endpoint in self.endpoints.values():
                await self._run(endpoint, stack, tg)
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._tg = stack, tg

    @staticmethod
    async def _run(endpoint: Endpoint, stack: AsyncExitStack, tg: anyio.abc.TaskGroup) -> None:
        endpoint.events.start(tg)
        if endpoint.shared is not None:
            await tg.start(endpoint.shared.run)
        stack.push_async_callback(endpoint.direct.aclose)
        await stack.enter_async_context(endpoint.manager.run())

    @staticmethod
    async def _serve(endpoint: Endpoint, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with endpoint.manager.run():
            task_status.started()
            await anyio.sleep_forever()

    async def apply_registry(self, section: MCPSection) -> set[str]:
        """A reloaded registry, applied in place: only the servers whose entry changed are reconnected (the
        others keep their upstream sessions, and callers their sessions and streams); endpoints follow the new
        views (a new virtual server starts serving, a removed one answers 404). Returns the changed servers."""
        changed = self.upstreams.apply(list(section.servers))
        self.catalog.apply(section, changed)
        fresh = views(section)
        for name, view in fresh.items():
            endpoint = self.endpoints.get(name)
            if endpoint is not None and endpoint.view.prefix == view.prefix:
                endpoint.view = view  # read on every request: its sessions keep going with the new view
                continue
            endpoint = self._endpoint(view)
            if self._stack is not None and self._tg is not None:
                endpoint.events.start(self._tg)
                if endpoint.shared is not None:
                    await self._tg.start(endpoint.shared.run)
                self._stack.push_async_callback(endpoint.direct.aclose)
                # Its session manager runs in a task of the plane's group: a context is left by the task
                # that entered it, and this call is not the one that started the plane.
                await self._tg.start(self._serve, endpoint)
            self.endpoints[name] = endpoint
        for name in self.endpoints.keys() - fresh.keys():
            del self.endpoints[name]  # its session manager stops at shutdown; nobody can reach it meanwhile
        for server in changed:
            for kind in ("tools", "prompts", "resources"):
                self._changed(server, kind)  # callers re-list what that server offers
        return changed

    async def aclose(self) -> None:
        """Close every session, stop every upstream (stdio processes are terminated)."""
        stack, self._stack, self._tg = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def status(self) -> dict[str, dict[str, Any]]:
        """Each upstream's state, and whether it is `ready`: connected, and listed since it connected. When it
        is not, `reason` says why (its connection error, or why its listings failed)."""
        out = self.upstreams.status()
        for name, st in out.items():
            up = self.upstreams.get(name)
            failure = self.catalog.failure(name)
            listed = up is not None and self._listed.get(name) == up.connects
            st["ready"] = st["state"] == "ready" and listed and failure is None
            if st["ready"]:
                st["reason"] = None
            elif st["state"] != "ready":
                st["reason"] = st["error"] or f"not connected ({st['state']})"
            else:
                st["reason"] = (
                    f"left out of listings: {failure}" if failure else "connected; listings not fetched yet"
                )
        return out

    def registry_status(self) -> dict[str, Any]:
        """`GET /admin/registry`'s `mcp` part: each server's connection (`status`), its URL without credentials,
        how many tools its last listing held (None: not listed yet) and, with tool pinning on, how many of them
        are pinned, changed or new. Fetches nothing."""
        pins = self.pins if self.pins.mode != "off" else None
        if pins is not None:
            pins.refresh()  # an approval by the CLI or another worker counts at once
        servers = []
        for name, st in self.status().items():
            up = self.upstreams.get(name)
            tools = self.catalog.cached(name, "tools")
            counts = pins.counts(name, tools) if pins is not None and tools is not None else None
            url = without_credentials(up.spec.url) if up is not None else None
            servers.append(
                {
                    "name": name,
                    "url": url,
                    **st,
                    "tools": None if tools is None else len(tools),
                    "pins": counts,
                }
            )
        return {
            "servers": servers,
            "virtual_servers": sorted(n for n in self.endpoints if n),
            "pinning": {"mode": self.pins.mode, "scan": self.pins.scan, "lock_error": self.pins.error},
        }

    async def _recorded(self, ex: Exchange, send: Send, err: GatewayError, rpc: int) -> None:
        """A refusal after authentication, before the protocol: recorded like any request (its caller is known),
        so no request to /mcp finishes without an audit record."""
        ex.operation, ex.task = "request", task_from_headers(ex.headers)
        seen = await self.pipeline.reject(ex, err)  # authn is done: only the record is added
        await _refuse(send, seen.status, rpc, seen.message, seen.code)

    # -- the front door ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = header_dict(scope)  # Host and Origin were checked at the front door (agentgw/frontdoor.py)
        client = client_host(scope)
        ex = Exchange("mcp", "connect", "mcp:*", headers, client)
        try:
            for stage in self.identify:
                await stage.on_request(ex)
        except GatewayError as err:
            err = await self.pipeline.reject(Exchange("mcp", "connect", "mcp:*", headers, client), err)
            # authn's own challenge when it has one (e.g. with resource_metadata for OAuth discovery)
            extra = {k.lower(): v for k, v in err.headers.items()}
            if err.status == 401 and "www-authenticate" not in extra:
                extra["www-authenticate"] = 'Bearer realm="agentgw"' + (
                    ', error="invalid_token"' if "authorization" in headers else ""
                )
            code = UNAUTHENTICATED if err.status == 401 else rpc_code(err)
            await _refuse(send, err.status, code, err.message, err.code, extra)
            return
        principal = ex.principal or Principal("anonymous", auth="anonymous")
        rule = next((d.rule for d in ex.decisions if d.outcome == "allow"), None)

        name = scope["path"][len("/mcp") :].strip("/")
        endpoint = self.endpoints.get(name)
        if self._stack is None:  # not started yet, or shutting down: the session managers are not running
            await _refuse(send, 503, INTERNAL_ERROR, "The MCP endpoint is not running.", "unavailable")
            return
        if endpoint is None:
            lost = NotFound(f"Unknown MCP endpoint {scope['path']}.", code="unknown_endpoint")
            await self._recorded(ex, send, lost, INVALID_REQUEST)
            return

        parsed: Any = None
        body: bytes | None = None
        if scope["method"] == "POST":
            try:
                body = await read_body(receive, headers, self.limit)
            except ClientGone:
                return
            except PayloadTooLarge as err:
                await self._recorded(ex, send, err, PAYLOAD_TOO_LARGE)
                return
            try:
                check_depth(body, self.depth)
            except TooDeep as deep:  # this is what an attack looks like
                await self._recorded(ex, send, deep, INVALID_REQUEST)
                return
            try:
                parsed = jsontext.loads(body)
            except orjson.JSONDecodeError:
                broken = InvalidJSON("Parse error: the body is not valid JSON.")
                await self._recorded(ex, send, broken, PARSE_ERROR)
                return
            if isinstance(parsed, list):
                batch = BadRequest("Batch requests are not supported.", code="batch")
                await self._recorded(ex, send, batch, INVALID_REQUEST)
                return
            if not isinstance(parsed, dict):
                invalid = BadRequest("The body must be one JSON-RPC message.", code="invalid")
                await self._recorded(ex, send, invalid, INVALID_REQUEST)
                return

        task, chosen = _task(headers, parsed)
        front = Front(principal, task, headers, client, rule, ex.attrs.get("scopes"))
        scope[FRONT_KEY] = front
        # The SDK binds each session to the credential that opened it and answers 404 to anyone else.
        user = scope["user"] = self._user(principal)
        task_id = task.task_id.encode("latin-1")

        async def send_with_task(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                tid = task_id
                if not chosen:  # the `initialize` answer: name the task the new session's requests will carry
                    sid = next((v for k, v in raw if k.lower() == b"mcp-session-id"), None)
                    tid = _session_task(sid.decode("latin-1")).encode() if sid else task_id
                reply = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in front.reply.items()]
                message = {**message, "headers": [*raw, (b"x-agentgw-task", tid), *reply]}
            await send(message)

        plan = None
        opening = None
        if parsed is not None:
            if parsed.get("method") == "initialize" and "mcp-session-id" not in headers:
                params = parsed.get("params")
                opening = OPENING.set(Opening(principal, params if isinstance(params, dict) else {}))
            sid = headers.get("mcp-session-id")
            if sid and endpoint.shared is not None and _is_answer(parsed):
                await endpoint.manager.forward_answer(sid, principal, body or b"")
            if parsed.get("method") == "notifications/cancelled":
                endpoint.direct.cancelled(headers.get("mcp-session-id"), parsed.get("params"), user)
            plan = endpoint.direct.plan(scope, headers, parsed, user)
        reply = jsonrpc_refusals(send_with_task)
        if plan is not None:
            await endpoint.direct.serve(plan, front, receive, reply)
            return
        try:
            await endpoint.manager.handle_request(scope, _replay(body, receive), reply)
        finally:
            if opening is not None:
                OPENING.reset(opening)


def _is_answer(message: dict[str, Any]) -> bool:
    """A client's answer to a server-to-client request (it has no method, an id, and a result or an error)."""
    return "method" not in message and "id" in message and ("result" in message or "error" in message)


def _session_task(session_id: str) -> str:
    return "s-" + hashlib.sha256(session_id.encode("latin-1")).hexdigest()[:24]


def _task(headers: dict[str, str], parsed: Any) -> tuple[TaskContext, bool]:
    """`x-agentgw-task` wins; else `params._meta["io.agentgw/task"]`; else one task per handshake session
    (derived from the session id, so it needs no state); else a fresh one for this request. The flag says
    whether the task was chosen (by the caller or by the session) rather than made up for this request."""
    if "x-agentgw-task" in headers:
        return task_from_headers(headers), True
    params = parsed.get("params") if isinstance(parsed, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    hints: dict[str, str] = {}
    if isinstance(meta, dict):
        hint = meta.get(TASK_META_KEY)
        if isinstance(hint, str) and hint.isascii():
            hints["x-agentgw-task"] = hint
        tp = meta.get("traceparent")
        if "traceparent" not in headers and isinstance(tp, str) and tp.isascii():
            hints["traceparent"] = tp
    session = headers.get("mcp-session-id")
    if "x-agentgw-task" not in hints and session:
        hints["x-agentgw-task"] = _session_task(session)
    chosen = "x-agentgw-task" in hints
    return task_from_headers({**headers, **hints} if hints else headers), chosen


def _replay(body: bytes | None, receive: Receive) -> Receive:
    """Hand the already-read body to the SDK once, then pass the real channel through (disconnects)."""
    if body is None:
        return receive
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


async def _refuse(
    send: Send,
    status: int,
    code: int,
    message: str,
    reason: str,
    extra: dict[str, str] | None = None,
) -> None:
    body = orjson.dumps(error_body(code, message, {"code": reason, "status": status}))
    await send_bytes(send, status, body, extra=extra)
