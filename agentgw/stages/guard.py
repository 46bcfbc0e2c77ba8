"""The guard stage: the guardrails of every plane, both ways. Runs after authz (nothing is inspected for a caller
who may not make the call) and before hold and budget (a blocked call waits for no approver and reserves nothing;
a masked prompt is what gets estimated).

Decides, per rule (plane, direction, target, role): a request's texts are blocked (400 `sensitive_data`,
`prompt_injection`, `content_blocked`, in the plane's envelope), masked or pseudonymized before forwarding, and an
answer's likewise before the caller sees it (a blocked answer as the protocol's own filtered answer). Adds the
configured system prompts to chat requests. Streams are the plane's relay's to pass through `stream_guard(ex)`.
Every guard that acted is a `guard` decision in the audit record (kinds and counts, never values) and a metric.
Fails closed: a guard that raises is a stage failure (503), never a skipped check.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from agentgw.exchange import Exchange
from agentgw.guardrails.config import SystemPrompt
from agentgw.guardrails.content import Content
from agentgw.guardrails.engine import GuardBlocked, Guardrails, Plan, Tally, Vault, summary
from agentgw.guardrails.stream import StreamGuard
from agentgw.metrics import Counter, Metrics
from agentgw.pipeline import Pipeline, Stage

_OUTCOME = {"block": "deny", "mask": "info", "pseudonymize": "info", "warn": "info"}
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


@dataclass(slots=True)
class GuardState:
    """One call's guard state, in `ex.attrs["guards"]`: the answer's plan, the placeholders, the tally."""

    engine: Guardrails
    response: Plan | None
    vault: Vault = field(default_factory=Vault)
    request: bool = False  # the request's texts were scanned: a plane must not send what the scan did not see
    tally: Tally = field(default_factory=Tally)


class GuardStage(Stage):
    name = "guard"

    def __init__(self, engine: Guardrails, metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.contents: dict[str, Content] = {}
        self.decisions: Counter | None = None
        self.findings: Counter | None = None
        if metrics is not None:
            self.decisions = metrics.counter(
                "agentgw_guard_decisions_total",
                "Calls a guard acted on, by guard, action, direction and plane.",
                ("guard", "action", "direction", "plane"),
            )
            self.findings = metrics.counter(
                "agentgw_guard_findings_total",
                "What guards found, by guard and kind (never the value).",
                ("guard", "kind"),
            )

    def serve(self, plane: str, content: Content) -> None:
        """A plane tells the stage where its texts are."""
        self.contents[plane] = content

    async def on_request(self, ex: Exchange) -> None:
        content = self.contents.get(ex.plane)
        if content is None or ex.attrs.get("listing"):
            return
        engine = self.engine
        roles = ex.principal.roles if ex.principal is not None else ()
        if engine.prompts and ex.plane == "llm" and ex.operation == "chat":
            model = ex.target.partition(":")[2]
            prompts = engine.prompts_for(model, roles)
            if prompts:
                content.add_prompts(ex, [(p, render(p, ex, model)) for p in prompts])
        plan = engine.plan(ex.plane, "request", ex.target, roles)
        answer = engine.plan(ex.plane, "response", ex.target, roles)
        if plan is None and answer is None:
            return
        state = GuardState(engine, answer, request=plan is not None)
        ex.attrs["guards"] = state
        if plan is None:
            return
        texts = content.request_texts(ex)
        changed = False
        for t in texts:
            new = engine.scan(plan, t.value, "request", state.vault, state.tally)
            if new != t.value:
                t.set(new)
                changed = True
        if plan.classifiers:
            await engine.classify(plan, [t.value for t in texts], "request", state.tally)
        if changed:
            content.request_changed(ex)

    async def on_response(self, ex: Exchange) -> None:
        state: GuardState | None = ex.attrs.get("guards")
        result = ex.result
        if state is None or result is None or result.stream is not None:
            return  # a stream's relay guards it (stream_guard), and this hook runs after it ended
        if state.response is None and not state.vault.keeps:
            return
        content = self.contents[ex.plane]
        texts = content.response_texts(ex, result)
        changed = False
        try:
            for t in texts:
                new = t.value
                if state.response is not None:
                    new = self.engine.scan(state.response, new, "response", state.vault, state.tally)
                new = state.vault.restore(new)
                if new != t.value:
                    t.set(new)
                    changed = True
            if state.response is not None and state.response.classifiers:
                await self.engine.classify(state.response, [t.value for t in texts], "response", state.tally)
        except GuardBlocked as err:
            if not content.blocked(ex, result, err):
                raise
            ex.stream_cut = ex.stream_cut or "content_filter"
            return
        if changed:
            content.response_changed(ex, result)

    async def on_finish(self, ex: Exchange) -> None:
        state: GuardState | None = ex.attrs.get("guards")
        if state is None:
            return
        tally = state.tally
        for (direction, guard, action), counts in tally.hits.items():
            ex.decide(
                "guard",
                _OUTCOME.get(action, "info"),
                f"guard:{guard}",
                f"{direction} {action}: {summary(counts)}",
            )
            if self.decisions is not None and self.findings is not None:
                self.decisions.inc((guard, action, direction, ex.plane))
                for kind, n in counts.items():
                    self.findings.inc((guard, kind), n)
        for direction, guard, error in tally.errors:
            ex.decide("guard", "error", f"guard:{guard}", f"{direction}: classifier {error}")


def stream_guard(ex: Exchange) -> StreamGuard | None:
    """The guard a plane's relay passes a streamed answer's text through, or None when nothing applies to it
    (no answer rule, nothing pseudonymized): then the stream passes untouched, at no cost."""
    state: GuardState | None = ex.attrs.get("guards")
    if state is None or (state.response is None and not state.vault.keeps):
        return None
    return StreamGuard(state.engine, state.response, state.vault, state.tally)


def guard_stage(pipeline: Pipeline) -> GuardStage | None:
    return next((s for s in pipeline.stages if isinstance(s, GuardStage)), None)


def render(prompt: SystemPrompt, ex: Exchange, model: str) -> str:
    """The prompt's template with the call's values: `{principal.sub}`, `{principal.roles}`, `{claims.X}`,
    `{date}`, `{model}`, `{task}`; an unknown name stays as written, a missing claim is empty."""
    p = ex.principal
    claims: Any = p.claims if p is not None else {}

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "principal.sub":
            return p.subject if p is not None else ""
        if name == "principal.roles":
            return ", ".join(p.roles) if p is not None else ""
        if name.startswith("claims."):
            v = claims.get(name[7:]) if isinstance(claims, dict) else None
            return "" if v is None else str(v)
        if name == "date":
            return dt.datetime.now(dt.UTC).date().isoformat()
        if name == "model":
            return model
        if name == "task":
            return ex.task.task_id if ex.task is not None else ""
        return m.group(0)

    return _VAR.sub(value, prompt.text)
