"""One MCP endpoint (`/mcp` or `/mcp/<virtual server>`) as the SDK's low-level Server behind its own session
manager (both eras). Its handlers make every listing, `tools/call`, `resources/read` and `prompts/get` an Exchange
through the pipeline, forward to the upstream with the original names, and relay results as raw dicts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mcp.types as types
from mcp.server import Server
from mcp.server.context import HandlerResult, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError

from agentgw.errors import GatewayError
from agentgw.exchange import Attempt, Exchange, Principal, Result, TaskContext
from agentgw.mcp.catalog import Catalog
from agentgw.mcp.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    UnknownPrompt,
    UnknownResource,
    UnknownTool,
    to_mcp_error,
)
from agentgw.mcp.naming import View
from agentgw.mcp.upstream import CLIENT_INFO, ParamMap, Upstreams
from agentgw.pipeline import Pipeline
from agentgw.stages.authz import AuthzStage

FRONT_KEY = "agentgw.mcp"  # the ASGI scope entry the plane's front door fills for the handlers
TASK_META_KEY = "io.agentgw/task"
_PROTOCOL_META = "io.modelcontextprotocol/"
_DROPPED_META = frozenset({"progressToken", TASK_META_KEY, "traceparent", "tracestate"})

Ctx = ServerRequestContext[Any, Any]
_ACTIONS = {"tools": "call", "prompts": "read", "resources": "read", "templates": "read"}  # Casbin actions


@dataclass(slots=True)
class Front:
    """What the front door established for one HTTP request: who, which task, and the request's headers."""

    principal: Principal
    task: TaskContext
    headers: dict[str, str]
    client: str | None
    rule: str | None
    scopes: frozenset[str] | None = None  # what a JWT granted (API keys carry none)


def _front(ctx: Ctx) -> Front:
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
    assert ex.task is not None
    out[TASK_META_KEY] = ex.task.task_id
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


def _rewrite_content(item: Any, expose: Callable[[str], str]) -> None:
    if not isinstance(item, dict):
        return
    kind = item.get("type")
    if kind == "resource_link" and isinstance(item.get("uri"), str):
        item["uri"] = expose(item["uri"])
    elif kind == "resource":
        res = item.get("resource")
        if isinstance(res, dict) and isinstance(res.get("uri"), str):
            res["uri"] = expose(res["uri"])


