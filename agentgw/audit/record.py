"""The audit record of one Exchange: ids, who, what, decisions, attempts, usage, cost, timing, outcome, redacted
summaries (and full payloads where configured). Built in the writer from the finished Exchange, never on the
request path; never includes a credential: headers are not recorded, and every text passes the Redactor."""

from __future__ import annotations

import time
from fnmatch import fnmatchcase
from typing import Any

import orjson

from agentgw.audit.chain import Prepared, prepare
from agentgw.audit.config import Audit, PayloadCapture
from agentgw.audit.redact import Limits, Redactor
from agentgw.audit.summary import Summarizer, parse_json
from agentgw.exchange import Decision, Exchange, new_id
from agentgw.registry import Pricing
from agentgw.secrets import Scrubber

VERSION = 1


_second: list[Any] = [None, ""]  # the last whole second formatted (records come in bursts within a second)


def iso(ts: float) -> str:
    sec = int(ts)
    if _second[0] != sec:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{int(ts % 1 * 1000):03d}Z"


class RecordBuilder:
    def __init__(
        self, cfg: Audit, pricing: dict[str, Pricing], redactor: Redactor, scrubber: Scrubber | None = None
    ) -> None:
        self.pricing = pricing
        self.redactor = redactor
        self.scrubber = scrubber or Scrubber(())
        self.summaries = Summarizer(redactor, cfg.summaries.max_chars, cfg.summaries.max_items)
        self.captures = cfg.payloads
        self._capture: dict[str, PayloadCapture | None] = {}

    def use_secrets(self, secrets: list[str]) -> None:
        """The configured secrets changed (a registry reload): records built from now on cut the new ones out."""
        self.redactor.use_secrets(secrets)
        self.scrubber.update(secrets)

    def capture_for(self, target: str) -> PayloadCapture | None:
        """The payload-capture rule of a target (the first matching glob), cached per target."""
        if target not in self._capture:
            if len(self._capture) > 10_000:
                self._capture.clear()
            self._capture[target] = next((c for c in self.captures if fnmatchcase(target, c.match)), None)
        return self._capture[target]

    def prepared(self, ex: Exchange, ended: float) -> Prepared:
        """The record's bytes as stored: built, then any configured secret value still in any field (an upstream's
        error text, a client-chosen id, …) cut out, so none reaches the store whatever field carried it."""
        p = prepare(self.build(ex, ended))
        if self.scrubber.finds(p.data):
            p = prepare(orjson.loads(self.scrubber.data(p.data)))
        return p

    def build(self, ex: Exchange, ended: float) -> dict[str, Any]:
        """`ended`: perf_counter when the Exchange finished."""
        p, t, err = ex.principal, ex.task, ex.error
        body = self._response(ex)
        rec = identity(ex)
        rec.update(
            {
                "duration_ms": round((ended - ex.started_mono) * 1000.0, 3),
                "trace_id": t.trace_id if t else None,
                "span_id": ex.span_id,
                "parent_span_id": t.parent_span_id if t else None,
                "child_task_id": ex.attrs.get("child_task"),
                "roles": list(p.roles) if p else [],
                "auth": p.auth if p else None,
                "key_id": p.key_id if p else None,
                "client": ex.client,
                "endpoint": ex.attrs.get("endpoint"),
                "http_status": err.status if err else (ex.result.status if ex.result else None),
                "error": self.redactor.text(err.message) if err else None,
                "stream_cut": ex.stream_cut,
                "decisions": [_decision(d) for d in ex.decisions],
                "attempts": [
                    {
                        "attempt": a.number,
                        "span_id": a.span_id,  # the parent span this upstream was told about (traceparent)
                        "target": a.target,
                        "outcome": a.outcome,
                        "status": a.status,
                        "latency_ms": round(a.latency_ms, 3),
                        **({"error": a.error} if a.error else {}),
                    }
                    for a in ex.attempts
                ],
                "usage": ex.usage.as_dict() if ex.usage else None,
                "cost": self._cost(ex),
                "charged": ex.attrs.get("budget_charged") or None,
                "request": self.summaries.request(ex.plane, ex.operation, ex.payload),
                "response": self.summaries.response(ex.plane, ex.operation, body),
            }
        )
        if ex.result is not None and ex.result.stream is not None and rec["response"] is None:
            rec["response"] = {"stream": True}
        for extra in (
            "incomplete",
            "refused",
            "a2a",  # an A2A call: its task, context and final state; a stream's event count
            "passthrough",  # a Responses or Messages call passed to a provider that serves that API itself
            "cache",  # an LLM response cache hit (exact or semantic: entry, similarity, saved), a semantic miss
        ):  # a record built without its payloads; an aggregate of refusals
            if extra in ex.attrs:
                rec[extra] = ex.attrs[extra]
        rule = self.capture_for(ex.target) if self.captures else None
        if rule is not None:
            rec["payload"] = self._payload(ex, rule, body)
        return rec

    def _response(self, ex: Exchange) -> Any:
        res = ex.result
        if res is None or ex.error is not None:
            return None
        if res.payload is not None:
            return res.payload
        if res.body is not None and res.media_type == "application/json":
            return parse_json(res.body)
        frames = ex.attrs.get("audit_frames")
        return stream_body(frames) if frames else None

    def _cost(self, ex: Exchange) -> dict[str, Any] | None:
        """USD from the registry's pricing (cached input tokens are priced as input, as budgets do)."""
        u = ex.usage
        price = self.pricing.get(ex.target)
        if u is None or price is None:
            return None
        usd = (u.input_tokens * price.input_per_mtok + u.output_tokens * price.output_per_mtok) / 1_000_000
        return {"usd": round(usd, 9), "estimated": u.estimated, "source": "registry pricing"}

    def _payload(self, ex: Exchange, rule: PayloadCapture, body: Any) -> dict[str, Any]:
        limits = Limits(rule.max_bytes, 1_000_000, depth=64)
        out: dict[str, Any] = {}
        if rule.request and ex.payload is not None:
            out["request"] = _bounded(self.redactor.value(ex.payload, "", limits), rule.max_bytes)
        if rule.response and body is not None:
            out["response"] = _bounded(self.redactor.value(body, "", limits), rule.max_bytes)
        return out


