"""The Exchange: one mediated operation (an LLM request, one MCP tools/call, one A2A SendMessage) and what
happened to it. Stages read and write it; the audit hook records it. Plain slotted classes: it is built on the
hot path, so no validation here."""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentgw.errors import GatewayError

_rand = random.Random(os.urandom(32))


def new_id(nbytes: int = 8) -> str:
    """A random hex id (span ids are 8 bytes, trace ids 16, as in W3C trace context). A PRNG seeded from the
    OS, as OpenTelemetry does: these ids name records, they are not secrets (a syscall each was 2.6% of CPU)."""
    return f"{_rand.getrandbits(nbytes * 8):0{nbytes * 2}x}"


@dataclass(slots=True, frozen=True)
class Principal:
    """Who is calling: a subject with roles, as established by authentication."""

    subject: str
    roles: tuple[str, ...] = ()
    auth: str = "api_key"  # how it was established: api_key | jwt | anonymous
    key_id: str | None = None  # a short, non-secret fingerprint of the credential
    # the verified JWT's claims (policy conditions read them as principal.claims); empty for API keys
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(slots=True)
class TaskContext:
    """The workflow this call belongs to (client-chosen via `x-agentgw-task`, else one per request)."""

    task_id: str
    parent_task_id: str | None = None
    trace_id: str = field(default_factory=lambda: new_id(16))
    parent_span_id: str | None = None
    chosen: bool = True  # False: the gateway made the id up for this one request (nothing else will name it)


@dataclass(slots=True)
class Decision:
    """One stage's verdict on an Exchange, kept for the audit record."""

    stage: str
    outcome: str  # allow | deny | error | info
    rule: str | None = None
    detail: str | None = None


@dataclass(slots=True)
class Attempt:
    """One try against one upstream target (retries and failover add more). Created when the try starts: its
    span id is the parent span the upstream is told about (W3C `traceparent`)."""

    number: int
    target: str
    outcome: str  # ok | error | timeout | rejected | circuit_open | cancelled
    status: int | None = None
    latency_ms: float = 0.0
    error: str | None = None
    span_id: str = field(default_factory=new_id)
    started_mono: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
            "estimated": self.estimated,
        }


@dataclass(slots=True)
class Result:
    """What the forward step produced: a complete body, or a stream of byte frames, plus status/headers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    media_type: str = "application/json"
    payload: Any = None  # the response as an object, for planes that relay parsed JSON (MCP) instead of bytes


@dataclass(slots=True)
class Exchange:
    plane: str  # llm | mcp | a2a
    operation: str  # chat | embeddings | models | tools/call | …
    target: str  # llm:<model> | mcp:<server>/<tool> | a2a:<agent>
    headers: dict[str, str]  # lower-cased request headers (never logged)
    client: str | None = None  # peer address
    body: bytes = b""  # the original request bytes
    payload: dict[str, Any] | None = None  # the parsed routing view of the body, when the plane parsed it
    principal: Principal | None = None
    task: TaskContext | None = None
    span_id: str = field(default_factory=new_id)
    started: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.perf_counter)
    decisions: list[Decision] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage | None = None
    result: Result | None = None
    error: GatewayError | None = None
    status: str = "pending"  # ok | error | denied | cancelled
    stream_cut: str | None = None  # why a stream ended early (client_disconnect, upstream_error, …)
    attrs: dict[str, Any] = field(default_factory=dict)  # plane/stage scratch space, e.g. resolved route
    # The plane's answer for a target that does not exist (unknown model, tool, prompt, resource, agent). Authz
    # answers a denial with it too (unless authz.reveal_denied), so what a caller may not use looks absent.
    unseen: GatewayError | None = None

    def decide(self, stage: str, outcome: str, rule: str | None = None, detail: str | None = None) -> None:
        self.decisions.append(Decision(stage, outcome, rule, detail))

    @property
    def outbound_task(self) -> str | None:
        """The task id to send to an upstream agent or MCP server: the child task minted for this delegation
        (so a downstream agent calling back charges it and every ancestor), else the call's own task."""
        child = self.attrs.get("child_task")
        if child:
            return str(child)
        return self.task.task_id if self.task else None

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_mono) * 1000.0


_TRACEPARENT_LEN = 55


def task_from_headers(headers: dict[str, str]) -> TaskContext:
    """The task this request belongs to: `x-agentgw-task` if the client chose one, else a fresh id; trace
    context from a valid W3C `traceparent`, else a new trace."""
    task_id = headers.get("x-agentgw-task", "").strip()
    chosen = True
    if not task_id or len(task_id) > 200 or not task_id.isprintable():
        # Time-ordered (ms, then 48 random bits): audit stores index task ids, and an index fed random keys
        # rewrites a random page per record (measured: about half of SQLite's cost per record).
        task_id, chosen = f"t-{int(time.time() * 1000):012x}{new_id(6)}", False
    parent = headers.get("x-agentgw-parent-task", "").strip() or None
    if parent is not None and (len(parent) > 200 or not parent.isprintable()):
        parent = None
    ctx = TaskContext(task_id=task_id, parent_task_id=parent, chosen=chosen)
    tp = headers.get("traceparent", "")
    if len(tp) == _TRACEPARENT_LEN and tp[2] == "-" and tp[35] == "-" and tp[52] == "-":
        trace_id, span_id = tp[3:35], tp[36:52]
        try:
            int(trace_id, 16), int(span_id, 16)
        except ValueError:
            return ctx
        if trace_id != "0" * 32 and span_id != "0" * 16:
            ctx.trace_id, ctx.parent_span_id = trace_id, span_id
    return ctx
