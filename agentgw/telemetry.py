"""OpenTelemetry export (the only `opentelemetry.sdk` importer; loaded only when `telemetry.enabled`): each finished
Exchange becomes a SERVER span and a CLIENT span per upstream attempt (GenAI and MCP conventions), batched to
OTLP/HTTP by a background thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agentgw import __version__
from agentgw.exchange import Attempt, Decision, Exchange, new_id
from agentgw.observability import TelemetrySettings
from agentgw.registry import Registry

log = logging.getLogger("agentgw.telemetry")

# gen_ai.provider.name per provider kind (semantic-convention values; the mock is ours)
PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "mock": "agentgw.mock",
}
_LOW64 = (1 << 64) - 1
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)
_SCOPE = InstrumentationScope("agentgw", __version__)


def _address(url: str | None) -> tuple[str, int] | None:
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname, port


class Telemetry:
    """Builds spans from finished Exchanges and queues them for the batch exporter (`export` is called from the
    pipeline's observe stage; nothing here runs while a call is in flight).

    Spans are built after the fact as finished `ReadableSpan`s with the ids the gateway already chose (they name
    audit records and were sent upstream as `traceparent`), and handed straight to the batch processor: no
    tracer, no global provider (the mcp SDK would start tracing), no per-attribute validation (our values are
    plain); through the SDK tracer this cost 6× more per Exchange."""

    def __init__(
        self, cfg: TelemetrySettings, registry: Registry, exporter: SpanExporter | None = None
    ) -> None:
        self.cfg = cfg
        self._exporter = exporter
        self.bound = round(cfg.sample_ratio * (1 << 64)) if cfg.sample_ratio < 1.0 else None
        self.use_registry(registry)
        self.resource = Resource.create(
            {"service.name": cfg.service_name, "service.version": __version__, **cfg.resource_attributes}
        )
        self._processor: BatchSpanProcessor | None = None

    def use_registry(self, registry: Registry) -> None:
        """Span attributes for providers and MCP servers (at start, and again when the registry reloads)."""
        self.providers: dict[str, tuple[str, tuple[str, int] | None]] = {
            p.name: (PROVIDER_NAMES.get(p.kind, p.kind), _address(p.base_url)) for p in registry.llm.providers
        }
        self.mcp_servers = {s.name: _address(s.url) for s in registry.mcp.servers}

    def start(self) -> None:
        """Create the exporter and the batch processor (its worker thread starts here)."""
        if self._processor is not None:
            return
        cfg = self.cfg
        exporter = self._exporter or OTLPSpanExporter(
            endpoint=cfg.otlp.traces_url,
            headers=dict(cfg.otlp.headers),
            timeout=cfg.otlp.timeout_s,
            compression=Compression.Gzip if cfg.otlp.compression == "gzip" else Compression.NoCompression,
        )
        self._processor = BatchSpanProcessor(
            exporter,
            max_queue_size=cfg.max_queue_size,
            schedule_delay_millis=cfg.schedule_delay_ms,
            max_export_batch_size=min(cfg.max_export_batch_size, cfg.max_queue_size),
        )
        log.info("exporting traces to %s", cfg.otlp.traces_url)  # the URL only: headers may hold secrets

    async def aclose(self) -> None:
        """Flush every queued span and stop the exporter (blocking work, so in a thread)."""
        processor, self._processor = self._processor, None
        if processor is not None:
            await asyncio.to_thread(processor.shutdown)

    # -- spans ------------------------------------------------------------------------------------------------

    def export(self, ex: Exchange, end_mono: float) -> None:
        processor = self._processor
        if processor is None:
            return
        task = ex.task
        trace_id = int(task.trace_id if task is not None else new_id(16), 16)
        if self.bound is not None and (trace_id & _LOW64) >= self.bound:
            return
        base_ns = int(ex.started * 1e9)
        started_mono = ex.started_mono

        def ns(mono: float) -> int:
            return base_ns + int((mono - started_mono) * 1e9)

        parent = None
        if task is not None and task.parent_span_id:
            parent = SpanContext(trace_id, int(task.parent_span_id, 16), is_remote=True, trace_flags=_SAMPLED)
        server = SpanContext(trace_id, int(ex.span_id, 16), is_remote=False, trace_flags=_SAMPLED)
        name, attrs = self._server(ex)
        status = _OK
        err = ex.error
        if err is not None:
            attrs["error.type"] = err.code
            status = Status(StatusCode.ERROR, err.message)
        events = [Event("agentgw.decision", _decision(d), base_ns) for d in ex.decisions]
        end_ns = ns(end_mono)
        streamed = ex.result is not None and ex.result.stream is not None
        last = len(ex.attempts) - 1
        for i, a in enumerate(ex.attempts):
            if a.outcome == "circuit_open":  # nothing was sent
                continue
            final = i == last and a.outcome == "ok"
            cname, cattrs = self._client(ex, a, final)
            cstatus = _OK
            if a.outcome != "ok":
                cattrs["error.type"] = _error_type(ex.plane, a)
                cstatus = Status(StatusCode.ERROR, a.error or a.outcome)
            # a stream's attempt lasts until its last frame; any other until its answer
            cend = end_ns if final and streamed else ns(a.started_mono + a.latency_ms / 1000.0)
            context = SpanContext(trace_id, int(a.span_id, 16), is_remote=False, trace_flags=_SAMPLED)
            processor.on_end(
                self._span(
                    cname, context, server, SpanKind.CLIENT, cattrs, (), cstatus, ns(a.started_mono), cend
                )
            )
        processor.on_end(
            self._span(name, server, parent, SpanKind.SERVER, attrs, events, status, base_ns, end_ns)
        )

    def _span(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attrs: dict[str, Any],
        events: Sequence[Event],
        status: Status,
        start_ns: int,
        end_ns: int,
    ) -> ReadableSpan:
        return ReadableSpan(
            name,
            context,
            parent,
            self.resource,
            attrs,
            events,
            kind=kind,
            status=status,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=_SCOPE,
        )

    def _server(self, ex: Exchange) -> tuple[str, dict[str, Any]]:
        op, target = ex.operation, ex.target
        attrs: dict[str, Any] = {
            "agentgw.plane": ex.plane,
            "agentgw.operation": op,
            "agentgw.target": target,
            "agentgw.status": ex.status,
        }
        task, principal = ex.task, ex.principal
        if task is not None:
            attrs["agentgw.task.id"] = task.task_id
            if task.parent_task_id:
                attrs["agentgw.parent_task.id"] = task.parent_task_id
        if principal is not None:
            attrs["agentgw.principal"] = principal.subject
        if ex.client:
            attrs["client.address"] = ex.client
        if ex.stream_cut:
            attrs["agentgw.stream_cut"] = ex.stream_cut
        name = op
        if ex.plane == "llm":
            model = target[4:]
            if model and model != "*":
                name = f"{op} {model}"
                attrs["gen_ai.request.model"] = model
            if op in ("chat", "embeddings"):
                attrs["gen_ai.operation.name"] = op
                self._llm_usage(ex, attrs)
                payload = ex.payload or {}
                limit = payload.get("max_completion_tokens", payload.get("max_tokens"))
                if isinstance(limit, int) and not isinstance(limit, bool):
                    attrs["gen_ai.request.max_tokens"] = limit
        elif ex.plane == "mcp":
            name = self._mcp(ex, op, attrs, exposed=True)
            headers = ex.headers
            if "mcp-session-id" in headers:
                attrs["mcp.session.id"] = headers["mcp-session-id"]
            if "mcp-protocol-version" in headers:
                attrs["mcp.protocol.version"] = headers["mcp-protocol-version"]
        elif target and not target.endswith(":*"):
            name = f"{op} {target.split(':', 1)[-1]}"
        return name, attrs

    def _client(self, ex: Exchange, a: Attempt, final: bool) -> tuple[str, dict[str, Any]]:
        attrs: dict[str, Any] = {"agentgw.attempt": a.number, "agentgw.upstream": a.target}
        if a.status:
            attrs["http.response.status_code"] = a.status
        if ex.plane == "llm":
            provider, _, model = a.target.partition("/")
            system, address = self.providers.get(provider, (provider, None))
            attrs["gen_ai.operation.name"] = ex.operation
            attrs["gen_ai.provider.name"] = system
            attrs["gen_ai.request.model"] = model
            if address is not None:
                attrs["server.address"], attrs["server.port"] = address
            if final:
                self._llm_usage(ex, attrs)
            return f"{ex.operation} {model}", attrs
        if ex.plane == "mcp":
            server = a.target[4:]
            attrs["agentgw.mcp.server"] = server
            address = self.mcp_servers.get(server)
            if address is not None:
                attrs["server.address"], attrs["server.port"] = address
            return self._mcp(ex, ex.operation, attrs, exposed=False), attrs
        return f"{ex.operation} {a.target}", attrs

    @staticmethod
    def _llm_usage(ex: Exchange, attrs: dict[str, Any]) -> None:
        model = ex.attrs.get("response_model")
        if model:
            attrs["gen_ai.response.model"] = model
        usage = ex.usage
        if usage is None:
            return
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.cached_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
        if usage.reasoning_tokens:
            attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if usage.estimated:
            attrs["agentgw.usage.estimated"] = True

    @staticmethod
    def _mcp(ex: Exchange, op: str, attrs: dict[str, Any], *, exposed: bool) -> str:
        """MCP attributes; the span name `{method} {target}`. `exposed`: the name as the caller used it (the
        server span), else the upstream's own name (the client span)."""
        if "/" not in op:  # connect, request: the gateway's own records of refused HTTP requests
            return op
        attrs["mcp.method.name"] = op
        payload = ex.payload or {}
        own = ex.target[4:].partition("/")[2]
        subject: str | None = None
        if op == "tools/call":
            subject = payload.get("name") if exposed else own
            attrs["gen_ai.operation.name"] = "execute_tool"
            if isinstance(subject, str):
                attrs["gen_ai.tool.name"] = subject
        elif op == "prompts/get":
            subject = payload.get("name") if exposed else own.removeprefix("prompt/")
            if isinstance(subject, str):
                attrs["gen_ai.prompt.name"] = subject
        elif op == "resources/read":
            subject = payload.get("uri") if exposed else own.removeprefix("resource/")
            if isinstance(subject, str):
                attrs["mcp.resource.uri"] = subject
        return f"{op} {subject}" if isinstance(subject, str) and subject else op


def _decision(d: Decision) -> dict[str, Any]:
    event: dict[str, Any] = {"agentgw.stage": d.stage, "agentgw.outcome": d.outcome}
    if d.rule:
        event["agentgw.rule"] = d.rule
    if d.detail:
        event["agentgw.detail"] = d.detail
    return event


def _error_type(plane: str, a: Attempt) -> str:
    """Low-cardinality: the upstream's HTTP status, an MCP attempt's stable code, else the outcome (timeout, …)."""
    if a.status and a.status >= 400:
        return str(a.status)
    if plane == "mcp" and a.error:
        return a.error
    return a.outcome
