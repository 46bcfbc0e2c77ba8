"""Authorization: may this principal do this action on this target, with these arguments? Decided by the Casbin
policy (agentgw.policy) for every Exchange, its conditional lines over the call's arguments; default deny.

A denial answers exactly as the target not existing (the plane's `exchange.unseen`: unknown model, tool, prompt,
resource or agent), so a caller cannot learn what exists beyond what it may use; with `authz.reveal_denied` it is
403 `permission_denied` instead. A denial that depends on the arguments (the target is in the caller's listings,
so it is not hidden anyway) is always 403, its message naming the policy line. Either way the Exchange keeps the
403 `permission_denied` (status `denied`) and the decision, with the policy line that made it, for the audit
record, metrics and traces. `allows()` answers the same question for listings (a target whose lines depend on
arguments is listed), so a caller sees exactly what it may call.

A line with effect `approve` or `confirm` allows subject to a hold: the stage records the decision `hold` and
sets `exchange.attrs["hold"] = {"effect", "rule", "line"}` for the hold stage that runs next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from agentgw.errors import Concealed, Forbidden, NotFound
from agentgw.exchange import Exchange, Principal, TaskContext
from agentgw.pipeline import Stage
from agentgw.policy import PolicyDecision, PolicyStore

CONCEALED = "authz.reveal_denied: false"
HOLDS = ("approve", "confirm")
_NO_ARGS: Mapping[str, Any] = {}


def arguments(exchange: Exchange) -> Any:
    """A condition's `args`: an MCP request's `params.arguments` (tools/call, prompts/get; other MCP requests: their
    params without `_meta`), an LLM request's body fields, an A2A message's `metadata`. As the caller sent them:
    a wrong type fails the condition, never passes it."""
    payload = exchange.payload
    if not isinstance(payload, dict):
        return _NO_ARGS
    if exchange.plane == "mcp":
        if "arguments" in payload:
            args = payload["arguments"]
            return _NO_ARGS if args is None else args
        return {k: v for k, v in payload.items() if k != "_meta"}
    if exchange.plane == "a2a":
        message = payload.get("message")
        meta = message.get("metadata") if isinstance(message, dict) else None
        return _NO_ARGS if meta is None else meta
    return payload


def facts(
    principal: Principal,
    target: str,
    args: Any,
    task: TaskContext | None,
    limits: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The variables of a condition. `task` has `id`, `parent` and, with budgets configured, `limits` (the task
    limits of the principal's budget rule, lowered by the request's headers: `tokens`, `tool_calls`,
    `agent_calls`, `usd_micros`, each present only when limited). What the task has `spent` is in the ledger,
    read by the budget stage after authz: not known here."""
    task_facts: dict[str, Any] = {}
    if task is not None:
        task_facts = {"id": task.task_id, "parent": task.parent_task_id}
    if limits is not None:
        task_facts["limits"] = dict(limits)
    who = {"sub": principal.subject, "roles": list(principal.roles), "claims": dict(principal.claims)}
    return {"args": args, "principal": who, "task": task_facts, "target": target}


class _Facts(Mapping[str, Any]):
    """A condition's variables, built on first use: most decisions involve no condition (and are cached), so the
    hot path never builds them."""

    __slots__ = ("_build", "_built")

    def __init__(self, build: Callable[[], dict[str, Any]]) -> None:
        self._build = build
        self._built: dict[str, Any] | None = None

    def _facts(self) -> dict[str, Any]:
        if self._built is None:
            self._built = self._build()
        return self._built

    def __getitem__(self, key: str) -> Any:
        return self._facts()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._facts())

    def __len__(self) -> int:
        return len(self._facts())


def _where(decision: PolicyDecision) -> str:
    """The decision as the audit record names it: the deciding line, else default deny (with the conditional
    lines that did not apply)."""
    if decision.rule is not None:
        return f"policy.csv:{decision.line}: {decision.rule}"
    return "default deny"


