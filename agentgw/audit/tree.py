"""Trace queries over a store: one task as a tree (its steps in order; under a delegating step, the child task
the gateway minted for it; beside them, tasks whose callers named it as their parent), task lists, and plain-text
rendering for the CLI.

A step's children are found two ways: the child task the budget stage minted for it (`child_task_id`), and
records whose callers carried the W3C `traceparent` the gateway sent upstream for that step (same trace id and
parent span id: a downstream agent that propagates trace context). Client-chosen task ids belong to the
principal that used them: a tree never mixes two principals' tasks that share an id unless asked to
(`principal="*"`); a downstream agent's calls appear as their own child task, under its own principal. Ids the
gateway minted (`c-…`) are global.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from agentgw.audit.chain import Row
from agentgw.audit.store import STATUSES, AuditStore, TaskFilter
from agentgw.stages.budget import CHILD_PREFIX

ALL = "*"
MAX_DEPTH = 32
MAX_RECORDS = 20_000  # a tree larger than this is cut (and says so)


class Ambiguous(Exception):
    """A client-chosen task id used by several principals, and no principal named."""

    def __init__(self, task_id: str, principals: list[str]) -> None:
        super().__init__(f"task {task_id} is used by several principals: {', '.join(principals)}")
        self.principals = principals


class BadQuery(ValueError):
    pass


def record_of(row: Row) -> dict[str, Any]:
    rec: dict[str, Any] = orjson.loads(row.data)
    rec["seq"], rec["prev_hash"], rec["hash"] = row.seq, row.prev_hash, row.hash
    return rec


async def task_tree(store: AuditStore, task_id: str, principal: str | None = None) -> dict[str, Any] | None:
    """The tree of `task_id` (of `principal`; None: the only principal that used it; "*": all of them), or None
    when nothing is recorded for it. Raises Ambiguous."""
    if task_id.startswith(CHILD_PREFIX):
        scope: str | None = None
    elif principal == ALL:
        scope = None
    elif principal is not None:
        scope = principal
    else:
        who = await store.task_principals(task_id)
        if len(who) > 1:
            raise Ambiguous(task_id, who)
        scope = who[0] if who else None
    budget = [MAX_RECORDS]
    node = await _node(store, task_id, scope, None, set(), 0, budget)
    if node is None:
        return None
    if budget[0] <= 0:
        node["truncated"] = True
    return node


async def _node(
    store: AuditStore,
    task_id: str,
    principal: str | None,
    parent: dict[str, Any] | None,
    seen: set[tuple[str, str | None]],
    depth: int,
    budget: list[int],
) -> dict[str, Any] | None:
    if (task_id, principal) in seen or depth > MAX_DEPTH or budget[0] <= 0:
        return None
    seen.add((task_id, principal))
    rows = await store.task_records(task_id, principal)
    budget[0] -= len(rows)
    steps = sorted((record_of(r) for r in rows if r.columns[1] == "call"), key=lambda s: (s["ts"], s["seq"]))
    children: list[dict[str, Any]] = []
    for step in steps:
        step["child_tasks"] = []
        child = step.get("child_task_id")
        if child:
            sub = await _node(store, child, None, step, seen, depth + 1, budget)
            if sub is not None:
                step["child_tasks"].append(sub)
    by_span: dict[tuple[str, str], dict[str, Any]] = {}  # a step's own span and its upstream attempts' spans
    for s in steps:
        if s.get("trace_id"):
            for span in [s.get("span_id"), *(a.get("span_id") for a in s.get("attempts") or [])]:
                if span:
                    by_span[(s["trace_id"], span)] = s
    for trace_id in sorted({t for t, _ in by_span}):
        spans = [sp for t, sp in by_span if t == trace_id]
        for span, tid, who in await store.span_children(trace_id, spans):
            scope = None if tid.startswith(CHILD_PREFIX) else who
            if (tid, scope) == (task_id, principal):
                continue
            step = by_span[(trace_id, span)]
            sub = await _node(store, tid, scope, step, seen, depth + 1, budget)
            if sub is not None:
                step["child_tasks"].append(sub)
    for tid, who in await store.declared_children(task_id, principal):
        sub = await _node(store, tid, who, None, seen, depth + 1, budget)
        if sub is not None:
            sub["parent_task_id"] = task_id
            children.append(sub)
    if not steps and not children:
        return None
    principals = sorted({s["principal"] for s in steps if s.get("principal")})
    node: dict[str, Any] = {
        "task_id": task_id,
        "principal": principals[0] if len(principals) == 1 else (principals or None),
        "parent_task_id": parent.get("task_id") if parent else _declared_parent(steps),
        "parent_record_id": parent.get("record_id") if parent else None,
        "trace_ids": sorted({s["trace_id"] for s in steps if s.get("trace_id")}),
        "steps": steps,
        "child_tasks": children,
    }
    node["totals"] = totals(node)
    return node


def _declared_parent(steps: list[dict[str, Any]]) -> str | None:
    return next((s["parent_task_id"] for s in steps if s.get("parent_task_id")), None)


def totals(node: dict[str, Any]) -> dict[str, Any]:
    """Sums over the task and everything below it."""
    out: dict[str, Any] = {
        "steps": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "denied": 0,
        "errors": 0,
        "charged": {},  # what the steps charged the budget (the task and each of its ancestors paid it)
        "started": None,
        "ended": None,
    }

    def add(n: dict[str, Any]) -> None:
        for s in n["steps"]:
            out["steps"] += 1
            u = s.get("usage") or {}
            out["input_tokens"] += u.get("input_tokens", 0)
            out["output_tokens"] += u.get("output_tokens", 0)
            out["cost_usd"] += (s.get("cost") or {}).get("usd") or 0.0
            out["denied"] += s.get("status") == "denied"
            out["errors"] += s.get("status") == "error"
            for metric, amount in (s.get("charged") or {}).items():
                out["charged"][metric] = out["charged"].get(metric, 0) + amount
            start, end = s["ts"], s["ts"] + (s.get("duration_ms") or 0) / 1000
            out["started"] = start if out["started"] is None else min(out["started"], start)
            out["ended"] = end if out["ended"] is None else max(out["ended"], end)
            for c in s.get("child_tasks", []):
                add(c)
        for c in n["child_tasks"]:
            add(c)

    add(node)
    out["cost_usd"] = round(out["cost_usd"], 9)
    if out["started"] is not None:
        out["duration_ms"] = round((out["ended"] - out["started"]) * 1000, 3)
    return out


async def task_list(store: AuditStore, flt: TaskFilter) -> list[dict[str, Any]]:
    return await store.tasks(flt)


_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, name: str = "since") -> float:
    """`30m`, `2h`, `7d` (ago) or an ISO 8601 time (UTC unless it says otherwise) → epoch seconds."""
    m = _REL.match(value.strip())
    if m:
        return time.time() - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{name} must be like 30m, 2h, 7d or an ISO 8601 time, not {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def task_filter(
    principal: str | None,
    since: str | None,
    status: str | None,
    denied: bool,
    limit: int = 100,
    until: str | None = None,
    target: str | None = None,
    min_cost: str | None = None,
) -> TaskFilter:
    if status is not None and status not in STATUSES:
        raise BadQuery(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    if not 1 <= limit <= 10_000:
        raise BadQuery("limit must be between 1 and 10000")
    cost = None
    if min_cost:
        try:
            cost = float(min_cost)
        except ValueError:
            raise BadQuery(f"min_cost must be a number of USD, not {min_cost!r}") from None
    if target is not None and (not target or len(target) > 256):
        raise BadQuery("target must be a glob of 1 to 256 characters, e.g. llm:gpt-* or mcp:docs/*")
    return TaskFilter(
        principal or None,
        parse_since(since) if since else None,
        status,
        denied,
        limit,
        parse_since(until, "until") if until else None,
        target,
        cost,
    )


# -- plain-text rendering --------------------------------------------------------------------------------------


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def _tokens(t: dict[str, Any]) -> str:
    return f"tokens {t['input_tokens']} in / {t['output_tokens']} out"


def render_tree(node: dict[str, Any]) -> str:
    lines: list[str] = []
    _render_node(node, "", "", lines)
    if node.get("truncated"):
        lines.append(f"… cut after {MAX_RECORDS} records")
    return "\n".join(lines)


def _render_node(node: dict[str, Any], first: str, indent: str, lines: list[str]) -> None:
    """`first` prefixes the task's own line, `indent` the lines below it."""
    t = node["totals"]
    who = node["principal"] if isinstance(node["principal"], str) else ", ".join(node["principal"] or [])
    head = f"task {node['task_id']}  principal {who or '-'}"
    if node.get("parent_task_id"):
        head += f"  parent {node['parent_task_id']}"
    head += f"  {t['steps']} steps  {t.get('duration_ms', 0):.1f} ms  {_tokens(t)}"
    if t["cost_usd"]:
        head += f"  ${t['cost_usd']:.6f}"
    if t.get("charged"):
        head += f"  charged {_charged(t['charged'])}"
    if t["denied"]:
        head += f"  {t['denied']} denied"
    if t["errors"]:
        head += f"  {t['errors']} errors"
    lines.append(first + head)
    items: list[tuple[str, Any]] = [("step", s) for s in node["steps"]] + [
        ("task", c) for c in node["child_tasks"]
    ]
    for i, (kind, item) in enumerate(items):
        last = i == len(items) - 1
        branch, cont = ("└─ ", "   ") if last else ("├─ ", "│  ")
        if kind == "task":
            _render_node(item, indent + branch, indent + cont, lines)
            continue
        lines.append(indent + branch + render_step(item))
        subs = item.get("child_tasks", [])
        for j, child in enumerate(subs):
            b, c = ("└─ ", "   ") if j == len(subs) - 1 else ("├─ ", "│  ")
            _render_node(child, indent + cont + b, indent + cont + c, lines)


