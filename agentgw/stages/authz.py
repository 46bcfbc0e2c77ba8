"""Authorization: may this principal do this action on this target? Decided by the Casbin policy
(agentgw.policy) for every Exchange; default deny.

A denial answers exactly as the target not existing (the plane's `exchange.unseen`: unknown model, tool, prompt,
resource or agent), so a caller cannot learn what exists beyond what it may use; with `authz.reveal_denied` it is
403 `permission_denied` instead. Either way the Exchange keeps the 403 `permission_denied` (status `denied`) and
the decision, with the policy line that made it, for the audit record, metrics and traces. `allows()` answers the same question for listings, so a caller sees
exactly what it may call.

A line with effect `approve` or `confirm` allows subject to a hold: the stage records the decision `hold` and
sets `exchange.attrs["hold"] = {"effect", "rule", "line"}` for the hold stage that runs next.
"""

from __future__ import annotations

from agentgw.errors import Concealed, Forbidden, NotFound
from agentgw.exchange import Exchange, Principal
from agentgw.pipeline import Stage
from agentgw.policy import PolicyStore

CONCEALED = "authz.reveal_denied: false"
HOLDS = ("approve", "confirm")


class AuthzStage(Stage):
    name = "authz"

    def __init__(self, store: PolicyStore, reveal_denied: bool = False) -> None:
        self.store = store
        self.reveal_denied = reveal_denied

    async def on_request(self, exchange: Exchange) -> None:
        p = exchange.principal
        if p is None:  # authn runs first; reaching here without a principal is a wiring error: deny
            exchange.decide(self.name, "deny", detail="no principal")
            raise Forbidden("Not allowed.")
        if exchange.attrs.get("listing"):  # a listing is open to every principal; its content is filtered
            exchange.decide(self.name, "allow", rule="listing (filtered by policy)")
            return
        action = exchange.attrs.get("action", "call")
        decision = self.store.decide(p.subject, p.roles, exchange.target, action)
        rule = f"policy.csv:{decision.line}: {decision.rule}" if decision.rule else "default deny"
        if not decision.allowed:
            raise self._deny(exchange, rule, f"{p.subject} may not {action} {exchange.target}.")
        if decision.effect in HOLDS:  # allowed once a person agrees: the hold stage after this one acts on it
            exchange.decide(self.name, "hold", rule=rule)
            exchange.attrs["hold"] = {"effect": decision.effect, "rule": rule, "line": decision.line}
            return
        exchange.decide(self.name, "allow", rule=rule)

    def _deny(self, exchange: Exchange, rule: str, message: str) -> Forbidden:
        """The denial. The Exchange (and so its audit record) keeps it as 403 permission_denied with the deciding
        rule; unless reveal_denied, the caller is answered as if the target did not exist."""
        if self.reveal_denied:
            exchange.decide(self.name, "deny", rule=rule)
            return Forbidden(message)
        # A plane that names no answer for unknown targets still gets a 404 that says nothing about the policy.
        shown = exchange.unseen or NotFound("Not found.")
        exchange.decide(self.name, "deny", rule=rule, detail=f"answered as {shown.code} ({CONCEALED})")
        return Concealed(message, shown)

    def allows(self, principal: Principal, target: str, action: str = "call") -> bool:
        return self.store.decide(principal.subject, principal.roles, target, action).allowed
