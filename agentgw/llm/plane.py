"""The LLM plane's endpoints as pure ASGI: parse only the routing fields, run the pipeline, relay bytes.

`/v1/chat/completions` and `/v1/embeddings` (POST), `/v1/models` and `/v1/models/{id}` (GET), and the Responses
API as chat (`/v1/responses`, apis/responses.py). Errors are rendered in the OpenAI envelope; no input yields a
500.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agentgw import jsontext
from agentgw.configfile import ConfigError, Problem
from agentgw.errors import (
    BadRequest,
    GatewayError,
    InvalidJSON,
    ModelNotFound,
    NotFound,
    UnsupportedMediaType,
)
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
from agentgw.identity import OutboundIdentity
from agentgw.llm.apis import messages as messages_api
from agentgw.llm.apis import native as native_api
from agentgw.llm.apis.response_store import make_responses
from agentgw.llm.apis.responses import (
    RESPONSES,
    ResponsesCall,
    Shell,
    as_response,
    chat_request,
    new_id,
)
from agentgw.llm.cache.exact import ResponseCache, cached, embedding_problem
from agentgw.llm.checks import check_chat, check_embeddings
from agentgw.llm.errors import error_body
from agentgw.llm.mediation.guard_content import CHANGED, LLMContent
from agentgw.llm.mediation.guard_stream import ChatContentGuard
from agentgw.llm.mediation.tool_policy import ToolPolicy
from agentgw.llm.mediation.tool_stream import ToolCallGuard
from agentgw.llm.providers import Call, Provider, build_provider
from agentgw.llm.providers.base import NativeRequest
from agentgw.llm.routing.content import ContentRoutes
from agentgw.llm.routing.router import Router
from agentgw.llm.routing.shared import make_routing_sync
from agentgw.llm.routing.strategies import counted
from agentgw.llm.sse import ChatStreamMeter
from agentgw.llm.usage import usage_from_body
from agentgw.pipeline import Pipeline
from agentgw.registry import LLMSection, MCPSection
from agentgw.registry import Provider as ProviderConfig
from agentgw.secrets import without_credentials
from agentgw.settings import Settings
from agentgw.stages.guard import guard_stage, stream_guard
from agentgw.stages.route import route_stage
from agentgw.tokens import count_messages
from agentgw.upstream import UpstreamPool

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class LLMPlane:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        pool: UpstreamPool,
        identity: OutboundIdentity | None = None,
    ) -> None:
        reg = settings.registry_data
        self.pipeline = pipeline
        self.limit = settings.limits.max_body_bytes
        self.depth = settings.limits.max_json_depth
        self.settings, self.pool, self.identity = settings, pool, identity
        self.configs = {p.name: p for p in reg.llm.providers}
        providers = {p.name: self._build(p) for p in reg.llm.providers}
        self.router = Router(
            reg.llm.models, providers, settings.upstream.retry, settings.upstream.circuit_breaker
        )
        self.created = int(time.time())
        self._serve_routes(reg.llm)
        # llm.tool_policy: off builds nothing, so requests and streams pass exactly as before (no per-chunk hook).
        self.tools = (
            ToolPolicy(settings.llm, reg.mcp, pipeline) if settings.llm.tool_policy != "off" else None
        )
        guard = guard_stage(pipeline)
        if guard is not None:  # guardrails configured: tell the stage where chat and embeddings texts are
            guard.serve("llm", LLMContent())
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/embeddings"): self.embeddings,
            ("GET", "/v1/models"): self.models,
            ("POST", "/v1/responses"): self.responses,
            ("POST", "/v1/messages"): self.messages,
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
        }
        self.stored = make_responses(settings)
        self.routing_sync = make_routing_sync(settings, lambda: self.router.routing, self._target_keys)
        cache = settings.llm.cache
        problem = embedding_problem(cache, self.router.models)  # the semantic cache's model must exist
        if problem is not None:
            raise ConfigError([Problem(str(settings.path), "llm.cache.semantic.embedding_model", problem)])
        self.cache = ResponseCache(cache) if cache.mode != "off" else None

    def _serve_routes(self, section: LLMSection) -> None:
        stage = route_stage(self.pipeline)
        if stage is not None:  # no rule, no router: calls pass the stage untouched
            stage.serve("llm", ContentRoutes.of(section.models))

    def _build(self, spec: ProviderConfig) -> Provider:
        creds = self.identity.of(f"llm:{spec.name}") if self.identity is not None else None
        return build_provider(spec, self.pool, creds)

    def apply_registry(self, section: LLMSection) -> None:
        """A reloaded registry: a new router swapped in at once (a call in flight finishes on the one it
        started with). Unchanged providers are kept, with the circuit breakers of their targets."""
        old = self.router
        providers = {
            p.name: old.providers[p.name] if self.configs.get(p.name) == p else self._build(p)
            for p in section.providers
        }
        up = self.settings.upstream
        router = Router(section.models, providers, up.retry, up.circuit_breaker)
        kept = {name for name, p in providers.items() if p is old.providers.get(name)}
        router.breakers = {key: b for key, b in old.breakers.items() if key.split("/", 1)[0] in kept}
        router.routing = old.routing  # latency, load and rate windows carry over
        self.configs = {p.name: p for p in section.providers}
        self.router = router
        self._serve_routes(section)

    def registry_status(self) -> dict[str, Any]:
        """`GET /admin/registry`'s `llm` part: each provider (no key or header: its URL without credentials) with
        the worst circuit of its targets, and each model with every target's own circuit."""
        circuits = self.router.circuits()
        rank = {"closed": 0, "half_open": 1, "open": 2}
        worst: dict[str, str] = {}
        models = []
        for m in self.router.models.values():
            targets = []
            for t in m.targets:
                c = circuits.get(
                    f"{t.provider}/{t.model}", {"circuit": "closed", "failures": 0, "retry_in_s": None}
                )
                key = f"{t.provider}/{t.model}"
                targets.append(
                    {"provider": t.provider, "model": t.model, **c, **self.router.routing.of(key).report()}
                )
                if rank[c["circuit"]] > rank[worst.get(t.provider, "closed")]:
                    worst[t.provider] = c["circuit"]
            models.append({"name": m.name, "type": m.type, "strategy": m.strategy, "targets": targets})
        providers = [
            {
                "name": p.name,
                "kind": p.kind,
                "base_url": without_credentials(p.base_url),
                "circuit": worst.get(p.name, "closed"),
                "supervised": bool(p.command),
            }
            for p in self.configs.values()
        ]
        return {"providers": providers, "models": models}

    def _target_keys(self) -> list[str]:
        return [f"{t.provider}/{t.model}" for m in self.router.models.values() for t in m.targets]

    async def start(self) -> None:
        if self.routing_sync is not None:
            self.routing_sync.start()

    async def aclose(self) -> None:
        if self.routing_sync is not None:
            await self.routing_sync.aclose()
        await self.stored.aclose()
        if self.cache is not None:
            await self.cache.aclose()

    def apply_mcp_names(self, section: MCPSection) -> None:
        """A reloaded registry's MCP servers: what `<server>__<tool>` tool names in LLM traffic refer to."""
        if self.tools is not None:
            self.tools.apply_registry(section)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch `/v1/*`; unknown paths and methods get OpenAI-shaped 404/405."""
        path, method = scope["path"], scope["method"]
        handler = self.routes.get((method, path))
        if handler is not None:
            await handler(scope, receive, send)
            return
        if method == "GET" and path.startswith("/v1/models/"):
            await self.models(scope, receive, send)
            return
        if method in ("GET", "DELETE") and path.startswith("/v1/responses/") and "/" not in path[14:]:
            await self.stored_response(scope, send, path[len("/v1/responses/") :])
            return
        if any(p == path for (_, p) in self.routes):
            err = GatewayError(
                f"Method {method} is not allowed on {path}.", status=405, code="method_not_allowed"
            )
        else:
            err = NotFound(f"Unknown path {path}.", code="unknown_url")
        await send_bytes(send, err.status, error_body(err))

    # -- handlers -------------------------------------------------------------------------------------------

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._post(scope, receive, send, "chat", check_chat)

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._post(scope, receive, send, "embeddings", check_embeddings)

    async def responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The Responses API as chat: the request is translated before any stage sees it, so every stage
        (authorization by model, budgets, guardrails, audit) works on the chat request the provider gets."""

        def adapt(body: dict[str, Any], ex: Exchange) -> dict[str, Any]:
            native = NativeRequest("responses", body)
            chat = chat_request(body, skipped=native.skipped)
            ex.attrs[native_api.NATIVE] = (
                native  # passed through where the provider serves it (apis/native.py)
            )
            if chat.get("stream") is True:  # the Responses stream reports usage at its end: ask for it
                chat["stream_options"] = {"include_usage": True}
            model = str(body.get("model") or "")
            ex.attrs["endpoint"] = "/v1/responses"
            ex.attrs[RESPONSES] = ResponsesCall(Shell(new_id("resp"), model, int(time.time()), body))
            return chat

        await self._post(scope, receive, send, "chat", check_chat, adapt)

    async def messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The Anthropic Messages API as chat, like the Responses API; errors in Anthropic's envelope."""

        def adapt(body: dict[str, Any], ex: Exchange) -> dict[str, Any]:
            native = NativeRequest("messages", body)
            chat = messages_api.chat_request(body, native.skipped)
            ex.attrs[native_api.NATIVE] = native
            ex.attrs["endpoint"] = "/v1/messages"
            ex.attrs[messages_api.MESSAGES] = (new_id("msg"), str(body.get("model") or ""))
            return chat

        await self._post(scope, receive, send, "chat", check_chat, adapt, messages_api.error_body)

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /v1/messages/count_tokens`: the request's input tokens as the gateway counts them (tiktoken)."""
        headers = header_dict(scope)
        try:
            body = await read_body(receive, headers, self.limit)
            check_depth(body, self.depth)
            try:
                payload = jsontext.loads(body)
            except orjson.JSONDecodeError:
                raise InvalidJSON("The request body is not valid JSON.") from None
            if not isinstance(payload, dict):
                raise BadRequest("The request body must be a JSON object.")
            chat = messages_api.chat_request({**payload, "max_tokens": 1})
        except ClientGone:
            return
        except GatewayError as err:
            await send_bytes(send, err.status, messages_api.error_body(err))
            return

        async def forward(ex: Exchange) -> Result:
            count = count_messages(chat["messages"], chat.get("tools"))
            return Result(body=jsontext.dumps({"input_tokens": count}))

        await self._lookup(scope, send, "count_tokens", forward, messages_api.error_body)

    async def _post(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        operation: str,
        check: Callable[[dict[str, Any]], None],
        adapt: Callable[[dict[str, Any], Exchange], dict[str, Any]] | None = None,
        render: Callable[[GatewayError], bytes] = error_body,
    ) -> None:
        """`adapt`: another API's request made into this operation's (the Responses API into chat); `render`:
        that API's error envelope."""
        headers = header_dict(scope)
        ex = Exchange("llm", operation, "llm:", headers, client_host(scope))
        ex.task = task_from_headers(headers)
        reply = {"x-agentgw-task": ex.task.task_id}
        try:
            ctype = headers.get("content-type", "")
            if not ctype.split(";", 1)[0].strip().lower() == "application/json":
                raise UnsupportedMediaType("Content-Type must be application/json.")
            ex.body = await read_body(receive, headers, self.limit)
            check_depth(ex.body, self.depth)
            try:
                payload = jsontext.loads(ex.body)
            except orjson.JSONDecodeError:
                raise InvalidJSON("The request body is not valid JSON.") from None
            if not isinstance(payload, dict):
                raise BadRequest("The request body must be a JSON object.")
            if adapt is not None:
                payload = adapt(payload, ex)
                ex.body = jsontext.dumps(payload)
            model = payload.get("model")
            if not isinstance(model, str) or not model:
                raise BadRequest("You must provide a model parameter.", code="missing_model")
            ex.target = f"llm:{model}"  # a request refused below is still on the record with its model
            check(payload)
            if model not in self.router.models:
                # Refused before mediation, as MCP refuses an unknown tool: no later stage (budget) can answer it
                # differently from a model the caller may not use (authz answers that one with this same error).
                raise ModelNotFound.named(model)
        except ClientGone:
            return
        except GatewayError as err:
            err = await self.pipeline.reject(ex, err)
            await send_bytes(send, err.status, render(err), extra={**reply, **err.headers})
            return
        ex.payload = payload
        ex.unseen = ModelNotFound.named(model)

        def gone() -> None:
            ex.stream_cut = "client_disconnect"

        await cancel_on_disconnect(receive, self._mediate(ex, send, reply, render), gone)

    async def _mediate(
        self,
        ex: Exchange,
        send: Send,
        reply: dict[str, str],
        render: Callable[[GatewayError], bytes] = error_body,
    ) -> None:
        try:
            result = await self.pipeline.run(ex, self._forward)
        except GatewayError as err:
            await send_bytes(send, err.status, render(err), extra={**reply, **err.headers})
            return
        extra = {**reply, **ex.attrs.get("reply_headers", {}), **result.headers}
        rc = ex.attrs.get(RESPONSES)
        if rc is not None and result.status == 200:
            await as_response(self.stored, ex, rc, result)
        message = ex.attrs.get(messages_api.MESSAGES)
        if message is not None and native_api.PASSED not in ex.attrs:
            messages_api.as_message(message, result)
        if result.stream is not None:
            await send_stream(send, result.status, result.stream, extra=extra)
        else:
            await send_bytes(send, result.status, result.body or b"", extra=extra)

    async def stored_response(self, scope: Scope, send: Send, response_id: str) -> None:
        """`GET` or `DELETE /v1/responses/{id}`: the caller's own stored responses only."""
        deleting = scope["method"] == "DELETE"

        async def forward(ex: Exchange) -> Result:
            who = ex.principal.subject if ex.principal is not None else ""
            if deleting:
                await self.stored.delete(response_id, who)
                return Result(body=jsontext.dumps({"id": response_id, "object": "response", "deleted": True}))
            return Result(body=jsontext.dumps((await self.stored.get(response_id, who)).response))

        await self._lookup(scope, send, "responses", forward)

    async def _forward(self, ex: Exchange) -> Result:
        payload = ex.payload or {}
        router = self.router  # one router for the whole call, even if a reload swaps it meanwhile
        model = router.resolve(payload.get("model"))
        if not model.targets:  # a router alias whose catch-all route the route stage did not apply
            raise ModelNotFound.named(model.name)
        native = ex.attrs.get(native_api.NATIVE)
        if native is not None:  # the Responses or Messages API: passed through where it can be
            go = native_api.passable(ex, router, model, native, self.tools is not None)
            passed = await native_api.forward(ex, router, model, native, self.stored, go)
            if passed is not None:
                return passed
        rc = ex.attrs.get(RESPONSES)
        if rc is not None:  # after authentication: a previous response is the caller's own, or unknown
            payload = await rc.continued(payload, self.stored, ex.principal.subject if ex.principal else "")
            if payload is not ex.payload:  # sent (and recorded) with the conversation it continues
                ex.payload = payload
                ex.attrs[CHANGED] = True
        stream = ex.operation == "chat" and payload.get("stream") is True
        call = Call(ex, ex.operation, payload, ex.body, model.targets[0].model, stream)
        if ex.attrs.get(CHANGED):  # the guard stage masked texts or added system prompts: send what it made
            call.dirty = True
        tools = self.tools if ex.operation == "chat" else None
        if tools is not None:
            allowed = tools.filter_request(ex, payload)  # raises tool_not_allowed (refuse, a forced tool)
            if allowed is not None:
                call.payload, call.dirty = allowed, True
        strip_usage = False
        if stream:
            opts = payload.get("stream_options") or {}
            if not opts.get("include_usage"):  # ask for usage; strip that chunk before it reaches the client
                call.payload = {**call.payload, "stream_options": {**opts, "include_usage": True}}
                call.dirty = True
                strip_usage = True
        cache, key, hit = self.cache, None, None
        if cache is not None and ex.operation == "chat":
            key, hit = await cache.lookup(ex, str(payload.get("model")), call.payload, router)
        result = cached(hit) if hit is not None else await router.call(model, call)
        if cache is not None and key is not None and hit is None and result.stream is not None:
            result.stream = cache.capture(key, result.stream, ex)
        if result.stream is not None:
            guard = ToolCallGuard(tools, ex) if tools is not None else None
            sg = stream_guard(ex)  # None unless a guard applies to the answer: then no per-chunk work
            content = None
            if sg is not None:
                want_usage = not strip_usage and bool(
                    (payload.get("stream_options") or {}).get("include_usage")
                )
                content = ChatContentGuard(sg, ex, want_usage, lambda: meter.final_usage())
            meter = ChatStreamMeter(ex, payload, strip_usage, guard, content)
            result.stream = meter.relay(result.stream)
            if any(t.tpm is not None for t in model.targets):  # its tokens count against a tpm limit
                result.stream = counted(result.stream, ex, router.routing)
        else:
            body = result.body or b""
            parsed = result.payload  # a provider that read the answer (and refused a broken one) parsed it
            if parsed is None:
                try:
                    parsed = orjson.loads(body)
                except orjson.JSONDecodeError:
                    parsed = None
            ex.usage = usage_from_body(payload, body, parsed)
            router.routing.used(ex.attrs.get("target", ""), ex.usage.total_tokens if ex.usage else 0)
            if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
                ex.attrs["response_model"] = parsed["model"]  # for the trace (gen_ai.response.model)
            if tools is not None:  # after usage: a refused answer was still produced and is charged
                stripped = tools.check_answer(ex, parsed)
                if stripped is not None:
                    result.body, result.payload = stripped, None
        if cache is not None and key is not None:
            await cache.settle(ex, key, hit, result)
        return result

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        wanted = path[len("/v1/models/") :] if path.startswith("/v1/models/") else None

        async def forward(ex: Exchange) -> Result:
            # A caller sees exactly the models it may call; anything else does not exist for it.
            visible = [
                n for n in sorted(self.router.models) if self.pipeline.allows(ex.principal, f"llm:{n}")
            ]
            if wanted is not None:
                if wanted not in visible:
                    raise ModelNotFound.named(wanted)
                return Result(body=jsontext.dumps(self._model_entry(wanted)))
            return Result(
                body=jsontext.dumps({"object": "list", "data": [self._model_entry(n) for n in visible]})
            )

        await self._lookup(scope, send, "models", forward)

    async def _lookup(
        self,
        scope: Scope,
        send: Send,
        operation: str,
        forward: Callable[[Exchange], Awaitable[Result]],
        render: Callable[[GatewayError], bytes] = error_body,
    ) -> None:
        """A read of the gateway's own (model list, stored responses) through the pipeline: authenticated and
        recorded like any call, answered by `forward` without an upstream."""
        headers = header_dict(scope)
        ex = Exchange("llm", operation, "llm:*", headers, client_host(scope))
        ex.attrs["listing"] = True
        ex.task = task_from_headers(headers)
        reply = {"x-agentgw-task": ex.task.task_id}
        try:
            result = await self.pipeline.run(ex, forward)
        except GatewayError as err:
            await send_bytes(send, err.status, render(err), extra={**reply, **err.headers})
            return
        await send_bytes(send, 200, result.body or b"", extra=reply)

    def _model_entry(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "agentgw"}
