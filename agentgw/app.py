"""create_app(settings): the gateway as one ASGI app: lifespan, the planes, health and readiness.

Dispatch is a path-prefix switch (the LLM plane's hot path never goes through a framework router).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from agentgw import __version__
from agentgw.a2a.plane import A2APlane
from agentgw.admin import WELL_KNOWN, Admin, protected_resource_url
from agentgw.admin.metrics import MetricsEndpoint
from agentgw.admin.registry import AuditSource
from agentgw.audit.writer import open_sink
from agentgw.configcheck import registry_problems
from agentgw.console import Console
from agentgw.errors import GatewayError, NotFound
from agentgw.exchange import Exchange, task_from_headers
from agentgw.frontdoor import HostGuard, plane_of, refusal_body
from agentgw.guardrails.engine import Guardrails
from agentgw.http import Receive, Scope, Send, client_host, header_dict, send_bytes
from agentgw.identity import JWKS_PATH
from agentgw.jwt_auth import JWTVerifier
from agentgw.keys import KeyStore
from agentgw.llm.plane import LLMPlane
from agentgw.mcp import tool_costs, tool_tags
from agentgw.metrics import Metrics, add_process_metrics
from agentgw.parts import identity_specs, make_approvals, make_ledger, outbound_identity, policy_store
from agentgw.pipeline import Pipeline, Stage
from agentgw.reload import RegistryWatch
from agentgw.secrets import Scrubber, configured_secrets, scrub_logs
from agentgw.settings import Settings
from agentgw.stages import default_stages
from agentgw.stages.audit import AuditStage
from agentgw.stages.authn import Authenticator
from agentgw.stages.budget import BudgetStage
from agentgw.stages.guard import GuardStage
from agentgw.stages.observe import GatewayMetrics, ObserveStage
from agentgw.supervisor import Supervisor, specs_of
from agentgw.tokens import count_tokens
from agentgw.upstream import UpstreamPool

if TYPE_CHECKING:
    from agentgw.mcp.plane import MCPPlane
    from agentgw.telemetry import Telemetry

log = logging.getLogger("agentgw")


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = UpstreamPool(settings.upstream)
        self.audit = open_sink(settings)  # None when audit.enabled is false
        # Every secret value configured since start (a reload adds; one removed stays a secret): /admin answers,
        # log lines and audit records are scrubbed of them. Updated in place by apply_registry.
        self.secrets = dict.fromkeys(configured_secrets(settings))
        self.scrubber = Scrubber(self.secrets)
        self.keys = KeyStore(settings)
        self.policy = policy_store(settings)
        jwt_cfg = settings.auth.jwt
        self.jwt = JWTVerifier(jwt_cfg, settings.base_dir) if jwt_cfg else None
        challenge: dict[str, str] = {}
        if jwt_cfg is not None:  # MCP clients discover the authorization server from this (RFC 9728)
            meta = WELL_KNOWN + urlsplit(protected_resource_url(jwt_cfg, self.mcp_url())).path
            origin = urlsplit(protected_resource_url(jwt_cfg, self.mcp_url()))
            challenge["mcp"] = f'resource_metadata="{origin.scheme}://{origin.netloc}{meta}"'
        self.auth = Authenticator(
            self.keys,
            self.jwt,
            {plane: list(kinds) for plane, kinds in settings.auth.accept.items()},
            challenge,
        )
        self.ledger = make_ledger(settings.budgets) if settings.budgets.rules else None
        budget = None
        if self.ledger is not None:
            models = settings.registry_data.llm.models
            pricing = {f"llm:{m.name}": m.pricing for m in models if m.pricing}
            budget = BudgetStage(
                settings.budgets,
                self.ledger,
                pricing,
                tool_costs(settings.registry_data.mcp),
                {f"llm:{m.name}": m.max_output_tokens for m in models if m.max_output_tokens},
            )
        self.budget = budget
        self.approvals = make_approvals(settings, self.pool, list(self.secrets))
        self.metrics = Metrics()
        self.observed = GatewayMetrics(self.metrics) if settings.metrics.enabled else None
        self.guardrails: Guardrails | None = None
        guard = None
        if settings.guardrails.active:
            pool = self.pool
            self.guardrails = Guardrails(settings.guardrails, lambda: pool.session)
            guard = GuardStage(self.guardrails, self.metrics if self.observed is not None else None)
        stages = default_stages(
            self.audit, self.auth, self.policy, budget, settings.authz.reveal_denied, self.approvals, guard
        )
        self.telemetry: Telemetry | None = None
        if settings.telemetry.enabled:  # the OpenTelemetry SDK is imported only when it is used
            from agentgw.telemetry import Telemetry

            self.telemetry = Telemetry(settings.telemetry, settings.registry_data)
        if self.observed is not None or self.telemetry is not None:
            stages = [ObserveStage(self.observed, self.telemetry), *stages]  # its on_finish runs last
        self.pipeline = Pipeline(stages)
        self._gauges(stages)
        roles = {*settings.auth.admin_roles, *settings.metrics.roles}
        self.metrics_endpoint = MetricsEndpoint(self.metrics, self.auth, roles, settings.metrics.public)
        self.console = Console.from_settings(settings, self.auth)
        self.admin = Admin(
            self.auth,
            self.policy,
            settings.auth.admin_roles,
            jwt_cfg,
            self.mcp_url,
            self.ledger,
            self.audit.store if self.audit is not None else None,
            self.scrubber,
            self.approvals,
            settings.auth.auditor_roles,
            self.console.sessions if self.console is not None else None,
        )
        self.admin.trace.key = settings.audit.hmac_key  # to check a task's records (console: verify)
        self.identity = outbound_identity(settings, self.pool)
        self.llm = LLMPlane(settings, self.pipeline, self.pool, self.identity)
        mcp = settings.registry_data.mcp
        self.mcp: MCPPlane | None = None
        if mcp.servers:  # the MCP SDK is loaded only when there is something to serve
            from agentgw.mcp import MCPPlane

            self.mcp = MCPPlane(settings, self.pipeline, self.pool, self.identity, self._metrics())
        self.admin.pins = lambda: self.mcp.pinops if self.mcp is not None else None
        self.a2a = A2APlane(settings, self.pipeline, self.pool, self.identity, self.identity.keys, budget)
        self.supervisor = Supervisor.from_settings(settings)
        # GET /admin/registry: each plane reports itself (the MCP plane may start later, with a reload)
        self.admin.registry.planes = lambda: {"llm": self.llm, "mcp": self.mcp, "a2a": self.a2a}
        self.admin.registry.processes = self.supervisor.status
        self.admin.registry.audit = (
            AuditSource(self.audit, settings.resolve) if self.audit is not None else None
        )
        self.door = HostGuard(settings)
        self.registry = RegistryWatch(settings, registry_problems, self.apply_registry)
        audit = next((s for s in stages if isinstance(s, AuditStage)), None)
        self.refusals = audit.refusals if audit is not None else None
        if audit is not None:  # an approver's decision is an audit record of its own
            stage = audit
            self.approvals.record = lambda ex: stage.submit(ex, time.perf_counter())
        self.started = False
        # an MCP plane a registry reload started (the gateway had no MCP server until then): see _host
        self._mcp_host: asyncio.Task[None] | None = None
        self._mcp_ready, self._mcp_stop = asyncio.Event(), asyncio.Event()

    def _metrics(self) -> Metrics | None:
        """The registry the MCP plane adds its families to (tool pin changes), when metrics are on."""
        return self.metrics if self.observed is not None else None

    def note_refusal(self, client: str | None, path: str, status: int, code: str) -> None:
        """Tally a refusal made before any plane saw the request (Host/Origin here; the connection limits of
        server.py call this through the ASGI app uvicorn holds): one record per source, plane and window."""
        if self.refusals is not None:
            self.refusals.count(client, plane_of(path), code, status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            # Host/Origin before any plane (DNS rebinding); /healthz says nothing, so probes need no Host.
            refused = self.door.check(scope) if path != "/healthz" else None
            if refused is not None:
                status, code, message = refused
                self.note_refusal(client_host(scope), path, status, code)
                await send_bytes(send, status, refusal_body(path, status, code, message))
            elif path.startswith("/v1/"):
                await self.llm(scope, receive, send)
            elif path == "/mcp" or path.startswith("/mcp/"):
                if self.mcp is not None:
                    await self.mcp(scope, receive, send)
                else:
                    await self._no_mcp(scope, send)
            elif path == "/a2a" or path.startswith("/a2a/"):
                await self.a2a(scope, receive, send)
            elif path.startswith("/admin/"):
                await self.admin(scope, receive, send)
            elif (path == "/console" or path.startswith("/console/")) and self.console is not None:
                await self.console(scope, receive, send)
            elif path == JWKS_PATH:  # public: upstreams verify the gateway's assertions with these keys
                await send_bytes(
                    send, 200, self.identity.keys.jwks(), extra={"cache-control": "public, max-age=300"}
                )
            elif path.startswith(WELL_KNOWN):
                await self.admin.metadata(scope, receive, send)
            elif path == "/metrics" and self.observed is not None:
                await self.metrics_endpoint(scope, receive, send)
            elif path == "/healthz":
                await send_bytes(send, 200, b'{"status":"ok"}')
            elif path == "/readyz":
                ready, detail = self.readiness()
                await send_bytes(send, 200 if ready else 503, orjson.dumps({"ready": ready, **detail}))
            else:
                body = orjson.dumps(
                    {
                        "error": {
                            "message": f"Unknown path {path}.",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "unknown_url",
                        }
                    }
                )
                await send_bytes(send, 404, body)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _no_mcp(self, scope: Scope, send: Send) -> None:
        """No MCP servers configured: still authenticate first (nothing is revealed to anonymous callers)."""
        ex = Exchange("mcp", "request", "mcp:*", header_dict(scope), client_host(scope))
        ex.task = task_from_headers(ex.headers)
        err: GatewayError = NotFound("No MCP servers are configured.", code="no_mcp_servers")
        err = await self.pipeline.reject(ex, err)
        rpc = -32010 if err.status == 401 else -32601
        body = {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": rpc, "message": err.message, "data": {"code": err.code, "status": err.status}},
        }
        await send_bytes(
            send, err.status, orjson.dumps(body), extra={"x-agentgw-task": ex.task.task_id, **err.headers}
        )

    def _gauges(self, stages: list[Stage]) -> None:
        """What the registry reads from other objects at scrape time (the audit writer's queue, …)."""
        m, sink = self.metrics, self.audit
        add_process_metrics(m)
        m.gauge(
            "agentgw_build_info",
            lambda: 1,
            "The running agentgw version (always 1).",
            {"version": __version__},
        )
        m.gauge("agentgw_audit_queue_depth", lambda: _number(sink, "depth"), "Audit records not yet written.")
        m.counter_fn(
            "agentgw_audit_records_written_total", lambda: _number(sink, "written"), "Audit records written."
        )
        audit = next((s for s in stages if isinstance(s, AuditStage)), None)

        def lost() -> float | None:
            dropped = _number(sink, "dropped")
            gave_up = _number(sink, "lost")  # the store was still down when shutdown gave up on it
            return (dropped or 0) + (gave_up or 0) + (audit.lost if audit is not None else 0)

        m.counter_fn(
            "agentgw_audit_records_lost_total",
            lost,
            "Audit records dropped (queue full), not written at shutdown, or lost in the hook.",
        )

    def mcp_url(self) -> str:
        listen = self.settings.listen
        return f"http://{listen.host}:{listen.port}/mcp"

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the config and policy are loaded, the pool is open, and no configured upstream is left out:
        every supervised process runs and every MCP server is connected and listed. `left_out` names each
        upstream that is not, and why."""
        mcp = self.mcp.status() if self.mcp is not None else {}
        processes = self.supervisor.status()
        left_out = [
            {"upstream": f"mcp:{name}", "state": st["state"], "reason": st["reason"]}
            for name, st in mcp.items()
            if not st["ready"]
        ]
        left_out += [
            {
                "upstream": name,
                "state": "not_running",
                "reason": "the process is not running"
                + (f" (last exit code {st['last_exit_code']})" if st["last_exit_code"] is not None else ""),
            }
            for name, st in processes.items()
            if not st["running"]
        ]
        checks = {
            "config": True,
            "policy": self.policy.engine is not None,
            "upstream_pool": self.pool.ready,
            "supervised": self.supervisor.ready,
            "mcp_servers": all(st["ready"] for st in mcp.values()),
        }
        detail = {
            "checks": checks,
            "left_out": left_out,
            "policy": self.policy.status(),
            "processes": processes,
            "registry": self.registry.status(),  # informational: a refused reload keeps the running registry
            "mcp": mcp,
        }
        if self.budget is not None:
            detail["budgets"] = self.budget.status()
        if self.audit is not None:
            a = self.audit
            detail["audit"] = {
                "store": a.store.kind,
                "depth": a.depth,
                "written": a.written,
                "dropped": a.dropped,
            }
        return all(checks.values()) and self.started, detail

    async def startup(self) -> None:
        scrub_logs(self.scrubber)  # the log filter follows this gateway's secrets (reloads update them)
        if any(p.kind == "mock" for p in self.settings.registry_data.llm.providers):
            # The mock counts tokens on every call: load the tokenizer now (~0.2 s, ~40 MiB, in a thread)
            # rather than on the first request. Real providers report usage; counting is only a fallback.
            await asyncio.to_thread(count_tokens, "warm up")
        await self.pool.start()
        if self.jwt is not None:
            self.jwt.session = self.pool.session
            try:
                await self.jwt.refresh()
            except Exception as exc:  # the issuer may be down at start: keys are fetched again on first use
                log.warning("could not load the JWKS at startup: %s", exc)
        if self.audit is not None:
            await self.audit.start()
        if self.budget is not None:
            await self.budget.start()
        await self.approvals.start()
        await self.llm.start()
        await self.policy.start()
        with contextlib.suppress(
            NotImplementedError, RuntimeError, ValueError
        ):  # not the main thread / Windows
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)
        self.registry.start()
        await self.supervisor.start()
        await self.a2a.start()
        if self.mcp is not None:
            await self.mcp.start()
        if self.telemetry is not None:
            self.telemetry.start()
        # Everything loaded so far lives as long as the process: move it out of the collector's reach, so
        # full collections under load do not walk ~100k long-lived objects (measured: p99 82 → 16 ms at c=32).
        gc.collect()
        gc.freeze()
        self.started = True

    def _hangup(self) -> None:
        self.policy.load()
        self.registry.hangup()

    async def apply_registry(self, settings: Settings) -> None:
        """A reloaded, validated registry, applied in place: the LLM router is swapped at once; MCP servers and
        supervised processes are restarted only where their entry changed; prices, tool costs and tool tags
        follow. Sessions and streams the change does not touch keep going."""
        reg = settings.registry_data
        self.settings = settings
        # First: nothing the new entries make is recorded, shown or logged before their secrets are scrubbed.
        await self.use_secrets(settings)
        self.identity.apply(identity_specs(reg))  # before the planes build upstreams that use it
        self.llm.apply_registry(reg.llm)
        self.llm.apply_mcp_names(reg.mcp)
        self.a2a.apply_registry(reg.a2a)
        if self.mcp is not None:
            await self.mcp.apply_registry(reg.mcp)
        elif reg.mcp.servers:  # the first MCP server: the plane starts now
            from agentgw.mcp import MCPPlane

            plane = MCPPlane(settings, self.pipeline, self.pool, self.identity, self._metrics())
            self._mcp_host = asyncio.create_task(self._host(plane), name="mcp-plane")
            ready = asyncio.ensure_future(self._mcp_ready.wait())
            await asyncio.wait((ready, self._mcp_host), return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if self._mcp_host.done():  # it failed to start: the reload says so, the gateway keeps going
                self._mcp_host.result()
            self.mcp = plane
        if self.budget is not None:
            self.budget.pricing = {f"llm:{m.name}": m.pricing for m in reg.llm.models if m.pricing}
            self.budget.tool_costs = tool_costs(reg.mcp)
        if self.telemetry is not None:
            self.telemetry.use_registry(reg)
        tags = tool_tags(reg.mcp)
        if tags != self.policy.tags:
            self.policy.tags = tags
            self.policy.load()
        await self.supervisor.apply(specs_of(settings))

    async def _host(self, plane: MCPPlane) -> None:
        """A plane a reload started lives in a task of its own: it is started and closed by the same task (its
        task groups and cancel scopes belong to the task that entered them, not to the reload's or shutdown's)."""
        await plane.start()
        try:
            self._mcp_ready.set()
            await self._mcp_stop.wait()
        finally:
            await plane.aclose()

    async def use_secrets(self, settings: Settings) -> None:
        """Add the secret values `settings` configures to those scrubbed from /admin, log lines and audit records
        (the writer process is told over its pipe, in order with the records)."""
        fresh = await asyncio.to_thread(configured_secrets, settings)  # reads the registry files' ${VAR}s
        if all(s in self.secrets for s in fresh):
            return
        self.secrets.update(dict.fromkeys(fresh))
        self.scrubber.update(self.secrets)
        if self.audit is not None:
            self.audit.use_secrets(list(self.secrets))
        self.approvals.redactor.use_secrets(list(self.secrets))

    async def shutdown(self) -> None:
        self.started = False
        await self.registry.aclose()
        if self._mcp_host is not None:
            self._mcp_stop.set()
            await self._mcp_host
        elif self.mcp is not None:
            await self.mcp.aclose()
        if self.budget is not None:
            await self.budget.flush()
        if self.ledger is not None:
            await self.ledger.aclose()
        await self.supervisor.stop()
        await self.a2a.aclose()
        await self.llm.aclose()
        await self.approvals.aclose()
        if self.console is not None:
            await self.console.sessions.aclose()
        if self.guardrails is not None:
            await self.guardrails.aclose()
        await self.policy.aclose()
        await self.pool.aclose()
        if self.audit is not None:  # every call above that finished is in the queue: drain it into the store
            if self.refusals is not None:  # the open windows of refusals: one record each, now
                await self.refusals.flush()
            await self.audit.aclose()
        if self.telemetry is not None:  # last: spans of calls that finished during shutdown are flushed too
            await self.telemetry.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _number(obj: object, name: str) -> float | None:
    """A numeric attribute if `obj` has one (audit writers expose depth/written/dropped), else no sample."""
    value = getattr(obj, name, None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def create_app(settings: Settings) -> Gateway:
    return Gateway(settings)
