"""The gateway's shared parts as the settings describe them: the budget ledger, the policy store, the outbound
identity (signing keys and every upstream's `identity:` block), and the approvals service. Gateway (app.py)
assembles them; the CLI builds some of them alone (`agentgw policy ...`)."""

from __future__ import annotations

from agentgw.approvals import Approvals
from agentgw.approvals import open_store as open_approvals_store
from agentgw.audit.redact import Redactor
from agentgw.budget.config import Budgets
from agentgw.budget.ledger import Ledger
from agentgw.budget.memory import MemoryLedger
from agentgw.identity import OutboundIdentity, SigningKeys
from agentgw.mcp import tool_tags
from agentgw.policy import PolicyStore
from agentgw.registry import Registry, UpstreamIdentity
from agentgw.settings import Policies, Settings, secret_of
from agentgw.upstream import UpstreamPool


def make_ledger(cfg: Budgets) -> Ledger:
    if cfg.ledger == "redis":
        from agentgw.budget.redis import RedisLedger  # only deployments that use Redis import its client

        return RedisLedger(cfg.redis_url, cfg.key_prefix, cfg.task_ttl_s)
    return MemoryLedger(cfg.task_ttl_s)


def policy_store(settings: Settings) -> PolicyStore:
    """The policy named by `policies:` (default `policies/model.conf` + `policy.csv` beside the config),
    with registry tool tags available to rules as `tag:<name>`. Loaded now: a broken policy denies all."""
    paths = settings.policies or Policies()
    tags = tool_tags(settings.registry_data.mcp)  # keyed by the upstream's own tool names, as targets are
    subjects = frozenset(k.subject for k in settings.all_keys)
    store = PolicyStore(settings.resolve(paths.model), settings.resolve(paths.policy), tags, subjects)
    store.load()
    return store


def outbound_identity(settings: Settings, pool: UpstreamPool) -> OutboundIdentity:
    """The signing keys and every upstream's `identity:` block (MCP servers, LLM providers)."""
    keys = SigningKeys(settings.signing, settings.base_dir, secret_of(settings))
    listen = settings.listen
    issuer = settings.signing.issuer or f"http://{listen.host}:{listen.port}"
    identity = OutboundIdentity(keys, issuer, lambda: pool.session)
    identity.apply(identity_specs(settings.registry_data))
    return identity


def identity_specs(reg: Registry) -> dict[str, tuple[UpstreamIdentity | None, str | None]]:
    """Every upstream's `identity:` block and URL, by target (MCP servers, LLM providers)."""
    specs: dict[str, tuple[UpstreamIdentity | None, str | None]] = {}
    for server in reg.mcp.servers:
        specs[f"mcp:{server.name}"] = (server.identity, server.url)
    for provider in reg.llm.providers:
        specs[f"llm:{provider.name}"] = (provider.identity, provider.base_url)
    for agent in reg.a2a.agents:
        specs[f"a2a:{agent.name}"] = (agent.identity, str(agent.url))
    return specs


def make_approvals(settings: Settings, pool: UpstreamPool, secrets: list[str]) -> Approvals:
    """The approvals service over the configured store; arguments are redacted by the audit rules."""
    cfg = settings.audit
    key = (cfg.hmac_key or secret_of(settings) or "agentgw-approvals").encode()
    redactor = Redactor(cfg.redaction, secrets, key)
    return Approvals(settings.approvals, open_approvals_store(settings), redactor, key, lambda: pool.session)
