"""OpenTelemetry export: a real OTLP/HTTP exporter sends the gateway's spans to a small receiver on loopback that
decodes them with `opentelemetry-proto`; span names, attributes and parentage follow the GenAI and MCP
conventions, and the traceparent each upstream received names the gateway's span for that attempt."""

from __future__ import annotations

import contextlib
import gzip
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import TEST_KEY, audit_records, gateway, serve, write_config
from tests.upstreams import FakeOpenAI

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class ExportedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status: int
    status_message: str
    start_ns: int
    end_ns: int
    events: list[dict[str, Any]]
    service: str


@dataclass
class Collector:
    """An OTLP/HTTP traces endpoint: decodes each ExportTraceServiceRequest and keeps the spans."""

    spans: list[ExportedSpan] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    received: anyio.Event = field(default_factory=anyio.Event)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/traces", self.traces, methods=["POST"])])

    async def traces(self, request: Request) -> Response:
        raw = await request.body()
        self.requests.append(dict(request.headers))
        if request.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        export = ExportTraceServiceRequest()
        export.ParseFromString(raw)
        for rs in export.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        ExportedSpan(
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            status=s.status.code,
                            status_message=s.status.message,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            events=[{a.key: _value(a.value) for a in e.attributes} for e in s.events],
                            service=str(resource.get("service.name")),
                        )
                    )
        self.received.set()
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    def named(self, name: str) -> list[ExportedSpan]:
        return [s for s in self.spans if s.name == name]


@contextlib.asynccontextmanager
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    c = Collector()
    async with serve(c.app()) as url:
        yield c, url


def telemetry(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "telemetry": {
            "enabled": True,
            "service_name": "agentgw-test",
            "otlp": {"endpoint": url, "headers": {"x-collector-token": "${OTLP_TEST_TOKEN:-s3cret}"}},
            **extra,
        }
    }


def llm_registry(url: str) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [
                {"name": "up", "kind": "openai", "base_url": f"{url}/v1", "api_key": "sk-up-1234567890"}
            ],
            "models": [
                {
                    "name": "gpt",
                    "targets": [{"provider": "up", "model": "gpt-up"}],
                    "retry": {"attempts": 2, "backoff_ms": 0, "max_backoff_ms": 0},
                }
            ],
        }
    }


def has(span: ExportedSpan, expected: dict[str, Any]) -> bool:
    """The span carries every expected attribute with its value (and maybe others)."""
    return span.attributes | expected == span.attributes


def where(span: ExportedSpan) -> tuple[int, str, str]:
    """A span's kind, trace and parent span."""
    return span.kind, span.trace_id, span.parent_span_id


def traceparent_ids(header: str) -> tuple[str, str]:
    version, trace_id, span_id, flags = header.split("-")
    assert (version, flags) == ("00", "01")
    return trace_id, span_id


