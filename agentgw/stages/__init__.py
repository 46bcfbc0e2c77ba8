"""The ordered stage list every Exchange passes: authn → (authz → budget → guardrails) → forward, audit in finally."""

from __future__ import annotations

from agentgw.keys import KeyStore
from agentgw.pipeline import Stage
from agentgw.settings import Settings
from agentgw.stages.audit import AuditSink, AuditStage
from agentgw.stages.authn import AuthnStage


def default_stages(settings: Settings, sink: AuditSink, keys: KeyStore | None = None) -> list[Stage]:
    """Audit first in the list, so its `on_finish` runs last (after every other stage has decided)."""
    return [AuditStage(sink), AuthnStage(keys or KeyStore(settings))]