class Endpoint:
    """One endpoint's MCP server. Decides nothing about access itself: every operation is an Exchange the pipeline
    decides (and audits). Fails with the JSON-RPC error of the GatewayError (see errors.py); an unknown tool,
    prompt or resource is the spec's -32602, and an upstream's own JSON-RPC error is relayed unchanged."""

    def __init__(
        self,
        view: View,
        catalog: Catalog,
        upstreams: Upstreams,
        pipeline: Pipeline,
        security: TransportSecuritySettings | None,
        max_body_bytes: int,
    ) -> None:
        self.view = view
        self.catalog = catalog
        self.upstreams = upstreams
        self.pipeline = pipeline
        self.path = f"/mcp/{view.name}" if view.name else "/mcp"
        self.authz = next((s for s in pipeline.stages if isinstance(s, AuthzStage)), None)
        self.server: Server[Any] = Server(
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
        add = self.server.add_request_handler
        add("tools/list", types.PaginatedRequestParams, self.list_tools)
        add("tools/call", types.CallToolRequestParams, self.call_tool)
        add("prompts/list", types.PaginatedRequestParams, self.list_prompts)
        add("prompts/get", types.GetPromptRequestParams, self.get_prompt)
        add("resources/list", types.PaginatedRequestParams, self.list_resources)
        add("resources/templates/list", types.PaginatedRequestParams, self.list_templates)
        add("resources/read", types.ReadResourceRequestParams, self.read_resource)
        self.manager = StreamableHTTPSessionManager(
            app=self.server, security_settings=security, max_request_body_size=max_body_bytes
        )

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _exchange(self, ctx: Ctx, operation: str, target: str) -> Exchange:
        front = _front(ctx)
        ex = Exchange("mcp", operation, target, front.headers, front.client)
        ex.principal = front.principal  # authenticated by the front door for this very HTTP request
        ex.decide("authn", "allow", rule=front.rule)
        ex.task = front.task
        ex.payload = dict(ctx.params) if ctx.params else {}
        ex.attrs["endpoint"] = self.path
        if front.scopes:
            ex.attrs["scopes"] = front.scopes
        return ex

    async def _run(
        self,
        ex: Exchange,
        forward: Callable[[Exchange], Awaitable[Result]],
        unseen: GatewayError | None = None,
    ) -> HandlerResult:
        """Mediate `ex`. With `unseen` (the error for a name that does not exist), a policy denial answers
        exactly that error: what a caller may not use is indistinguishable from what does not exist. The
        audit record still says denied, with the deciding rule."""
        try:
            result = await self.pipeline.run(ex, forward)
        except GatewayError as err:
            if unseen is not None and err.code == "permission_denied":
                err = unseen
            raise to_mcp_error(err, ex.task.task_id if ex.task else None) from None
        payload: dict[str, Any] = result.payload
        return payload

    async def _refuse(self, ex: Exchange, err: GatewayError) -> HandlerResult:
        """An operation refused before forwarding (unknown name): recorded like any other."""
        err = await self.pipeline.reject(ex, err)
        raise to_mcp_error(err, ex.task.task_id if ex.task else None)

    async def _upstream(
        self,
        ctx: Ctx,
        ex: Exchange,
        server: str,
        method: str,
        params: dict[str, Any],
        param_map: ParamMap | None = None,
    ) -> dict[str, Any]:
        up = self.upstreams.get(server)
        assert up is not None and ex.task is not None
        traceparent = f"00-{ex.task.trace_id}-{ex.span_id}-01"
        params["_meta"] = _meta_out(ctx.params or {}, ex, traceparent)
        headers = {"x-agentgw-task": ex.task.task_id, "traceparent": traceparent}
        on_progress: ProgressFnT | None = None
        meta = (ctx.params or {}).get("_meta")
        if isinstance(meta, dict) and meta.get("progressToken") is not None:

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                # Onto the caller's own request stream, with the caller's own token.
                await ctx.session.report_progress(progress, total, message)

        started = time.perf_counter()
        attempt = Attempt(len(ex.attempts) + 1, f"mcp:{server}", "ok")
        ex.attempts.append(attempt)
        try:
            result = await up.request(
                method, params, headers=headers, on_progress=on_progress, param_map=param_map
            )
        except GatewayError as err:
            attempt.outcome = "timeout" if err.status == 504 else "error"
            attempt.error = err.code
            raise
        finally:
            attempt.latency_ms = (time.perf_counter() - started) * 1000.0
        _strip_protocol_meta(result)
        result.setdefault("resultType", "complete")
        return result

    def _guess(self, name: str, kind: str = "") -> str:
        """The audit target of a name whose server could not be listed (prefix always: `<server>__<name>`)."""
        server, _, rest = name.partition("__")
        trim = self.catalog.trims.get(server)
        original = trim.original(rest) if trim is not None and not kind else rest
        return f"mcp:{server}/{kind}{original}"

    def _expose(self, server: str) -> Callable[[str], str]:
        return lambda uri: self.catalog.expose_uri(self.view, server, uri)

    async def _listing(
        self, ctx: Ctx, params: types.PaginatedRequestParams, kind: str, key: str
    ) -> HandlerResult:
        if params.cursor is not None:  # everything comes in one page; a cursor can only be stale or forged
            raise MCPError(INVALID_PARAMS, "Invalid cursor: this server does not paginate.")
        operation = f"{kind}/list" if kind != "templates" else "resources/templates/list"
        ex = self._exchange(ctx, operation, "mcp:*")
        ex.attrs["listing"] = True  # open to every principal; the content is filtered below
        action = _ACTIONS[kind]

        async def forward(ex: Exchange) -> Result:
            entries, ttl_ms = await self.catalog.entries(self.view, kind)
            principal, authz = ex.principal, self.authz
            if authz is not None and principal is not None:  # a caller sees exactly what it may use
                items = [e.item for e in entries if authz.allows(principal, e.target, action)]
            else:
                items = [e.item for e in entries]
            # private: the answer depends on who asked (it is filtered by policy)
            payload = {key: items, "ttlMs": ttl_ms, "cacheScope": "private", "resultType": "complete"}
            return Result(payload=payload)

        return await self._run(ex, forward)

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
        name = params.name
        try:
            entry = await self.catalog.resolve(self.view, "tools", name)
        except GatewayError as err:  # the server this name points at is unavailable
            return await self._refuse(self._exchange(ctx, "tools/call", self._guess(name)), err)
        if entry is None:
            ex = self._exchange(ctx, "tools/call", f"mcp:?/{name}")
            return await self._refuse(ex, UnknownTool(f"Unknown tool: {name}"))
        ex = self._exchange(ctx, "tools/call", entry.target)
        raw = ctx.params or {}

        async def forward(ex: Exchange) -> Result:
            out: dict[str, Any] = {"name": entry.original}
            if raw.get("arguments") is not None:
                out["arguments"] = raw["arguments"]
            result = await self._upstream(ctx, ex, entry.server, "tools/call", out, entry.param_map())
            content = result.get("content")
            if isinstance(content, list):
                expose = self._expose(entry.server)
                for item in content:
                    _rewrite_content(item, expose)
            return Result(payload=result)

        return await self._run(ex, forward, UnknownTool(f"Unknown tool: {name}"))

    async def get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> HandlerResult:
        name = params.name
        try:
            entry = await self.catalog.resolve(self.view, "prompts", name)
        except GatewayError as err:
            return await self._refuse(self._exchange(ctx, "prompts/get", self._guess(name, "prompt/")), err)
        if entry is None:
            ex = self._exchange(ctx, "prompts/get", f"mcp:?/prompt/{name}")
            return await self._refuse(ex, UnknownPrompt(f"Unknown prompt: {name}"))
        ex = self._exchange(ctx, "prompts/get", entry.target)
        ex.attrs["action"] = "read"
        raw = ctx.params or {}

        async def forward(ex: Exchange) -> Result:
            out: dict[str, Any] = {"name": entry.original}
            if raw.get("arguments") is not None:
                out["arguments"] = raw["arguments"]
            result = await self._upstream(ctx, ex, entry.server, "prompts/get", out)
            messages = result.get("messages")
            if isinstance(messages, list):
                expose = self._expose(entry.server)
                for message in messages:
                    if isinstance(message, dict):
                        _rewrite_content(message.get("content"), expose)
            return Result(payload=result)

        return await self._run(ex, forward, UnknownPrompt(f"Unknown prompt: {name}"))

    async def read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> HandlerResult:
        uri = params.uri
        hit = await self.catalog.resolve_uri(self.view, uri)
        if hit is None:
            ex = self._exchange(ctx, "resources/read", f"mcp:?/resource/{uri}")
            return await self._refuse(ex, UnknownResource(f"Unknown resource: {uri}"))
        server, original = hit
        ex = self._exchange(ctx, "resources/read", f"mcp:{server}/resource/{original}")
        ex.attrs["action"] = "read"

        async def forward(ex: Exchange) -> Result:
            result = await self._upstream(ctx, ex, server, "resources/read", {"uri": original})
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
