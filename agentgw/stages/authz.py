"""Authorization: may this principal do this action on this target? Decided by the Casbin policy
(agentgw.policy) for every Exchange; default deny.

Fails with 403 `permission_denied`; the decision (and the policy line that made it) is kept for the audit
record. `allows()` answers the same question for listings, so a caller sees exactly what it may call.
"""

from __future__ import annotations

from agentgw.errors import Forbidden
from agentgw.exchange import Exchange, Principal
from agentgw.pipeline import Stage
from agentgw.policy import PolicyStore


class AuthzStage(Stage):
    name = "authz"

    def __init__(self, store: PolicyStore) -> None:
        self.store = store

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
            exchange.decide(self.name, "deny", rule=rule)
            raise Forbidden(f"{p.subject} may not {action} {exchange.target}.")
        exchange.decide(self.name, "allow", rule=rule)

    def allows(self, principal: Principal, target: str, action: str = "call") -> bool:
        return self.store.decide(principal.subject, principal.roles, target, action).allowed
