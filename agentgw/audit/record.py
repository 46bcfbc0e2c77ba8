"""The audit record of one Exchange: ids, who, what, decisions, attempts, usage, timing, outcome.

Built from the Exchange only; never includes a credential or a payload (summaries come with the durable store).
"""

from __future__ import annotations

import time
from typing import Any

from agentgw.exchange import Exchange, new_id


def build_record(ex: Exchange) -> dict[str, Any]:
    p = ex.principal
    t = ex.task
    err = ex.error
    return {
        "record_id": new_id(16),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ex.started))
        + f".{int(ex.started % 1 * 1000):03d}Z",
        "trace_id": t.trace_id if t else None,
        "span_id": ex.span_id,
        "parent_span_id": t.parent_span_id if t else None,
        "task_id": t.task_id if t else None,
        "parent_task_id": t.parent_task_id if t else None,
        "principal": p.subject if p else None,
        "roles": list(p.roles) if p else [],
        "key_id": p.key_id if p else None,
        "plane": ex.plane,
        "operation": ex.operation,
        "target": ex.target,
        "status": ex.status,
        "http_status": err.status if err else (ex.result.status if ex.result else None),
        "error_code": err.code if err else None,
        "stream_cut": ex.stream_cut,
        "decisions": [
            {
                k: v
                for k, v in (
                    ("stage", d.stage),
                    ("outcome", d.outcome),
                    ("rule", d.rule),
                    ("detail", d.detail),
                )
                if v
            }
            for d in ex.decisions
        ],
        "attempts": [
            {
                "attempt": a.number,
                "target": a.target,
                "outcome": a.outcome,
                "status": a.status,
                "latency_ms": round(a.latency_ms, 3),
                **({"error": a.error} if a.error else {}),
            }
            for a in ex.attempts
        ],
        "usage": ex.usage.as_dict() if ex.usage else None,
        "latency_ms": round(ex.elapsed_ms, 3),
    }
