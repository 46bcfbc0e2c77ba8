"""One MCP endpoint (`/mcp` or `/mcp/<virtual server>`) as the SDK's low-level Server behind its own session
manager (both eras). Its handlers make every listing, `tools/call`, `resources/read`, `prompts/get`,
`completion/complete` and resource subscription an Exchange through the pipeline, forward to the upstream with the
original names, and relay results as raw dicts; `subscriptions/listen` and list changes come from events.py.
"""

from __future__ import annotations

from typing import Any

import mcp.types as types
import orjson
from mcp.server import Server
from mcp.server.context import CallNext, HandlerResult
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types.methods import is_input_required

from agentgw.errors import GatewayError
from agentgw.exchange import Exchange, Principal, Result
from agentgw.identity import OutboundIdentity
from agentgw.mcp.bridges.relay import LEVEL_KEY, Caller, session_connection
from agentgw.mcp.bridges.roundtrip import RoundTrips
from agentgw.mcp.bridges.state import STATE_TTL_S, Binding
from agentgw.mcp.catalog.catalog import Catalog, Entry
from agentgw.mcp.catalog.naming import View
from agentgw.mcp.catalog.pinops import ToolHeld, note_pins
from agentgw.mcp.errors import INVALID_PARAMS, UnknownPrompt, UnknownResource, UnknownTool, UpstreamRPCError
from agentgw.mcp.front.direct import Direct
from agentgw.mcp.front.events import Events
from agentgw.mcp.front.mediate import FRONT_KEY, TASK_META_KEY, Call, Ctx, Front, Mediator, rewrite_content
from agentgw.mcp.front.resume import RETRY_MS
from agentgw.mcp.front.sessions import SessionIds, Sessions
from agentgw.mcp.front.shared import SharedSessions
from agentgw.mcp.front.subscriptions import Subscriptions
from agentgw.mcp.upstream.inflight import Relay
from agentgw.mcp.upstream.upstream import CLIENT_INFO, ParamMap, Upstreams
from agentgw.pipeline import Pipeline
from agentgw.settings import MCPSessions

__all__ = ["FRONT_KEY", "TASK_META_KEY", "Endpoint", "Front"]

HELD_ACK_S = 2.0  # how long a retry waits for the replica holding its call to answer that it does
_ACTIONS = {"tools": "call", "prompts": "read", "resources": "read", "templates": "read"}  # Casbin actions


def _principal(scope: dict[str, Any]) -> Principal | None:
    """Who the front door says is calling (what a session id is bound to)."""
    front = scope.get(FRONT_KEY)
    return front.principal if isinstance(front, Front) else None