async def test_an_llm_chat_is_a_server_span_under_the_callers_trace_with_a_client_span_per_attempt(
    tmp_path: Path,
) -> None:
    fake = FakeOpenAI(failures=[503])  # the first attempt fails, the retry answers
    async with collector() as (otlp, otlp_url), serve(fake.app()) as up:
        async with gateway(tmp_path, llm_registry(up), telemetry(otlp_url)) as (url, _):
            async with openai.AsyncOpenAI(
                base_url=f"{url}/v1",
                api_key=TEST_KEY,
                max_retries=0,
                default_headers={"traceparent": CALLER_TRACEPARENT},
            ) as client:
                reply = await client.chat.completions.create(
                    model="gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=50
                )
        # leaving the gateway shut it down, which flushed every queued span
    assert reply.choices[0].message.content == "hello from upstream"
    [server] = otlp.named("chat gpt")
    assert where(server) == (
        Span.SPAN_KIND_SERVER,
        CALLER_TRACE,
        CALLER_SPAN,
    )
    assert server.service == "agentgw-test"
    assert has(
        server,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt",
            "gen_ai.response.model": "gpt-up",
            "gen_ai.usage.input_tokens": 11,
            "gen_ai.usage.output_tokens": 7,
            "gen_ai.usage.cache_read.input_tokens": 3,
            "gen_ai.usage.reasoning.output_tokens": 2,
            "gen_ai.request.max_tokens": 50,
            "agentgw.principal": "tester",
            "agentgw.status": "ok",
        },
    )
    assert server.status == Status.STATUS_CODE_UNSET
    assert {e["agentgw.stage"]: e["agentgw.outcome"] for e in server.events} == {
        "authn": "allow",
        "authz": "allow",
    }

    failed, answered = sorted(otlp.named("chat gpt-up"), key=lambda s: s.start_ns)
    for attempt in (failed, answered):
        assert where(attempt) == (
            Span.SPAN_KIND_CLIENT,
            CALLER_TRACE,
            server.span_id,
        )
        assert has(
            attempt,
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-up",
                "server.address": "127.0.0.1",
            },
        )
        assert server.start_ns <= attempt.start_ns <= attempt.end_ns <= server.end_ns
    assert failed.attributes["error.type"] == "503" and failed.status == Status.STATUS_CODE_ERROR
    assert "gen_ai.usage.input_tokens" not in failed.attributes
    assert answered.status == Status.STATUS_CODE_UNSET
    assert answered.attributes["gen_ai.response.model"] == "gpt-up"
    assert (
        answered.attributes["gen_ai.usage.input_tokens"],
        answered.attributes["gen_ai.usage.output_tokens"],
    ) == (11, 7)
    # each upstream request named its own attempt's span as parent, in the caller's trace
    sent = [traceparent_ids(r["headers"]["traceparent"]) for r in fake.requests]
    assert sent == [(CALLER_TRACE, failed.span_id), (CALLER_TRACE, answered.span_id)]
    # the audit record and the server span are the same step
    record = audit_records(tmp_path)[-1]
    assert (record["trace_id"], record["span_id"], record["parent_span_id"]) == (
        CALLER_TRACE,
        server.span_id,
        CALLER_SPAN,
    )
    # the collector got the configured header (interpolated from the environment default)
    assert otlp.requests[0]["x-collector-token"] == "s3cret"
    assert otlp.requests[0]["content-type"] == "application/x-protobuf"


async def test_a_streamed_chat_without_a_caller_trace_is_a_root_span_whose_attempt_lasts_the_stream(
    tmp_path: Path,
) -> None:
    fake = FakeOpenAI(chunks=4)
    async with collector() as (otlp, otlp_url), serve(fake.app()) as up:
        settings = telemetry(otlp_url, otlp={"endpoint": otlp_url, "compression": "gzip"})
        async with gateway(tmp_path, llm_registry(up), settings) as (url, _):
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as client:
                stream = await client.chat.completions.create(
                    model="gpt", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "w0 w1 w2 w3 "
    [server] = otlp.named("chat gpt")
    [attempt] = otlp.named("chat gpt-up")
    assert server.parent_span_id == ""  # a root: the caller sent no traceparent
    assert attempt.parent_span_id == server.span_id and attempt.trace_id == server.trace_id
    assert attempt.end_ns == server.end_ns  # the stream's attempt ends with its last frame
    assert server.attributes["gen_ai.usage.output_tokens"] == 7  # the usage chunk the gateway asked for
    assert attempt.attributes["gen_ai.response.model"] == "gpt-up"
    assert traceparent_ids(fake.requests[0]["headers"]["traceparent"]) == (server.trace_id, attempt.span_id)
    assert otlp.requests[0]["content-encoding"] == "gzip"


async def test_a_denied_call_is_an_error_span_with_its_stable_code_and_no_upstream_span(
    tmp_path: Path,
) -> None:
    fake = FakeOpenAI()
    async with collector() as (otlp, otlp_url), serve(fake.app()) as up:
        async with gateway(tmp_path, llm_registry(up), telemetry(otlp_url)) as (url, _):
            async with openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key="agw-not-a-key", max_retries=0
            ) as client:
                with pytest.raises(openai.AuthenticationError):
                    await client.chat.completions.create(
                        model="gpt", messages=[{"role": "user", "content": "x"}]
                    )
    [server] = otlp.spans
    assert server.name == "chat gpt" and server.kind == Span.SPAN_KIND_SERVER
    assert server.status == Status.STATUS_CODE_ERROR
    assert server.attributes["error.type"] == "invalid_api_key"
    assert server.attributes["agentgw.status"] == "denied"
    assert fake.requests == []


def _meta_traceparent(ctx: Context) -> str:
    meta = ctx.request_context.meta
    extra = meta if isinstance(meta, dict) else (getattr(meta, "model_extra", None) or {})
    return str(extra.get("traceparent", ""))