def _charged(amount: dict[str, int]) -> str:
    """A budget charge as text: `tokens 42, agent_calls 1, $0.000120` (USD kept in micros by the ledger)."""
    parts = [f"{k} {v}" for k, v in sorted(amount.items()) if k != "usd_micros"]
    if amount.get("usd_micros"):
        parts.append(f"${amount['usd_micros'] / 1e6:.6f}")
    return ", ".join(parts)


def render_step(s: dict[str, Any]) -> str:
    out = f"{_clock(s['ts'])}  {s.get('plane')} {s.get('operation')} {s.get('target')}  {s.get('status')}"
    if s.get("error_code"):
        out += f" {s['error_code']}"
    out += f"  {s.get('duration_ms', 0):.1f} ms"
    u = s.get("usage")
    if u:
        out += f"  tokens {u['input_tokens']}/{u['output_tokens']}" + (
            " (est.)" if u.get("estimated") else ""
        )
    cost = s.get("cost")
    if cost and cost.get("usd"):
        out += f"  ${cost['usd']:.6f}"
    if s.get("charged"):
        out += f"  charged {_charged(s['charged'])}"
    if s.get("stream_cut"):
        out += f"  cut: {s['stream_cut']}"
    if s.get("error"):
        out += f"  error: {s['error']}"
    decided = [
        f"{d['stage']} {d['outcome']}" + (f": {d['rule']}" if d.get("rule") else "")
        for d in s.get("decisions", [])
    ]
    stages = {d.get("stage") for d in s.get("decisions", [])}
    if s.get("status") != "ok" and "authz" not in stages and "authn" in stages:
        decided.append("authz not reached")  # refused before the target was known (bad input, unknown tool)
    if decided:
        out += "  [" + "; ".join(decided) + "]"
    return out


def render_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no tasks"
    lines = [
        f"{'started (UTC)':23}  {'task':28} {'principal':16} {'steps':>5} {'denied':>6} {'errors':>6} {'tokens':>8}  cost"
    ]
    for r in rows:
        started = datetime.fromtimestamp(r["started"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        cost = f"${r['cost_usd']:.6f}" if r["cost_usd"] else "-"
        lines.append(
            f"{started:23}  {r['task_id']:28} {r['principal'] or '-':16} {r['records']:>5} {r['denied']:>6} "
            f"{r['errors']:>6} {r['tokens']:>8}  {cost}"
        )
    return "\n".join(lines)
