"""The ordered stage list every Exchange passes: authn → authz → budget → forward, with the audit hook in
finally."""

from __future__ import annotations

from agentgw.pipeline import Stage
from agentgw.policy import PolicyStore
from agentgw.stages.audit import AuditSink, AuditStage
from agentgw.stages.authn import Authenticator, AuthnStage
from agentgw.stages.authz import AuthzStage
from agentgw.stages.budget import BudgetStage


def default_stages(
    sink: AuditSink, auth: Authenticator, policy: PolicyStore, budget: BudgetStage | None = None
) -> list[Stage]:
    """Audit first in the list, so its `on_finish` runs last (after every other stage has decided)."""
    stages: list[Stage] = [AuditStage(sink), AuthnStage(auth), AuthzStage(policy)]
    if budget is not None:
        stages.append(budget)
    return stages