def _decision(d: Decision) -> dict[str, Any]:
    """Stage, outcome, rule, detail: the gateway's own words (policy lines, budget rules, error codes), not the
    caller's, so no redaction pass is needed."""
    out = {"stage": d.stage, "outcome": d.outcome}
    if d.rule:
        out["rule"] = d.rule
    if d.detail:
        out["detail"] = d.detail
    return out


def _bounded(value: Any, max_bytes: int) -> Any:
    """The value itself, or its JSON text cut to `max_bytes` (marked) when larger."""
    raw = orjson.dumps(value)
    if len(raw) <= max_bytes:
        return value
    return {"truncated": True, "bytes": len(raw), "json": raw[:max_bytes].decode("utf-8", "ignore")}


def stream_body(frames: list[bytes]) -> dict[str, Any]:
    """A chat-completions stream reassembled: the text, tool-call names, finish reason."""
    text: list[str] = []
    tools: list[str] = []
    finish = None
    for line in b"".join(frames).split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = parse_json(line[6:])
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for c in choices if isinstance(choices, list) else []:
            delta = c.get("delta") if isinstance(c, dict) else None
            if isinstance(delta, dict):
                if isinstance(delta.get("content"), str):
                    text.append(delta["content"])
                for call in delta.get("tool_calls") or []:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict) and fn.get("name"):
                        tools.append(str(fn["name"]))
            if isinstance(c, dict) and c.get("finish_reason"):
                finish = c["finish_reason"]
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if tools:
        msg["tool_calls"] = [{"function": {"name": n}} for n in tools]
    return {"stream": True, "choices": [{"message": msg, "finish_reason": finish}]}


def record_id(ts: float) -> str:
    """Time-ordered (microseconds, then 64 random bits, 32 hex digits): the stores' record-id index grows at
    its right edge instead of splitting pages at random places (measured: most of SQLite's insert cost)."""
    return f"{int(ts * 1_000_000):016x}{new_id(8)}"


def header(kind: str, ts: float) -> dict[str, Any]:
    return {"v": VERSION, "kind": kind, "record_id": record_id(ts), "ts": round(ts, 6), "time": iso(ts)}


def identity(ex: Exchange) -> dict[str, Any]:
    """What is always known about an Exchange (also all a record has when the full one cannot be built). The
    record id is the one the gateway chose when it handed the call to a writer process (`record_id` attr), so
    it can later look up which records a dead worker had stored."""
    p, t = ex.principal, ex.task
    head = header("call", ex.started)
    rid = ex.attrs.get("record_id")
    if rid:
        head["record_id"] = rid
    return {
        **head,
        "task_id": t.task_id if t else None,
        "parent_task_id": t.parent_task_id if t else None,
        "principal": p.subject if p else None,
        "plane": ex.plane,
        "operation": ex.operation,
        "target": ex.target,
        "status": ex.status,
        "error_code": ex.error.code if ex.error else None,
    }


def checkpoint_record(through_seq: int, through_hash: str, count: int, cutoff: float) -> dict[str, Any]:
    """Left in the chain by pruning: which records were removed, and the hash the remaining chain starts from."""
    return {
        **header("checkpoint", time.time()),
        "pruned_through_seq": through_seq,
        "pruned_through_hash": through_hash,
        "pruned_count": count,
        "cutoff": iso(cutoff),
    }


def dropped_record(count: int, first: float, last: float) -> dict[str, Any]:
    """Left in the chain when the queue was full under `on_full: drop`: the loss is on the record too."""
    return {
        **header("dropped", time.time()),
        "dropped": count,
        "first_dropped": iso(first),
        "last_dropped": iso(last),
    }
