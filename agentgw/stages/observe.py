"""The observation hook: after every other stage has finished with an Exchange, count it into the gateway's
Prometheus metrics and hand it to the span exporter (when OpenTelemetry is on). Plain dict updates on the hot
path; spans are built by the exporter from the finished Exchange, never while the call is running."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from agentgw.exchange import Exchange
from agentgw.metrics import Metrics
from agentgw.pipeline import Stage

log = logging.getLogger("agentgw.observe")

TOKEN_TYPES = ("input", "output", "cached", "reasoning")
BUDGET_CODES = frozenset({"budget_exhausted", "rate_limited"})


class ExchangeExporter(Protocol):
    """What the stage needs of the OpenTelemetry exporter (agentgw.telemetry): take one finished Exchange."""

    def export(self, exchange: Exchange, end_mono: float) -> None: ...


def denying_stage(ex: Exchange) -> str:
    """The stage that refused an Exchange: the last deny (or error) decision, else the upstream's own refusal."""
    for d in reversed(ex.decisions):
        if d.outcome in ("deny", "error"):
            return d.stage
    return "upstream" if ex.attempts else "request"


class GatewayMetrics:
    """The metric families the pipeline feeds, on one registry (which also serves the app's gauges)."""

    def __init__(self, registry: Metrics | None = None) -> None:
        r = self.registry = registry or Metrics()
        self.requests = r.counter(
            "agentgw_requests_total",
            "Mediated operations, by plane, operation and outcome (ok, error, denied, cancelled).",
            ("plane", "operation", "status"),
        )
        self.errors = r.counter(
            "agentgw_errors_total",
            "Operations that failed or were refused, by plane and stable error code.",
            ("plane", "code"),
        )
        self.latency = r.histogram(
            "agentgw_request_duration_seconds",
            "Time from the request to the end of the answer (a stream's last frame), by plane and operation.",
            ("plane", "operation"),
        )
        self.tokens = r.counter(
            "agentgw_tokens_total",
            "LLM tokens by model (as clients name it) and type (input, output, cached, reasoning).",
            ("model", "type"),
        )
        self.tool_calls = r.counter(
            "agentgw_tool_calls_total",
            "MCP tools/call operations, by server, tool (the server's own name) and outcome.",
            ("server", "tool", "status"),
        )
        self.denials = r.counter(
            "agentgw_denials_total",
            "Operations refused, by plane and the stage that refused them (authn, authz, budget, upstream, …).",
            ("plane", "stage"),
        )
        self.budget = r.counter(
            "agentgw_budget_rejections_total",
            "Budget refusals: reason budget_exhausted or rate_limited; phase request (refused) or stream (cut).",
            ("plane", "reason", "phase"),
        )
        self.attempts = r.counter(
            "agentgw_upstream_attempts_total",
            "Calls to upstream targets (retries and failover included), by plane, target and outcome.",
            ("plane", "target", "outcome"),
        )

    def observe(self, ex: Exchange, end_mono: float) -> None:
        plane, status, err = ex.plane, ex.status, ex.error
        self.requests.inc((plane, ex.operation, status))
        self.latency.observe((plane, ex.operation), end_mono - ex.started_mono)
        if err is not None:
            code = err.code
            self.errors.inc((plane, code))
            if status == "denied":
                self.denials.inc((plane, denying_stage(ex)))
            if code in BUDGET_CODES:
                self.budget.inc((plane, code, "request"))
        if ex.stream_cut == "budget_exhausted":
            self.budget.inc((plane, "budget_exhausted", "stream"))
        usage = ex.usage
        if usage is not None and plane == "llm":
            model = ex.target[4:]
            tokens = self.tokens
            if usage.input_tokens:
                tokens.inc((model, "input"), usage.input_tokens)
            if usage.output_tokens:
                tokens.inc((model, "output"), usage.output_tokens)
            if usage.cached_tokens:
                tokens.inc((model, "cached"), usage.cached_tokens)
            if usage.reasoning_tokens:
                tokens.inc((model, "reasoning"), usage.reasoning_tokens)
        if ex.operation == "tools/call":
            server, _, tool = ex.target[4:].partition("/")
            if (
                server == "?"
            ):  # a name that resolved to nothing: the caller chose it, keep it out of the labels
                server = tool = "unknown"
            self.tool_calls.inc((server, tool, status))
        for a in ex.attempts:
            self.attempts.inc((plane, a.target, a.outcome))


class ObserveStage(Stage):
    """First in the stage list, so its `on_finish` runs last: it sees every decision and the audit outcome."""

    name = "observe"

    def __init__(self, metrics: GatewayMetrics | None, exporter: ExchangeExporter | None = None) -> None:
        self.metrics = metrics
        self.exporter = exporter

    async def on_finish(self, exchange: Exchange) -> None:
        end = time.perf_counter()
        if self.metrics is not None:
            self.metrics.observe(exchange, end)
        if self.exporter is not None:
            try:
                self.exporter.export(exchange, end)
            except Exception:  # telemetry never fails a call
                log.exception("span export failed")