class _Server(Server[Any]):
    """The SDK's Server, announcing list changes in the handshake era too (events.py sends them)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        announce = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
        return super().create_initialization_options(
            notification_options or announce, experimental_capabilities, extensions
        )


class Endpoint(Subscriptions, Mediator):
    """One endpoint's MCP server. An unknown tool, prompt or resource is the spec's -32602 (and so is a name
    the policy hides); an upstream's own JSON-RPC error is relayed unchanged; a `requestState` the gateway did
    not mint for this caller and call is -32602 too."""

    def __init__(
        self,
        view: View,
        catalog: Catalog,
        upstreams: Upstreams,
        pipeline: Pipeline,
        max_body_bytes: int,
        trips: RoundTrips,
        secret: bytes,
        sessions: MCPSessions,
        identity: OutboundIdentity | None = None,
        shared: SharedSessions | None = None,
    ) -> None:
        Mediator.__init__(self, view, catalog, upstreams, pipeline, identity)
        self.shared = shared
        if shared is not None:
            shared.on("subs", self._reconcile)
            shared.on("level", self._relevel)
            shared.on("held", self._held_here)
        self.trips = trips
        self.seal = trips.seal
        self.events = Events(self._unwatch)
        self.server = _Server(
            f"agentgw/{view.name}" if view.name else "agentgw",
            version=CLIENT_INFO.version,
            instructions=(
                "Tools, prompts and resources of several MCP servers behind agentgw. "
                + (
                    "Names are <server>__<name>; resource URIs are agentgw://<server>/<original URI>."
                    if view.prefix == "always"
                    else "Names are prefixed with <server>__ only where needed."
                )
            ),
            get_tool_input_schema=lambda name: self.catalog.input_schema(self.view, name),
        )
        self.server.middleware.append(self._track)
        add = self.server.add_request_handler
        add("tools/list", types.PaginatedRequestParams, self.list_tools)
        add("tools/call", types.CallToolRequestParams, self.call_tool)
        add("prompts/list", types.PaginatedRequestParams, self.list_prompts)
        add("prompts/get", types.GetPromptRequestParams, self.get_prompt)
        add("resources/list", types.PaginatedRequestParams, self.list_resources)
        add("resources/templates/list", types.PaginatedRequestParams, self.list_templates)
        add("resources/read", types.ReadResourceRequestParams, self.read_resource)
        add("completion/complete", types.CompleteRequestParams, self.complete)
        add("logging/setLevel", types.SetLevelRequestParams, self.set_level)
        add("resources/subscribe", types.SubscribeRequestParams, self.subscribe)
        add("resources/unsubscribe", types.UnsubscribeRequestParams, self.unsubscribe)
        add("subscriptions/listen", types.SubscriptionsListenRequestParams, self.listen)
        self.direct = Direct(self)
        self.manager = Sessions(
            SessionIds(secret, self.path, sessions.max_age_s),
            _principal,
            app=self.server,
            session_idle_timeout=sessions.idle_timeout_s,
            max_sessions=sessions.max_sessions,
            max_per_principal=sessions.max_per_principal,
            shared=shared,
            revived=self._restore,
            max_request_body_size=max_body_bytes,
            retry_interval=RETRY_MS,
        )

    async def _track(self, ctx: Ctx, call_next: CallNext) -> HandlerResult:
        """Every handshake session is known from its first request (for list-change notifications)."""
        self.events.track(session_connection(ctx))
        return await call_next(ctx)

    def _guess(self, name: str, kind: str = "") -> str:
        """The audit target of a name whose server could not be listed (prefix always: `<server>__<name>`)."""
        server, _, rest = name.partition("__")
        trim = self.catalog.trims.get(server)
        original = trim.original(rest) if trim is not None and not kind else rest
        return f"mcp:{server}/{kind}{original}"

    async def _listing(
        self, ctx: Ctx, params: types.PaginatedRequestParams, kind: str, key: str
    ) -> HandlerResult:
        if params.cursor is not None:  # everything comes in one page; a cursor can only be stale or forged
            raise MCPError(INVALID_PARAMS, "Invalid cursor: this server does not paginate.")
        operation = f"{kind}/list" if kind != "templates" else "resources/templates/list"
        ex = self._exchange(Call.of(ctx), operation, "mcp:*")
        ex.attrs["listing"] = True  # open to every principal; the content is filtered below
        action = _ACTIONS[kind]

        async def forward(ex: Exchange) -> Result:
            entries, ttl_ms = await self.catalog.entries(self.view, kind)
            items = [e.item for e in entries if self._allows(ex, e.target, action)]
            if kind == "tools" and self.catalog.pins is not None:
                note_pins(
                    ex, [e for e in self.catalog.noted(self.view) if self._allows(ex, e.target, action)]
                )
            # private: the answer depends on who asked (it is filtered by policy)
            payload = {key: items, "ttlMs": ttl_ms, "cacheScope": "private", "resultType": "complete"}
            return Result(payload=payload)

        return await self._run(ex, forward)

    async def _roundtrip(
        self,
        call: Call,
        ex: Exchange,
        bind: Binding,
        out: dict[str, Any],
        param_map: ParamMap | None = None,
    ) -> dict[str, Any]:
        """A call that may take input rounds (tools/call, prompts/get, resources/read): see bridges/roundtrip.py."""
        up = self.upstreams.get(bind.server)
        assert up is not None

        async def send(
            extra: dict[str, Any], *, caller: Caller, relay: Relay, progress: ProgressFnT | None = None
        ) -> dict[str, Any]:
            params = {**out, **extra}
            return await self._upstream(
                call,
                ex,
                bind.server,
                bind.method,
                params,
                param_map,
                caller=caller,
                relay=relay,
                progress=progress,
            )

        remote = self._held_elsewhere if self.shared is not None else None
        return await self.trips.forward(call.params, call.caller(), bind, up, send, remote)

    # -- held calls across replicas (shared sessions) ----------------------------------------------------------

    async def _held_elsewhere(
        self, held: str, round: int, bind: Binding, responses: object, caller: Caller
    ) -> dict[str, Any] | None:
        """A retry for a call another replica holds: that replica plays the round (logs and progress of the
        round stay there) and its answer, or its error, is this request's."""
        assert self.shared is not None
        ask = {"r": round, "b": bind.claims(), "i": responses, "c": caller.caps, "v": caller.version}
        got = await self.shared.ask("held", held, orjson.dumps(ask), HELD_ACK_S, STATE_TTL_S)
        if got is None:
            return None
        out = orjson.loads(got)
        if "rpc" in out:
            raise UpstreamRPCError(*out["rpc"])
        if "err" in out:
            message, status, code = out["err"]
            raise GatewayError(message, status=status, code=code)
        result: dict[str, Any] = out["ok"]
        return result

    async def _held_here(self, held: str, payload: bytes) -> None:
        """Another replica got the retry of a call held here: play its round for it."""
        if self.shared is None or not self.trips.holds(held):
            return
        shared = self.shared
        box, _, body = payload.partition(b"\n")

        async def play() -> None:
            await shared.reply(box.decode(), b"ack")
            out: dict[str, Any]
            try:
                ask = orjson.loads(body)
                caller = Caller(None, None, ask["v"], ask["c"], None)
                result = await self.trips.play(held, ask["r"], Binding(*ask["b"]), ask["i"], caller)
                out = {"ok": result}
            except UpstreamRPCError as err:
                out = {"rpc": [err.rpc_code, err.message, err.rpc_data]}
            except MCPError as err:
                out = {"rpc": [err.code, err.message, err.data]}
            except GatewayError as err:
                out = {"err": [err.message, err.status, err.code]}
            await shared.reply(box.decode(), orjson.dumps(out))

        self.events.spawn(play)

    def _bind(self, ex: Exchange, server: str, method: str, target: str) -> Binding:
        assert ex.principal is not None
        return Binding(Binding.principal_of(ex.principal), self.path, server, method, target)

    # -- handlers ---------------------------------------------------------------------------------------------

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams) -> HandlerResult:
        return await self._listing(ctx, params, "tools", "tools")

    async def list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams) -> HandlerResult:
        return await self._listing(ctx, params, "prompts", "prompts")

    async def list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams) -> HandlerResult:
        return await self._listing(ctx, params, "resources", "resources")

    async def list_templates(self, ctx: Ctx, params: types.PaginatedRequestParams) -> HandlerResult:
        return await self._listing(ctx, params, "templates", "resourceTemplates")

    async def call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> HandlerResult:
        return await self.tools_call(Call.of(ctx), params.name)

    async def tools_call(self, call: Call, name: str) -> dict[str, Any]:
        """`tools/call` of the endpoint's tool `name`, for either path (the SDK server's or the direct one)."""
        try:
            entry = await self.catalog.resolve(self.view, "tools", name)
        except GatewayError as err:  # the server this name points at is unavailable
            return await self._refuse(self._exchange(call, "tools/call", self._guess(name)), err)
        if entry is None:
            held = await self.catalog.held(self.view, name)
            if held is not None:
                return await self._held(call, name, held)
            ex = self._exchange(call, "tools/call", f"mcp:?/{name}")
            return await self._refuse(ex, UnknownTool(f"Unknown tool: {name}"))
        ex = self._exchange(call, "tools/call", entry.target)
        if (
            entry.pin is not None
        ):  # tool_pinning warn, or scan mark: callable, and the record says why it was noted
            note_pins(ex, [entry])
        raw = call.params

        async def forward(ex: Exchange) -> Result:
            out: dict[str, Any] = {"name": entry.original}
            if raw.get("arguments") is not None:
                out["arguments"] = raw["arguments"]
            bind = self._bind(ex, entry.server, "tools/call", entry.original)
            result = await self._roundtrip(call, ex, bind, out, entry.param_map())
            content = result.get("content")
            if isinstance(content, list):
                expose = self._expose(entry.server)
                for item in content:
                    rewrite_content(item, expose)
            return Result(payload=result)

        return await self._run(ex, forward, UnknownTool(f"Unknown tool: {name}"))

    async def _held(self, call: Call, name: str, entry: Entry) -> dict[str, Any]:
        """`tools/call` of a tool pinning holds back: mediated like any call (a caller the policy denies learns
        only that the tool does not exist), then refused with why and what it takes (an operator's approval)."""
        ex = self._exchange(call, "tools/call", entry.target)
        note = entry.pin
        assert note is not None

        async def forward(ex: Exchange) -> Result:
            note_pins(ex, [entry])
            raise ToolHeld(note.message(name))

        return await self._run(ex, forward, UnknownTool(f"Unknown tool: {name}"))

    async def get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> HandlerResult:
        name = params.name
        call = Call.of(ctx)
        try:
            entry = await self.catalog.resolve(self.view, "prompts", name)
        except GatewayError as err:
            return await self._refuse(self._exchange(call, "prompts/get", self._guess(name, "prompt/")), err)
        if entry is None:
            ex = self._exchange(call, "prompts/get", f"mcp:?/prompt/{name}")
            return await self._refuse(ex, UnknownPrompt(f"Unknown prompt: {name}"))
        ex = self._exchange(call, "prompts/get", entry.target)
        ex.attrs["action"] = "read"
        raw = call.params

        async def forward(ex: Exchange) -> Result:
            out: dict[str, Any] = {"name": entry.original}
            if raw.get("arguments") is not None:
                out["arguments"] = raw["arguments"]
            result = await self._roundtrip(
                call, ex, self._bind(ex, entry.server, "prompts/get", entry.original), out
            )
            messages = result.get("messages")
            if isinstance(messages, list):
                expose = self._expose(entry.server)
                for message in messages:
                    if isinstance(message, dict):
                        rewrite_content(message.get("content"), expose)
            return Result(payload=result)

        return await self._run(ex, forward, UnknownPrompt(f"Unknown prompt: {name}"))

    async def read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> HandlerResult:
        uri = params.uri
        call = Call.of(ctx)
        hit = await self.catalog.resolve_uri(self.view, uri)
        if hit is None:
            ex = self._exchange(call, "resources/read", f"mcp:?/resource/{uri}")
            return await self._refuse(ex, UnknownResource(f"Unknown resource: {uri}"))
        server, original = hit
        ex = self._exchange(call, "resources/read", f"mcp:{server}/resource/{original}")
        ex.attrs["action"] = "read"

        async def forward(ex: Exchange) -> Result:
            bind = self._bind(ex, server, "resources/read", original)
            result = await self._roundtrip(call, ex, bind, {"uri": original})
            if is_input_required(result):
                return Result(payload=result)
            contents = result.get("contents")
            if isinstance(contents, list):
                expose = self._expose(server)
                for item in contents:
                    if isinstance(item, dict) and isinstance(item.get("uri"), str):
                        item["uri"] = expose(item["uri"])
            result.setdefault("ttlMs", 0)
            result.setdefault("cacheScope", "private")
            return Result(payload=result)

        return await self._run(ex, forward, UnknownResource(f"Unknown resource: {uri}"))

    async def complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> HandlerResult:
        """Argument completion, asked of the server that owns the prompt or resource template."""
        ref = params.ref
        call = Call.of(ctx)
        if isinstance(ref, types.PromptReference):
            try:
                entry = await self.catalog.resolve(self.view, "prompts", ref.name)
            except GatewayError as err:
                ex = self._exchange(call, "completion/complete", self._guess(ref.name, "prompt/"))
                return await self._refuse(ex, err)
            found = (entry.server, entry.original, entry.target) if entry is not None else None
            unseen: GatewayError = UnknownPrompt(f"Unknown prompt: {ref.name}")
            out_ref = {"type": "ref/prompt", "name": entry.original if entry is not None else ""}
        else:
            hit = await self.catalog.resolve_uri(self.view, ref.uri, templates=True)
            found = (hit[0], hit[1], f"mcp:{hit[0]}/resource/{hit[1]}") if hit is not None else None
            unseen = UnknownResource(f"Unknown resource: {ref.uri}")
            out_ref = {"type": "ref/resource", "uri": hit[1] if hit is not None else ""}
        if found is None:
            return await self._refuse(self._exchange(call, "completion/complete", "mcp:?/completion"), unseen)
        server, _, target = found
        ex = self._exchange(call, "completion/complete", target)
        ex.attrs["action"] = "read"
        raw = call.params

        async def forward(ex: Exchange) -> Result:
            up = self.upstreams.get(server)
            assert up is not None
            caps = await up.capabilities()
            if caps is None or caps.completions is None:  # nothing to suggest: an empty completion
                return Result(payload={"completion": {"values": [], "hasMore": False}})
            out: dict[str, Any] = {"ref": out_ref, "argument": raw.get("argument")}
            if raw.get("context") is not None:
                out["context"] = raw["context"]
            return Result(payload=await self._upstream(call, ex, server, "completion/complete", out))

        return await self._run(ex, forward, unseen)

    async def set_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> HandlerResult:
        """The handshake session's log level: upstream log messages about its requests are relayed from this
        level up (none before the client sets one)."""
        conn = session_connection(ctx)
        if conn is not None:
            conn.state[LEVEL_KEY] = params.level
            if self.shared is not None and conn.session_id is not None:
                await self.shared.set_level(conn.session_id, params.level)
        return {}

    async def _relevel(self, sid: str, _: bytes) -> None:
        """Another replica set the session's log level (shared sessions)."""
        conn = self.events.session(sid)
        level = await self.shared.level(sid) if conn is not None and self.shared is not None else None
        if conn is not None and level is not None:
            conn.state[LEVEL_KEY] = level