@pytest.mark.parametrize(
    ("client_mode", "carrier"),
    [("legacy", "header"), ("2026-07-28", "header"), ("legacy", "_meta"), ("2026-07-28", "_meta")],
)
async def test_an_mcp_tool_call_is_a_server_span_with_a_client_span_whose_id_the_upstream_receives(
    tmp_path: Path, client_mode: str, carrier: str
) -> None:
    """The caller's trace context comes in the HTTP header or in `params._meta` (MCP's own carrier)."""
    docs = Upstream("docs")
    seen_meta: list[str] = []

    @docs.server.tool(description="The traceparent in this request's _meta")
    def meta_traceparent(ctx: Context) -> str:
        seen_meta.append(_meta_traceparent(ctx))
        return seen_meta[-1]

    entry = server_entry("docs", "", tools={"tags": {"echo": ["dangerous"]}})
    async with collector() as (otlp, otlp_url), serve(docs) as up:
        entry["url"] = f"{up}/mcp"
        async with gateway(tmp_path, registry(entry), telemetry(otlp_url)) as (url, _):
            headers = {"traceparent": CALLER_TRACEPARENT} if carrier == "header" else {}
            meta: Any = {"traceparent": CALLER_TRACEPARENT} if carrier == "_meta" else None
            async with mcp_client(f"{url}/mcp", mode=client_mode, headers=headers) as agent:
                added = await agent.call_tool("docs__add", {"a": 2, "b": 3}, meta=meta)
                await agent.call_tool("docs__meta_traceparent", {}, meta=meta)
                with pytest.raises(MCPError):
                    await agent.call_tool("docs__echo", {"text": "no"}, meta=meta)  # tagged dangerous: denied
    assert added.structured_content == {"result": 5}
    [server] = otlp.named("tools/call docs__add")
    [client] = otlp.named("tools/call add")
    assert where(server) == (
        Span.SPAN_KIND_SERVER,
        CALLER_TRACE,
        CALLER_SPAN,
    )
    tool_call = {"mcp.method.name": "tools/call", "gen_ai.operation.name": "execute_tool"}
    assert has(server, {**tool_call, "gen_ai.tool.name": "docs__add"})
    if client_mode == "legacy":  # handshake-era sessions have an id; 2026-07-28 has no sessions
        assert len(server.attributes["mcp.session.id"]) > 8
    else:
        assert "mcp.session.id" not in server.attributes
    assert where(client) == (
        Span.SPAN_KIND_CLIENT,
        CALLER_TRACE,
        server.span_id,
    )
    assert has(
        client,
        {**tool_call, "gen_ai.tool.name": "add", "agentgw.mcp.server": "docs", "server.address": "127.0.0.1"},
    )
    # the upstream got the client span's id, in the HTTP header and in params._meta alike
    headers = [h["traceparent"] for h in docs.headers if "traceparent" in h]
    assert f"00-{CALLER_TRACE}-{client.span_id}-01" in headers
    [meta_client] = otlp.named("tools/call meta_traceparent")
    assert seen_meta == [f"00-{CALLER_TRACE}-{meta_client.span_id}-01"]
    [denied] = otlp.named("tools/call docs__echo")
    assert (
        denied.status == Status.STATUS_CODE_ERROR and denied.attributes["error.type"] == "permission_denied"
    )
    assert otlp.named("tools/call echo") == []  # nothing reached the upstream


async def test_a_sample_ratio_of_zero_exports_nothing(tmp_path: Path) -> None:
    fake = FakeOpenAI()
    async with collector() as (otlp, otlp_url), serve(fake.app()) as up:
        async with gateway(tmp_path, llm_registry(up), telemetry(otlp_url, sample_ratio=0.0)) as (url, _):
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as client:
                await client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    assert otlp.spans == [] and len(fake.requests) == 1
    assert fake.requests[0]["headers"]["traceparent"].startswith(
        "00-"
    )  # propagation does not depend on export


def test_with_telemetry_off_the_sdk_is_never_imported(tmp_path: Path) -> None:
    from tests.support import MOCK_REGISTRY

    config = write_config(tmp_path, MOCK_REGISTRY)
    code = textwrap.dedent(
        f"""
        import sys
        from agentgw import create_app, load_settings
        app = create_app(load_settings({str(config)!r}))
        assert app.telemetry is None
        loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter")))
        print(loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
