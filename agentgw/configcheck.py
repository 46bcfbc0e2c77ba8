"""What `check-config` and `serve` check beyond load_settings, on the assembled parts: MCP tool-name collisions,
whether the policy files load, key subjects that clash with role names, guardrail patterns, the semantic cache's
embedding model, and the optional extras a config needs; plus what only `check-config` refuses (ambiguities)."""

from __future__ import annotations

from agentgw.configfile import Problem
from agentgw.guardrails.engine import Guardrails
from agentgw.keys import name_clashes
from agentgw.llm.cache.exact import embedding_problem
from agentgw.mcp import check_collisions
from agentgw.policy import PolicyEngine, bare_subjects, policy_problems, policy_roles
from agentgw.registry import Registry
from agentgw.settings import Policies, Settings


def registry_problems(registry: Registry) -> list[Problem]:
    """What load_registry cannot see in a registry: MCP tool-name collisions."""
    return [Problem("registry", "", message) for message in check_collisions(registry)]


def check(settings: Settings) -> list[Problem]:
    """What only the assembled gateway can check, beyond load_settings: MCP tool-name collisions, whether the
    policy files load (no empty or doubly prefixed name), and key subjects that are also a `role:` name of the
    policy, a key's role or an admin or metrics role. `check-config` and `serve` refuse these like every other
    problem; `ambiguities` are what only `check-config` refuses."""
    problems = registry_problems(settings.registry_data)
    semantic = embedding_problem(settings.llm.cache, {m.name for m in settings.registry_data.llm.models})
    if semantic is not None:  # the semantic cache embeds with a model the registry does not have
        problems.append(Problem(str(settings.path), "llm.cache.semantic.embedding_model", semantic))
    problems += missing_extras(settings)
    paths = settings.policies or Policies()
    policy = settings.resolve(paths.policy)
    try:
        lines = policy_problems(policy)
        problems.extend(Problem(str(policy), "", line) for line in lines)
        if not lines:
            PolicyEngine(settings.resolve(paths.model), policy)
        problems.extend(name_clashes(settings, policy_roles(policy, bare=False)))
    except FileNotFoundError as exc:
        problems.append(Problem(str(exc.filename or paths.policy), "", "policy file not found"))
    except Exception as exc:
        problems.append(Problem(str(settings.resolve(paths.model)), "", f"policy does not load: {exc}"))
    if settings.guardrails.guards:
        try:  # a guard's patterns compile only when it is built: a bad one is a config problem, not a 500
            Guardrails(settings.guardrails)
        except ValueError as exc:
            problems.append(Problem(str(settings.path), "guardrails", str(exc)))
    return problems


def missing_extras(settings: Settings) -> list[Problem]:
    """Features whose libraries are optional extras of the package (kept out of a plain install: ~120 MB), named
    with the install command when the config uses them and they are missing."""
    import importlib.util

    need: dict[str, tuple[str, str]] = {}  # module → (extra, what needs it)
    for i, p in enumerate(settings.registry_data.llm.providers):
        if p.kind == "bedrock":
            need["botocore"] = ("bedrock", f"llm.providers[{i}] ({p.name}, kind bedrock)")
    cache = settings.llm.cache
    if cache.mode == "semantic":
        need["numpy"] = ("semantic-cache", "llm.cache.mode semantic")
        if (cache.semantic.index or cache.store) == "memory":
            need["usearch"] = ("semantic-cache", "llm.cache.semantic.index memory")
    return [
        Problem(str(settings.path), where, f"needs the '{extra}' extra: pip install 'agentgw[{extra}]'")
        for module, (extra, where) in need.items()
        if importlib.util.find_spec(module) is None
    ]


def ambiguities(settings: Settings) -> list[Problem]:
    """Bare (role) names of the policy that are also key subjects: likely written for the subject before the
    `user:` prefix, and now a role that subject is not in. `check-config` refuses them; `serve` loads the policy
    and logs them (`PolicyStore.load`), as the gateway denies those subjects rather than over-grant."""
    policy = settings.resolve((settings.policies or Policies()).policy)
    try:
        found = bare_subjects(policy, frozenset(k.subject for k in settings.all_keys))
    except (OSError, UnicodeDecodeError):
        return []  # `check` reports a policy that does not load
    return [Problem(str(policy), "", why) for why in found]
