"""The ordered stage list every Exchange passes: authn → authz → route → guard → hold → budget → forward, with the audit
hook in finally."""

from __future__ import annotations

from agentgw.approvals import Approvals
from agentgw.audit.writer import RecordSink
from agentgw.pipeline import Stage
from agentgw.policy import PolicyStore
from agentgw.stages.audit import AuditStage, CapturingAuditStage
from agentgw.stages.authn import Authenticator, AuthnStage
from agentgw.stages.authz import AuthzStage
from agentgw.stages.budget import BudgetStage
from agentgw.stages.guard import GuardStage
from agentgw.stages.hold import HoldStage
from agentgw.stages.route import RouteStage


def default_stages(
    audit: RecordSink | None,
    auth: Authenticator,
    policy: PolicyStore,
    budget: BudgetStage | None = None,
    reveal_denied: bool = False,
    approvals: Approvals | None = None,
    guard: GuardStage | None = None,
) -> list[Stage]:
    """Audit first in the list, so its `on_finish` runs last (after every other stage has decided). Without a
    writer (`audit.enabled: false`, benchmarks only) nothing is recorded. The hold stage is always there (a
    held call without an approvals service is denied, never let through)."""
    stages: list[Stage] = []
    if audit is not None:
        capture = any(c.response for c in audit.cfg.payloads)
        stages.append(CapturingAuditStage(audit) if capture else AuditStage(audit))
    limits = budget.limits_for if budget is not None else None  # `task.limits` in policy conditions
    stages += [AuthnStage(auth), AuthzStage(policy, reveal_denied, limits), RouteStage()]
    if guard is not None:  # only when guardrails are configured: no rule, no stage, no cost
        stages.append(guard)
    stages.append(HoldStage(approvals))
    if budget is not None:
        stages.append(budget)
    return stages
