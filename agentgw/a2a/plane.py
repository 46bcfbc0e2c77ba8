"""The A2A plane as pure ASGI: `GET /a2a` (the directory), `GET /a2a/{agent}/.well-known/agent-card.json` (the
rewritten card), `POST /a2a/{agent}` (JSON-RPC) and `/a2a/{agent}/rest/...` (HTTP+JSON). Each operation is one
Exchange (plane `a2a`, operation = the A2A 1.0 method, target `a2a:<agent>`, action `call` or `read`) through the
pipeline; errors are A2A errors in the binding's own envelope, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agentgw.a2a.catalog.cards import (
    CardCache,
    CardUnavailable,
    GatewaySecurity,
    etag_matches,
    rewrite_card,
)
from agentgw.a2a.catalog.directory import CARD_SUFFIX, directory_entry, served_card
from agentgw.a2a.errors import AGENT_NOT_FOUND, CONTENT_TYPE_NOT_SUPPORTED, A2AError, http_status
from agentgw.a2a.frontdoor import jsonrpc, rest, rest_v03
from agentgw.a2a.guard_content import A2AContent
from agentgw.a2a.mediate import Budget, Call, Mediator
from agentgw.a2a.methods import SEND, STREAM, TASK_META_KEY, Method
from agentgw.a2a.ownership import Ownership, make_ownership
from agentgw.a2a.upstream.agent import AgentUnavailable, AgentUpstream
from agentgw.admin import WELL_KNOWN
from agentgw.errors import GatewayError, NotFound
from agentgw.exchange import Exchange, Result, task_from_headers
from agentgw.frontdoor import check_depth
from agentgw.http import (
    ClientGone,
    Receive,
    Scope,
    Send,
    cancel_on_disconnect,
    client_host,
    header_dict,
    read_body,
    send_bytes,
    send_stream,
)
from agentgw.identity import OutboundIdentity, SigningKeys
from agentgw.pipeline import Pipeline
from agentgw.registry import A2ASection
from agentgw.secrets import without_credentials
from agentgw.settings import Settings
from agentgw.stages.guard import guard_stage
from agentgw.upstream import UpstreamPool

REST_MEDIA = [(b"content-type", rest.MEDIA_TYPE.encode())]
_JSON_TYPES = ("application/json", "application/a2a+json")


def _json_body(headers: dict[str, str]) -> bool:
    """A body without a Content-Type is read as JSON; one that names another type is refused (415)."""
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return not ctype or ctype in _JSON_TYPES


class AgentNotFound(NotFound):
    code = "agent_not_found"

    @classmethod
    def named(cls, name: str) -> AgentNotFound:
        """The one answer for an agent that does not exist and for one the caller may not use (authz)."""
        return cls(f"The agent '{name[:100]}' does not exist or you do not have access to it.")


def _rpc_not_found(err: GatewayError) -> GatewayError:
    return A2AError(AGENT_NOT_FOUND, err.message) if isinstance(err, AgentNotFound) else err


class A2APlane:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        pool: UpstreamPool,
        identity: OutboundIdentity | None = None,
        keys: SigningKeys | None = None,
        budget: Budget | None = None,
    ) -> None:
        cfg = settings.a2a
        self.settings, self.pipeline, self.pool, self.identity, self.keys = (
            settings,
            pipeline,
            pool,
            identity,
            keys,
        )
        self.limit = settings.limits.max_body_bytes
        self.depth = settings.limits.max_json_depth
        guard = guard_stage(pipeline)
        if guard is not None:  # guardrails configured: tell the stage where messages' and answers' texts are
            guard.serve("a2a", A2AContent())
        self.public_url = cfg.public_url.rstrip("/") if cfg.public_url else None
        self.advertise_0_3 = cfg.advertise_0_3
        self.cards = CardCache(lambda: pool.session, cfg.card_ttl_s)
        jwt = settings.auth.jwt
        self.jwt = jwt is not None
        self.agents: dict[str, AgentUpstream] = {}
        self.apply_registry(settings.registry_data.a2a)
        self.ownership: Ownership = make_ownership(settings)
        self.mediator = Mediator(
            lambda: self.agents,
            self.ownership,
            budget,
            self.rewrite,
            cfg.keepalive_s,
            cfg.push.allow,
        )

    def apply_registry(self, section: A2ASection) -> None:
        """A reloaded registry: agents whose entry is unchanged keep their upstream (and cached card)."""
        old = self.agents
        fresh: dict[str, AgentUpstream] = {}
        for a in section.agents:
            kept = old.get(a.name)
            if kept is not None and kept.cfg == a:
                fresh[a.name] = kept
            else:
                creds = self.identity.of(f"a2a:{a.name}") if self.identity is not None else None
                self.cards.invalidate(a.name)
                fresh[a.name] = AgentUpstream(a, self.pool, self.cards, creds)
        self.agents = fresh

    def registry_status(self) -> dict[str, Any]:
        """`GET /admin/registry`'s `a2a` part: each agent's URL (without credentials) and what the card cache
        knows of it (agentgw/a2a/catalog/cards.py `peek`); asks no agent anything."""
        agents = [
            {
                "name": name,
                "url": without_credentials(str(a.cfg.url)),
                "supervised": bool(a.cfg.command),
                **self.cards.peek(name),
            }
            for name, a in self.agents.items()
        ]
        return {"agents": agents}

    async def start(self) -> None:
        await self.ownership.start()

    async def aclose(self) -> None:
        await self.ownership.aclose()

    # -- dispatch -----------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        rest_of = path[len("/a2a") :].strip("/")
        if not rest_of:
            if method != "GET":
                await self._plain_error(
                    send, GatewayError("Use GET /a2a.", status=405, code="method_not_allowed")
                )
                return
            await self.directory(scope, receive, send)
            return
        agent, _, sub = rest_of.partition("/")
        sub = "/" + sub if sub else ""
        if sub == CARD_SUFFIX:
            await self.card(scope, receive, send, agent)
        elif sub == "":
            if method != "POST":
                await self._plain_error(
                    send,
                    GatewayError(
                        f"Use POST /a2a/{agent[:100]} (JSON-RPC).", status=405, code="method_not_allowed"
                    ),
                )
                return
            await self.jsonrpc(scope, receive, send, agent)
        elif sub.startswith("/rest" + rest_v03.PREFIX):
            await self.rest03(scope, receive, send, agent, sub[len("/rest") :])
        elif sub == "/rest" or sub.startswith("/rest/"):
            await self.rest(scope, receive, send, agent, sub[len("/rest") :])
        else:
            await self._plain_error(send, NotFound(f"Unknown path {path[:200]}.", code="unknown_url"))

    async def _plain_error(self, send: Send, err: GatewayError) -> None:
        status, body = rest.error_response(err)
        await send_bytes(send, status, body, extra=err.headers)

    def base_url(self, scope: Scope, headers: dict[str, str]) -> str:
        """The gateway's URL as this client reached it (the Host was checked by the front door)."""
        if self.public_url:
            return self.public_url
        host = headers.get("host") or "{}:{}".format(*(scope.get("server") or ("127.0.0.1", 80)))
        return f"{scope.get('scheme', 'http')}://{host}"

    def _exchange(self, scope: Scope, operation: str, agent: str) -> Exchange:
        headers = header_dict(scope)
        ex = Exchange("a2a", operation, f"a2a:{agent}", headers, client_host(scope))
        ex.task = task_from_headers(headers)
        ex.unseen = AgentNotFound.named(agent)
        return ex

    def _accept(
        self, scope: Scope, ex: Exchange, m: Method, params: dict[str, Any], reply: dict[str, str]
    ) -> str:
        """A request read whole, whatever its binding: its params and action on the exchange, in its task (told to
        the client in `reply`); returns the base URL the client used."""
        ex.payload = params
        ex.attrs["action"] = m.action
        self._derive_task(ex, params, m)
        assert ex.task is not None
        reply["x-agentgw-task"] = ex.task.task_id
        return self.base_url(scope, ex.headers)

    @staticmethod
    def _derive_task(ex: Exchange, params: dict[str, Any], method: Method) -> None:
        """No `x-agentgw-task`: the task a message names in its metadata (`"io.agentgw/task"`, what the gateway
        hands an agent it delegates to, as the MCP plane reads `_meta`); else a conversation's calls share a task,
        named after its contextId."""
        if ex.task is None or ex.task.chosen or method not in (SEND, STREAM):
            return
        msg = params.get("message")
        if not isinstance(msg, dict):
            return
        meta = msg.get("metadata")
        hint = meta.get(TASK_META_KEY) if isinstance(meta, dict) else None
        if isinstance(hint, str) and hint.strip() and len(hint) <= 200 and hint.isprintable():
            ex.task.task_id, ex.task.chosen = hint.strip(), True
            return
        ctx = msg.get("contextId")
        if isinstance(ctx, str) and ctx and len(ctx) <= 180 and ctx.isprintable():
            ex.task.task_id, ex.task.chosen = f"a2a-ctx-{ctx}", True

    # -- JSON-RPC -----------------------------------------------------------------------------------------------

    async def jsonrpc(self, scope: Scope, receive: Receive, send: Send, agent: str) -> None:
        ex = self._exchange(scope, "request", agent)
        assert ex.task is not None
        reply = {"x-agentgw-task": ex.task.task_id}
        version = jsonrpc.version_of(ex.headers, scope.get("query_string", b""))
        era = "1.0" if jsonrpc.major_minor(version) == "1.0" else "0.3"
        try:
            if agent not in self.agents:
                raise AgentNotFound.named(agent)
            ex.body = await read_body(receive, ex.headers, self.limit)
            check_depth(ex.body, self.depth)
            req = jsonrpc.read(ex.body, version)
        except ClientGone:
            return
        except GatewayError as err:
            rpc_id = err.rpc_id if isinstance(err, jsonrpc.Refused) else None
            if isinstance(err, jsonrpc.Refused) and err.method:
                ex.operation = err.method
            if isinstance(err, jsonrpc.Refused) and err.era:
                # The method's era, not the header's: a version refusal is told in the refused method's envelope.
                era = err.era
            err = await self.pipeline.reject(ex, err)
            body = jsonrpc.error_body(rpc_id, _rpc_not_found(err), era, ex.task.task_id)
            await send_bytes(send, http_status(err), body, extra={**reply, **err.headers})
            return
        m, rpc_id, era = req.method, req.rpc_id, req.version
        ex.operation = m.name
        base = self._accept(scope, ex, m, req.params, reply)
        call = Call(
            agent,
            m,
            req.params,
            rpc_id,
            era,
            "JSONRPC",
            lambda ev: jsonrpc.event_frame(rpc_id, ev, era),
            lambda err: jsonrpc.error_frame(rpc_id, err, era),
            base,
        )

        async def render(result: Result) -> tuple[int, bytes]:
            return 200, jsonrpc.result_body(rpc_id, m, result.payload, era)

        async def fail(err: GatewayError) -> tuple[int, bytes]:
            return http_status(err), jsonrpc.error_body(
                rpc_id, _rpc_not_found(err), era, ex.task.task_id if ex.task else None
            )

        await self._run(ex, call, receive, send, reply, render, fail)

    # -- HTTP+JSON ----------------------------------------------------------------------------------------------

    async def rest(self, scope: Scope, receive: Receive, send: Send, agent: str, sub: str) -> None:
        ex = self._exchange(scope, "request", agent)
        assert ex.task is not None
        reply = {"x-agentgw-task": ex.task.task_id}
        version = jsonrpc.version_of(ex.headers, scope.get("query_string", b""))
        try:
            if agent not in self.agents:
                raise AgentNotFound.named(agent)
            route = rest.match(scope["method"], sub or "/")
            ex.operation = route.method.name
            if route.method.verb == "POST" and not _json_body(ex.headers):
                raise GatewayError(
                    "Content-Type must be application/json or application/a2a+json.",
                    status=415,
                    code="unsupported_media_type",
                )
            ex.body = await read_body(receive, ex.headers, self.limit)
            check_depth(ex.body, self.depth)
            if jsonrpc.major_minor(version) != "1.0":
                raise A2AError(-32009, f"A2A version '{version[:20]}' is not supported on this binding.")
            params = rest.params_of(route, scope.get("query_string", b""), ex.body)
        except ClientGone:
            return
        except GatewayError as err:
            err = await self.pipeline.reject(ex, err)
            status, body = rest.error_response(err)
            await send_bytes(send, status, body, extra={**reply, **err.headers})
            return
        m = route.method
        base = self._accept(scope, ex, m, params, reply)
        call = Call(agent, m, params, None, "1.0", "HTTP+JSON", rest.event_frame, rest.error_frame, base)

        async def render(result: Result) -> tuple[int, bytes]:
            return 200, rest.result_body(result.payload)

        async def fail(err: GatewayError) -> tuple[int, bytes]:
            return rest.error_response(err)

        await self._run(ex, call, receive, send, reply, render, fail, REST_MEDIA)

    async def rest03(self, scope: Scope, receive: Receive, send: Send, agent: str, sub: str) -> None:
        """The 0.3 HTTP+JSON paths (`/rest/v1/...`): read into the 1.0 method and params, answered in 0.3 shape."""
        ex = self._exchange(scope, "request", agent)
        assert ex.task is not None
        reply = {"x-agentgw-task": ex.task.task_id}
        try:
            if agent not in self.agents:
                raise AgentNotFound.named(agent)
            route = rest_v03.match(scope["method"], sub)
            ex.operation = route.method.name
            if rest_v03.reads_body(route) and not _json_body(ex.headers):
                raise A2AError(CONTENT_TYPE_NOT_SUPPORTED, "Content-Type must be application/json.")
            ex.body = await read_body(receive, ex.headers, self.limit)
            check_depth(ex.body, self.depth)
            rest_v03.check_version(jsonrpc.version_of(ex.headers, scope.get("query_string", b"")))
            params = rest_v03.params_of(route, scope.get("query_string", b""), ex.body)
        except ClientGone:
            return
        except GatewayError as err:
            err = await self.pipeline.reject(ex, err)
            status, body = rest_v03.error_response(err)
            await send_bytes(send, status, body, extra={**reply, **err.headers})
            return
        m = route.method
        base = self._accept(scope, ex, m, params, reply)
        frame, error_frame = rest_v03.event_frame, rest_v03.error_frame
        # a JSON-RPC id for an agent reached over JSON-RPC (a 0.3 agent refuses a null one)
        rpc_id = f"agentgw-{ex.task.trace_id[:16]}"
        call = Call(agent, m, params, rpc_id, "0.3", "HTTP+JSON", frame, error_frame, base)

        async def render(result: Result) -> tuple[int, bytes]:
            return rest_v03.result_body(m, result.payload)

        async def fail(err: GatewayError) -> tuple[int, bytes]:
            return rest_v03.error_response(err)

        await self._run(ex, call, receive, send, reply, render, fail)

    # -- both bindings ------------------------------------------------------------------------------------------

    async def _run(
        self,
        ex: Exchange,
        call: Call,
        receive: Receive,
        send: Send,
        reply: dict[str, str],
        render: Callable[[Result], Awaitable[tuple[int, bytes]]],
        fail: Callable[[GatewayError], Awaitable[tuple[int, bytes]]],
        media: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        def gone() -> None:
            ex.stream_cut = "client_disconnect"

        async def mediate() -> None:
            try:
                result = await self.pipeline.run(ex, lambda e: self.mediator.forward(e, call))
            except GatewayError as err:
                status, body = await fail(err)
                await send_bytes(send, status, body, extra={**reply, **err.headers})
                return
            extra = {**reply, **ex.attrs.get("reply_headers", {})}
            if result.stream is not None:
                await send_stream(send, 200, result.stream, extra=extra)
                return
            status, body = await render(result)
            if media is not None:
                await send_bytes(send, status, body, media, extra=extra)
            else:
                await send_bytes(send, status, body, extra=extra)

        await cancel_on_disconnect(receive, mediate(), gone)

    # -- cards and the directory --------------------------------------------------------------------------------

    def rewrite(self, agent: str, card: dict[str, Any], base: str) -> dict[str, Any]:
        """The agent's card as the gateway serves it: its interfaces at the gateway, the gateway's security, and
        the gateway's signature when the agent's card was signed."""
        url = f"{base}/a2a/{agent}"
        meta = f"{base}{WELL_KNOWN}/a2a/{agent}" if self.jwt else None
        security = GatewaySecurity(api_key=True, jwt=self.jwt, resource_metadata=meta)
        try:
            return rewrite_card(
                card, base_url=url, security=security, keys=self.keys, legacy_0_3=self.advertise_0_3
            )
        except CardUnavailable as exc:
            raise AgentUnavailable(f"The agent {agent} serves no usable card: {exc}") from None

    async def card(self, scope: Scope, receive: Receive, send: Send, agent: str) -> None:
        ex = self._exchange(scope, "GetAgentCard", agent)
        assert ex.task is not None
        ex.attrs["action"] = "read"
        reply = {"x-agentgw-task": ex.task.task_id}
        if scope["method"] not in ("GET", "HEAD"):
            await self._plain_error(send, GatewayError("Use GET.", status=405, code="method_not_allowed"))
            return
        if agent not in self.agents:
            err = await self.pipeline.reject(ex, AgentNotFound.named(agent))
            status, body = rest.error_response(err)
            await send_bytes(send, status, body, extra={**reply, **err.headers})
            return
        base = self.base_url(scope, ex.headers)

        async def forward(e: Exchange) -> Result:
            up = self.agents[agent]
            return Result(payload=await served_card(up, base, lambda card: self.rewrite(agent, card, base)))

        try:
            result = await self.pipeline.run(ex, forward)
        except GatewayError as err:
            status, body = rest.error_response(err)
            await send_bytes(send, status, body, extra={**reply, **err.headers})
            return
        body, headers = result.payload
        etag = headers["etag"]
        extra = {**reply, **{k: v for k, v in headers.items() if k != "content-type"}}
        if etag_matches(ex.headers.get("if-none-match"), etag):
            await send(
                {
                    "type": "http.response.start",
                    "status": 304,
                    "headers": [(k.encode(), v.encode()) for k, v in extra.items()],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await send_bytes(send, 200, body, extra=extra)

    async def directory(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The agents the caller may call, each with its name, description, skills and card URL."""
        ex = self._exchange(scope, "ListAgents", "*")
        assert ex.task is not None
        ex.attrs["listing"] = True
        reply = {"x-agentgw-task": ex.task.task_id}
        base = self.base_url(scope, ex.headers)

        async def forward(e: Exchange) -> Result:
            visible = [
                (n, up)
                for n, up in sorted(self.agents.items())
                if self.pipeline.allows(e.principal, f"a2a:{n}", "call")
            ]
            entries = await asyncio.gather(*(directory_entry(n, up, base) for n, up in visible))
            return Result(payload={"agents": list(entries)})

        try:
            result = await self.pipeline.run(ex, forward)
        except GatewayError as err:
            status, body = rest.error_response(err)
            await send_bytes(send, status, body, extra={**reply, **err.headers})
            return
        await send_bytes(send, 200, orjson.dumps(result.payload), extra=reply)