def _why(decision: PolicyDecision) -> str:
    """The refusal's reason for the caller: the line that refused, or the conditional lines that did not allow
    (nothing more for a plain default deny)."""
    if decision.rule is not None:
        return f": refused by policy.csv line {decision.line}"
    if decision.unmet:
        lines = ", ".join(str(n) for n in decision.unmet)
        return f": the condition of policy.csv line {lines} does not allow these arguments"
    return ""


class AuthzStage(Stage):
    name = "authz"

    def __init__(
        self,
        store: PolicyStore,
        reveal_denied: bool = False,
        task_limits: Callable[[Principal, dict[str, str]], Mapping[str, int] | None] | None = None,
    ) -> None:
        self.store = store
        self.reveal_denied = reveal_denied
        self.task_limits = task_limits  # the budget stage's view of a call's task limits (`task.limits`)

    async def on_request(self, exchange: Exchange) -> None:
        p = exchange.principal
        if p is None:  # authn runs first; reaching here without a principal is a wiring error: deny
            exchange.decide(self.name, "deny", detail="no principal")
            raise Forbidden("Not allowed.")
        if exchange.attrs.get("listing"):  # a listing is open to every principal; its content is filtered
            exchange.decide(self.name, "allow", rule="listing (filtered by policy)")
            return
        action = exchange.attrs.get("action", "call")
        target = exchange.target
        known = _Facts(
            lambda: facts(p, target, arguments(exchange), exchange.task, self._limits(p, exchange.headers))
        )
        decision = self.store.decide(p.subject, p.roles, target, action, known)
        rule = _where(decision)
        detail = "; ".join(decision.errors) or None
        if not decision.allowed:
            message = f"{p.subject} may not {action} {target}{_why(decision)}."
            raise self._deny(exchange, p, action, rule, message, detail)
        if decision.effect in HOLDS:  # allowed once a person agrees: the hold stage after this one acts on it
            exchange.decide(self.name, "hold", rule=rule, detail=detail)
            exchange.attrs["hold"] = {"effect": decision.effect, "rule": rule, "line": decision.line}
            return
        exchange.decide(self.name, "allow", rule=rule, detail=detail)

    def _deny(
        self, exchange: Exchange, p: Principal, action: str, rule: str, message: str, detail: str | None
    ) -> Forbidden:
        """The denial. The Exchange (and so its audit record) keeps it as 403 permission_denied with the deciding
        rule; unless reveal_denied, or the target is in the caller's listings (its denial depends on the
        arguments), the caller is answered as if the target did not exist."""
        if (
            self.reveal_denied
            or self.store.decide(p.subject, p.roles, exchange.target, action, listing=True).allowed
        ):
            exchange.decide(self.name, "deny", rule=rule, detail=detail)
            return Forbidden(message)
        # A plane that names no answer for unknown targets still gets a 404 that says nothing about the policy.
        shown = exchange.unseen or NotFound("Not found.")
        note = f"answered as {shown.code} ({CONCEALED})"
        exchange.decide(self.name, "deny", rule=rule, detail=f"{detail}; {note}" if detail else note)
        return Concealed(message, shown)

    def check(
        self, principal: Principal, target: str, action: str, args: Any, task: TaskContext | None = None
    ) -> PolicyDecision:
        """The decision for a call with these arguments, without an Exchange (a model's tool_call inside an LLM
        answer): the same policy, conditions and fail-closed rules as `on_request`."""
        known = facts(principal, target, args, task, self._limits(principal, {}))
        return self.store.decide(principal.subject, principal.roles, target, action, known)

    def _limits(self, principal: Principal, headers: dict[str, str]) -> Mapping[str, int] | None:
        return self.task_limits(principal, headers) if self.task_limits is not None else None

    def allows(self, principal: Principal, target: str, action: str = "call") -> bool:
        """For listings: a target whose lines depend on the arguments is listed (callable with some arguments)."""
        return self.store.decide(principal.subject, principal.roles, target, action, listing=True).allowed
