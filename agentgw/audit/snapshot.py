"""A finished Exchange as compact bytes (one orjson line) and back: what the audit writer process needs to build
exactly the record the gateway would have built itself, and nothing else (no headers: they never reach a record).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import orjson

from agentgw.errors import GatewayError
from agentgw.exchange import Attempt, Decision, Exchange, Principal, Result, TaskContext, Usage

# the attributes a record reads (see record.py)
_ATTRS = ("child_task", "endpoint", "budget_charged", "incomplete", "refused", "record_id")


def snapshot(ex: Exchange, ended: float) -> bytes:
    """`ended`: perf_counter when the Exchange finished (the record's duration is relative to it)."""
    p, t, err, res = ex.principal, ex.task, ex.error, ex.result
    frames = ex.attrs.get("audit_frames")
    return orjson.dumps(
        [
            ex.plane,
            ex.operation,
            ex.target,
            ex.client,
            ex.started,
            ended - ex.started_mono,
            ex.span_id,
            ex.status,
            ex.stream_cut,
            [p.subject, p.roles, p.auth, p.key_id] if p else None,
            [t.task_id, t.parent_task_id, t.trace_id, t.parent_span_id, t.chosen] if t else None,
            [err.message, err.status, err.code] if err else None,
            [
                res.status,
                res.body.decode("utf-8", "replace") if res.body is not None else None,
                res.payload,
                res.media_type,
                res.stream is not None,
            ]
            if res
            else None,
            [[d.stage, d.outcome, d.rule, d.detail] for d in ex.decisions],
            [
                [a.number, a.target, a.outcome, a.status, a.latency_ms, a.error, a.span_id]
                for a in ex.attempts
            ],
            [
                ex.usage.input_tokens,
                ex.usage.output_tokens,
                ex.usage.cached_tokens,
                ex.usage.reasoning_tokens,
                ex.usage.estimated,
            ]
            if ex.usage
            else None,
            ex.payload,
            {k: ex.attrs[k] for k in _ATTRS if ex.attrs.get(k) is not None},
            [f.decode("utf-8", "replace") for f in frames] if frames else None,
        ],
        default=str,  # anything unexpected in a payload becomes its text rather than failing the record
    )


def safe_snapshot(ex: Exchange, ended: float) -> bytes:
    """The snapshot, or, when the Exchange cannot be serialised (a payload nested deeper than orjson writes), one
    without its payloads that says so: a call is never left off the record because its record cannot be built."""
    try:
        return snapshot(ex, ended)
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        bare = copy.copy(ex)
        bare.payload, bare.result = None, None
        bare.attrs = {k: ex.attrs[k] for k in _ATTRS if k in ex.attrs}
        bare.attrs["incomplete"] = f"the full record could not be built: {exc}"
        return snapshot(bare, ended)


async def _no_frames() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an (empty) async generator


def restore(line: bytes) -> tuple[Exchange, float]:
    """The Exchange of a snapshot (with `started_mono` 0) and its `ended`."""
    (
        plane,
        operation,
        target,
        client,
        started,
        elapsed,
        span_id,
        status,
        cut,
        p,
        t,
        err,
        res,
        decisions,
        attempts,
        usage,
        payload,
        attrs,
        frames,
    ) = orjson.loads(line)
    ex = Exchange(plane, operation, target, {}, client)
    ex.started, ex.started_mono, ex.span_id, ex.status, ex.stream_cut = started, 0.0, span_id, status, cut
    if p is not None:
        ex.principal = Principal(p[0], tuple(p[1]), p[2], p[3])
    if t is not None:
        ex.task = TaskContext(t[0], t[1], t[2], t[3], t[4])
    if err is not None:
        ex.error = GatewayError(err[0], status=err[1], code=err[2])
    if res is not None:
        body = res[1].encode() if res[1] is not None else None
        ex.result = Result(res[0], body=body, payload=res[2], media_type=res[3])
        if res[4]:
            ex.result.stream = _no_frames()
    ex.decisions = [Decision(*d) for d in decisions]
    ex.attempts = [Attempt(a[0], a[1], a[2], a[3], a[4], a[5], span_id=a[6]) for a in attempts]
    if usage is not None:
        ex.usage = Usage(*usage)
    ex.payload = payload
    ex.attrs.update(attrs)
    if frames:
        ex.attrs["audit_frames"] = [f.encode() for f in frames]
    return ex, float(elapsed)
