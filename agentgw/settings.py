"""agentgw.yaml: frozen, validated settings (declare → load → run), plus the registry and keys files it names.

`load_settings(path)` interpolates `${VAR}` / `${VAR:-default}`, validates with `extra="forbid"`, merges the
registry, runs cross-file checks, and raises ConfigError listing every problem as `file: key.path: what`.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agentgw.audit.config import Audit
from agentgw.budget.config import Budgets
from agentgw.configfile import (
    ConfigError,
    Problem,
    add_problems,
    interpolated,
    read_yaml,
    validation_problems,
)
from agentgw.guardrails.config import GuardrailSettings
from agentgw.identity.config import JWTSettings, Signing
from agentgw.names import ambiguous
from agentgw.observability import MetricsSettings, TelemetrySettings
from agentgw.registry import Registry


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Listen(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class Policies(Frozen):
    model: str = "policies/model.conf"
    policy: str = "policies/policy.csv"


class ApiKey(Frozen):
    subject: str = Field(min_length=1)
    roles: list[str] = Field(default_factory=list)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # A well-known demo key: accepted only while the gateway listens on loopback, and only from loopback peers.
    loopback_only: bool = False
    name: str | None = None
    created: str | None = None  # set by `agentgw keys create` (UTC, ISO 8601); informational

    @field_validator("subject")
    @classmethod
    def _plain_subject(cls, value: str) -> str:
        why = ambiguous(value)  # `role:x` as a subject reads like a role (docs/authorization.md)
        if why:
            raise ValueError(why)
        return value

    @field_validator("roles")
    @classmethod
    def _plain_roles(cls, value: list[str]) -> list[str]:
        for name in value:
            why = ambiguous(name)
            if why:
                raise ValueError(why)
        return value


class Auth(Frozen):
    api_keys: list[ApiKey] = Field(default_factory=list)
    # A YAML list of ApiKey entries, relative to this file; `agentgw keys create` appends to it.
    keys_file: str = "keys.yaml"
    jwt: JWTSettings | None = None  # JWT bearer tokens from one trusted issuer (see docs/configuration.md)
    # Which credential kinds each plane takes (api_key, jwt); a plane not named takes every configured kind.
    accept: dict[Literal["llm", "mcp", "a2a", "admin"], list[Literal["api_key", "jwt"]]] = Field(
        default_factory=dict
    )
    admin_roles: list[str] = Field(default_factory=lambda: ["admins"])  # roles that may use /admin/
    # roles that read all of /admin/ (and sign in to the console) but change nothing
    auditor_roles: list[str] = Field(default_factory=lambda: ["auditors"])


class ConsoleOIDC(Frozen):
    """Sign-in through `auth.jwt.issuer`'s OpenID Connect login (authorization code with PKCE)."""

    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = (
        None  # a confidential client's secret (use ${ENV}); none for a public one
    )
    scopes: list[str] = Field(default_factory=lambda: ["openid"])
    # where the issuer sends the browser back; default: this request's own origin + /console/oidc/callback
    redirect_url: str | None = None


class Console(Frozen):
    """The web console at /console (docs/console.md): sessions signed in with an admin or auditor credential."""

    enabled: bool = True
    oidc: ConsoleOIDC | None = None
    session_idle_s: float = Field(default=1800.0, gt=0)  # signed out after this long without a request
    session_max_s: float = Field(default=8 * 3600.0, gt=0)  # and after this long in any case
    # Where sessions live: `auto` = Redis when the budget ledger is Redis (every replica signs the same people in),
    # else this process's memory.
    sessions: Literal["auto", "memory", "redis"] = "auto"
    redis_url: str | None = None  # default: budgets.redis_url


class Authz(Frozen):
    # false: a denied model, tool, prompt, resource or agent answers exactly like an unknown one (no existence
    # leak); true: 403 permission_denied. The audit record says denied, with the deciding rule, either way.
    reveal_denied: bool = False


class Limits(Frozen):
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # The front door (agentgw/frontdoor.py, agentgw/server.py): every listener, before any plane.
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024
    )  # request line + headers: 431
    header_timeout_s: float = Field(default=10.0, gt=0)  # first byte to end of headers: 408
    body_timeout_s: float = Field(default=60.0, gt=0)  # end of headers to end of body: 408
    # JSON nesting (objects + arrays) a request body may have: 400 / JSON-RPC -32600. At most 128: every serialiser
    # on the way (orjson: 254 levels, pydantic toward MCP servers: about as many) must be able to write it again.
    max_json_depth: int = Field(default=64, ge=2, le=128)


class Server(Frozen):
    workers: int = Field(default=1, ge=1, le=64)
    # Host names (with or without :port) and browser origins accepted besides the loopback names and the listen
    # host (DNS rebinding: any other Host gets 421, any other Origin 403). With allowed_hosts set, the Host of
    # every peer is checked; without it, only loopback peers' (see docs/configuration.md#front-door).
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    graceful_shutdown_s: float = Field(default=30.0, ge=0)
    access_log: bool = False


class CircuitBreaker(Frozen):
    failures: int = Field(default=5, ge=1)  # consecutive failures that open the circuit
    cooldown_s: float = Field(default=30.0, ge=0)  # open → half-open (one trial call)


class RetryDefaults(Frozen):
    attempts: int = Field(default=2, ge=1, le=10)
    backoff_ms: float = Field(default=100.0, ge=0)
    max_backoff_ms: float = Field(default=2000.0, ge=0)


class Upstream(Frozen):
    pool_size: int = Field(
        default=4096, ge=1
    )  # total upstream connections per process (streams hold one each)
    pool_per_host: int = Field(default=0, ge=0)  # 0 = no per-host cap
    retry: RetryDefaults = Field(default_factory=RetryDefaults)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)


class SupervisorSettings(Frozen):
    """How registry entries with `command:` are restarted and stopped (agentgw/supervisor.py)."""

    backoff_s: float = Field(default=0.5, ge=0)  # first restart delay; doubles on each consecutive crash
    max_backoff_s: float = Field(default=30.0, ge=0)
    stable_after_s: float = Field(default=30.0, ge=0)  # up this long → the next crash starts the backoff over
    stop_timeout_s: float = Field(default=5.0, gt=0)  # SIGTERM, then SIGKILL after this long
    # Where each gateway records the processes it started (relative to the config file), so the next start
    # reaps what a crash left behind; null turns the record off (children still die with the gateway on Linux).
    run_dir: str | None = ".agentgw"


class MCPSessions(Frozen):
    """The gateway's own handshake-era MCP sessions (agentgw/mcp/front/sessions.py)."""

    idle_timeout_s: float = Field(default=1800.0, gt=0)  # no request in flight this long: the session ends
    max_sessions: int = Field(default=10_000, ge=1)  # open sessions per endpoint and process
    # Of those, one principal's at most: opening one more ends its oldest idle session first (docs/mcp.md).
    max_per_principal: int = Field(default=100, ge=1)
    max_age_s: float = Field(
        default=86_400.0, gt=0
    )  # a session id is honored (and revived) this long at most
    # Where a session's events, log level, subscriptions and end live (agentgw/mcp/front/shared.py): `auto` = Redis
    # when the budget ledger is Redis (replicas share it), else this process's memory.
    shared: Literal["auto", "memory", "redis"] = "auto"
    redis_url: str | None = None  # default: budgets.redis_url


class MCPEndpoint(Frozen):
    sessions: MCPSessions = Field(default_factory=MCPSessions)


class A2APush(Frozen):
    # Callback hosts or networks a client may register although they are loopback, private or link-local
    # (e.g. "10.0.0.0/8", "hooks.internal", "127.0.0.1"): everything else must resolve to public addresses.
    allow: list[str] = Field(default_factory=list)


class A2ASettings(Frozen):
    """The A2A plane (docs/a2a.md). What agents exist is the registry's `a2a.agents`; this is how they are served."""

    # Where task and context ids are bound to the principal that created them: `auto` = Redis when the budget ledger
    # is Redis (replicas share it), else this process's memory.
    ownership: Literal["auto", "memory", "redis"] = "auto"
    redis_url: str | None = None  # default: budgets.redis_url
    ownership_ttl_s: float = Field(default=7 * 86400.0, gt=0)  # a task id unused this long is forgotten
    keepalive_s: float = Field(default=15.0, gt=0)  # an SSE comment on a stream idle this long
    card_ttl_s: float = Field(
        default=300.0, ge=0
    )  # the longest a fetched card is kept (less if the agent says)
    push: A2APush = Field(default_factory=A2APush)
    # The gateway's URL as A2A clients reach it (e.g. behind a proxy: "https://gw.example.com"): the base of the
    # interfaces in rewritten cards and of the directory's card URLs. Default: the request's own scheme and Host.
    public_url: str | None = None
    # List the 0.3 interfaces the gateway serves for every agent (JSON-RPC and HTTP+JSON) in the cards it serves,
    # with the 0.3 fields a 0.3 client reads (`url`, `preferredTransport`, `additionalInterfaces`).
    advertise_0_3: bool = False


class ApprovalsWebhook(Frozen):
    """Where new approval requests are announced (POST JSON), under the same egress rule as A2A push callbacks:
    the host must be public unless `allow` names it (or a network holding its address)."""

    url: str | None = None  # None: no announcement (approvers poll GET /admin/approvals or the CLI)
    allow: list[str] = Field(default_factory=list)  # hosts or networks allowed although private or loopback
    timeout_s: float = Field(default=5.0, gt=0)


class ApprovalsSettings(Frozen):
    """Policy effects `approve` (a person with an approver role decides) and `confirm` (the calling user is asked
    through MCP elicitation): docs/mediation.md."""

    timeout_s: float = Field(
        default=300.0, gt=0
    )  # a request nobody decides this long is denied (approval_timeout)
    approver_roles: list[str] = Field(
        default_factory=lambda: ["approvers"]
    )  # may decide (not their own requests)
    # audit: the audit store's database (SQLite file or PostgreSQL, per `audit.store`), so pending requests survive
    # a restart and every worker and replica sees them; memory: this process only (tests, demos)
    store: Literal["audit", "memory"] = "audit"
    poll_interval_s: float = Field(
        default=1.0, gt=0
    )  # how often a waiting call re-reads the store (other workers)
    progress_interval_s: float = Field(default=10.0, gt=0)  # MCP progress notifications while a call waits
    webhook: ApprovalsWebhook = Field(default_factory=ApprovalsWebhook)


class ToolPinning(Frozen):
    """Pinned MCP tool definitions (docs/mediation.md): what a tool whose definition left the lock file does, and
    what a description or schema with injection markers does."""

    mode: Literal["off", "warn", "enforce"] = "off"
    scan: Literal["off", "mark", "hide"] = "off"
    lock_file: str = "registry/tools.lock.yaml"  # relative to agentgw.yaml


class SemanticCacheSettings(Frozen):
    """`llm.cache.semantic`, used when `llm.cache.mode` is `semantic` (agentgw/llm/cache/semantic.py): an exact
    miss may be answered from a kept answer to a request that differs only in wording (cosine similarity of
    the conversations' embeddings)."""

    # A model alias of the registry (checked at startup), called through the gateway's own providers.
    embedding_model: str | None = None
    threshold: float = Field(default=0.95, ge=0, le=1)  # the least cosine similarity that is a hit
    # Model alias glob → its own threshold (the first that matches), else `threshold`.
    thresholds: dict[str, float] = Field(default_factory=dict)
    # Where the vectors live: memory (usearch, per process) or redis (shared); default: the same as `store`.
    index: Literal["memory", "redis"] | None = None
    max_entries: int = Field(default=1000, ge=1)  # vectors per partition; the oldest go first
    # Partitions held in this process (memory index, or the redis index's local copies); least recently used go.
    max_partitions: int = Field(default=1024, ge=1)
    max_text_chars: int = Field(default=16_000, ge=1)  # a longer conversation is cached exactly only
    timeout_s: float = Field(default=2.0, gt=0)  # the embedding call; slower is a miss

    @field_validator("thresholds")
    @classmethod
    def _unit(cls, value: dict[str, float]) -> dict[str, float]:
        for glob_, t in value.items():
            if not 0 <= t <= 1:
                raise ValueError(f"{glob_!r}: a threshold is a cosine similarity between 0 and 1")
        return value


class CacheSettings(Frozen):
    """`llm.cache`: the response cache of chat completions (agentgw/llm/cache/exact.py); off by default. `exact`: the same
    request again; `semantic`: that, then the same request in other words (`semantic:`)."""

    mode: Literal["off", "exact", "semantic"] = "off"
    scope: Literal["principal", "role", "global"] = "principal"  # who may be answered from whose answers
    ttl_s: float = Field(default=300.0, gt=0)
    models: list[str] = Field(default_factory=lambda: ["*"])  # model aliases (globs) whose answers are kept
    store: Literal["memory", "redis"] = "memory"
    max_entries: int = Field(default=10_000, ge=1)  # memory: the oldest go first
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "agentgw:cache:"
    charge: bool = False  # true: a hit charges the budget the tokens the answer first cost
    semantic: SemanticCacheSettings = Field(default_factory=SemanticCacheSettings)

    @model_validator(mode="after")
    def _semantic(self) -> CacheSettings:
        if self.mode == "semantic" and not self.semantic.embedding_model:
            raise ValueError("mode semantic needs semantic.embedding_model (a model alias of the registry)")
        if self.semantic.index == "redis" and self.store != "redis":
            raise ValueError("semantic.index redis needs store redis (the answers the vectors point at)")
        return self


class ResponsesSettings(Frozen):
    """`llm.responses`: where the Responses API's stored responses live (for `previous_response_id` and `GET`)."""

    # auto = Redis when the budget ledger is Redis (replicas share it), else this process's memory.
    store: Literal["auto", "memory", "redis"] = "auto"
    redis_url: str | None = None  # default: budgets.redis_url
    ttl_s: float = Field(default=30 * 86400.0, gt=0)  # a stored response is kept this long
    max_entries: int = Field(default=10_000, ge=1)  # memory: the oldest go first


class RoutingSettings(Frozen):
    """`llm.routing`: where the routing strategies' per-target state lives (latency, errors, calls in flight, calls
    and tokens per minute against rpm/tpm)."""

    # auto = Redis when the budget ledger is Redis, else this process only; with Redis every process publishes its
    # own numbers every `sync_s` and reads everyone's (limits hold across replicas to within that interval).
    state: Literal["auto", "memory", "redis"] = "auto"
    redis_url: str | None = None  # default: budgets.redis_url
    sync_s: float = Field(default=1.0, gt=0, le=60)


class LLMToolSettings(Frozen):
    """Tool calls inside LLM traffic (agentgw/llm/mediation/tool_policy.py, docs/mediation.md): which declared `tools` go upstream,
    and what happens to a `tool_call` in an answer that the caller may not run."""

    # off: tools and tool calls pass untouched (the default: agents' own tools keep working until mapped).
    # filter: declared tools the caller may not call are dropped before the request goes upstream.
    # refuse: a request declaring one is refused (403 tool_not_allowed). Both check every tool_call in answers.
    tool_policy: Literal["off", "filter", "refuse"] = "off"
    # A disallowed tool_call in an answer: strip it (and say so in the message), or refuse the whole answer.
    tool_call_violation: Literal["strip", "refuse"] = "strip"
    # Function names an agent defines itself → the policy object they are decided as (e.g. `mcp:web/search`).
    # `<server>__<tool>` of a registry MCP server needs no entry; any other name without one is denied.
    tools: dict[str, str] = Field(default_factory=dict)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)

    @field_validator("tools")
    @classmethod
    def _objects(cls, value: dict[str, str]) -> dict[str, str]:
        for name, obj in value.items():
            if not name or not obj or ":" not in obj or any(c in obj for c in "*?,"):
                raise ValueError(f"{name!r}: the object must be one policy object such as 'mcp:web/search'")
        return value


class Logging(Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class Settings(Frozen):
    listen: Listen = Field(default_factory=Listen)
    registry: list[str] = Field(default_factory=lambda: ["registry/*.yaml"])
    policies: Policies | None = None
    auth: Auth = Field(default_factory=Auth)
    authz: Authz = Field(default_factory=Authz)
    limits: Limits = Field(default_factory=Limits)
    server: Server = Field(default_factory=Server)
    upstream: Upstream = Field(default_factory=Upstream)
    audit: Audit = Field(default_factory=Audit)
    budgets: Budgets = Field(default_factory=Budgets)
    logging: Logging = Field(default_factory=Logging)
    mcp: MCPEndpoint = Field(default_factory=MCPEndpoint)
    a2a: A2ASettings = Field(default_factory=A2ASettings)
    llm: LLMToolSettings = Field(default_factory=LLMToolSettings)
    # Seals MCP session ids and requestState (≥ 32 bytes; default $AGENTGW_SECRET). Replicas and workers share it.
    secret: SecretStr | None = Field(default=None, min_length=32)
    signing: Signing = Field(
        default_factory=Signing
    )  # identity assertions to upstreams; /.well-known/jwks.json
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    approvals: ApprovalsSettings = Field(default_factory=ApprovalsSettings)
    tool_pinning: ToolPinning = Field(default_factory=ToolPinning)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    console: Console = Field(default_factory=Console)

    @model_validator(mode="after")
    def _oidc_needs_an_issuer(self) -> Settings:
        if self.console.oidc is not None and self.auth.jwt is None:
            raise ValueError("console.oidc needs auth.jwt: the console signs in through that issuer")
        return self

    _path: Path = PrivateAttr(default=Path("agentgw.yaml"))
    _registry: Registry = PrivateAttr(default_factory=Registry)
    _keys: tuple[ApiKey, ...] = PrivateAttr(default=())

    @property
    def path(self) -> Path:
        return self._path

    @property
    def base_dir(self) -> Path:
        return self._path.parent

    @property
    def registry_data(self) -> Registry:
        return self._registry

    @property
    def all_keys(self) -> tuple[ApiKey, ...]:
        return self._keys

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.base_dir / p

    def keys_path(self) -> Path:
        return self.resolve(self.auth.keys_file)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SECTIONS = {"llm": ("providers", "models"), "mcp": ("servers", "virtual_servers"), "a2a": ("agents",)}


def _entries(data: Any, section: str, list_name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The mappings in `data[section][list_name]` with their indexes (tolerating a file that failed validation)."""
    part = data.get(section) if isinstance(data, dict) else None
    items = part.get(list_name) if isinstance(part, dict) else None
    for i, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict):
            yield i, item


LOCK_SUFFIX = ".lock.yaml"


def registry_files(settings: Settings, problems: list[Problem]) -> list[Path]:
    """The files the `registry` globs match (relative to the config file), in order, each once."""
    files: dict[Path, None] = {}
    for i, pattern in enumerate(settings.registry):
        full = pattern if Path(pattern).is_absolute() else f"{glob.escape(str(settings.base_dir))}/{pattern}"
        found = sorted(glob.glob(full, recursive=True))
        if not found:
            problems.append(Problem(str(settings.path), f"registry[{i}]", f"no file matches {pattern!r}"))
        # `*.lock.yaml` (the tool pinning lock file, `registry/tools.lock.yaml` by default) is never a registry file
        files.update((Path(f), None) for f in found if Path(f).is_file() and not f.endswith(LOCK_SUFFIX))
    return list(files)


def load_registry(settings: Settings, problems: list[Problem]) -> Registry:
    """Merge every registry file the settings name; names must be unique across files; references must resolve."""
    merged: dict[str, dict[str, list[Any]]] = {}
    # (kind, name) → "file: key.path" where it is first defined, for duplicate reports
    origin: dict[tuple[str, str], str] = {}
    refs: list[tuple[str, str, str]] = []  # (file, key path, provider) of every model target
    for file in registry_files(settings, problems):
        fname = str(file)
        data = read_yaml(file, problems)
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(Problem(fname, "", "expected a mapping with llm, mcp and a2a sections"))
            continue
        data, unset = interpolated(data, fname, problems)
        try:  # validate each file on its own first, so problems name the file they are in
            Registry.model_validate(data)
            valid = True
        except ValidationError as err:
            add_problems(problems, validation_problems(fname, err), unset)
            valid = False
        # Names and references are checked even in an invalid file, so one run reports everything.
        for section, lists in _SECTIONS.items():
            for list_name in lists:
                kind = f"{section}.{list_name}"
                for i, item in _entries(data, section, list_name):
                    name = item.get("name")
                    if not isinstance(name, str):
                        continue
                    where = f"{kind}[{i}].name"
                    seen = origin.get((kind, name))
                    if seen is not None:
                        other = seen.split(": ", 1)
                        also = f"at {other[1]}" if other[0] == fname else f"in {other[0]}"
                        problems.append(Problem(fname, where, f"{name!r} is also defined {also}"))
                        continue
                    origin[(kind, name)] = f"{fname}: {where}"
                    if valid:
                        merged.setdefault(section, {}).setdefault(list_name, []).append(item)
        for i, model in _entries(data, "llm", "models"):
            targets = model.get("targets")
            for j, t in enumerate(targets if isinstance(targets, list) else []):
                if isinstance(t, dict) and isinstance(t.get("provider"), str):
                    refs.append((fname, f"llm.models[{i}].targets[{j}].provider", t["provider"]))
    for fname, where, provider in refs:
        if ("llm.providers", provider) not in origin:
            problems.append(Problem(fname, where, f"unknown provider {provider!r}"))
    try:
        return Registry.model_validate(merged)
    except ValidationError as err:  # pragma: no cover - every merged entry validated in its own file above
        problems.extend(validation_problems("registry", err))
        return Registry()


def _load_keys_file(path: Path, problems: list[Problem]) -> list[ApiKey]:
    if not path.exists():
        return []
    data = read_yaml(path, problems)
    if data is None:
        return []
    if not isinstance(data, list):
        problems.append(Problem(str(path), "", "expected a list of keys"))
        return []
    keys: list[ApiKey] = []
    for i, item in enumerate(data):
        try:
            keys.append(ApiKey.model_validate(item))
        except ValidationError as err:
            problems.extend(validation_problems(str(path), err, (i,)))
    return keys


def _validate_settings(
    raw: dict[str, Any], file: str, unset: set[str], problems: list[Problem]
) -> tuple[Settings, set[str]]:
    """Validate; on problems, keep going with the top-level sections that are valid (and return the names of the
    invalid ones), so the registry, keys and policies are still checked and every problem is reported at once."""
    try:
        return Settings.model_validate(raw), set()
    except ValidationError as err:
        add_problems(problems, validation_problems(file, err), unset)
    good: dict[str, Any] = {}
    for key, value in raw.items():
        if key in Settings.model_fields:
            try:
                Settings.model_validate({key: value})
            except ValidationError:
                continue
            good[key] = value
    return Settings.model_validate(good), {str(k) for k in raw if k not in good}


def _check_keys(settings: Settings, listen_host: str, problems: list[Problem]) -> None:
    sources = [(str(settings.path), "auth.api_keys", list(settings.auth.api_keys))]
    file_keys = _load_keys_file(settings.keys_path(), problems)
    sources.append((str(settings.keys_path()), "", file_keys))
    seen: dict[str, str] = {}
    all_keys: list[ApiKey] = []
    for file, prefix, keys in sources:
        for i, k in enumerate(keys):
            where = f"{prefix}[{i}]"
            if k.loopback_only and not is_loopback(listen_host):
                problems.append(
                    Problem(
                        file,
                        f"{where}.loopback_only",
                        f"a loopback-only key cannot be used while listening on {listen_host!r}",
                    )
                )
            if k.sha256 in seen:
                problems.append(
                    Problem(file, f"{where}.sha256", f"the same key is also configured {seen[k.sha256]}")
                )
                continue
            seen[k.sha256] = f"for subject {k.subject!r} in {file}"
            all_keys.append(k)
    settings._keys = tuple(all_keys)


def memory_ledger_problem(cfg_path: Path, workers: int) -> Problem:
    return Problem(
        str(cfg_path),
        "budgets.ledger",
        f"the memory ledger cannot be shared by {workers} workers: use ledger: redis, or one worker",
    )


SECRET_ENV = "AGENTGW_SECRET"


def secret_of(settings: Settings) -> str | None:
    """The gateway secret: `secret:` in agentgw.yaml, else $AGENTGW_SECRET (None: each process makes one up)."""
    configured = settings.secret.get_secret_value() if settings.secret is not None else None
    return configured or os.environ.get(SECRET_ENV) or None


def worker_problems(settings: Settings, workers: int) -> list[Problem]:
    """What several worker processes need that one does not: a shared ledger and a shared secret."""
    problems = []
    if workers > 1 and settings.budgets.rules and settings.budgets.ledger == "memory":
        problems.append(memory_ledger_problem(settings.path, workers))
    a2a = settings.a2a.ownership
    shared = a2a == "redis" or (a2a == "auto" and settings.budgets.ledger == "redis")
    if workers > 1 and settings.registry_data.a2a.agents and not shared:
        problems.append(
            Problem(
                str(settings.path),
                "a2a.ownership",
                f"A2A task ownership in memory cannot be shared by {workers} workers (a task created through one "
                "would not exist for its owner on another): use a2a.ownership: redis, or one worker",
            )
        )
    if workers > 1 and settings.registry_data.mcp.servers and secret_of(settings) is None:
        problems.append(
            Problem(
                str(settings.path),
                "secret",
                f"{workers} workers need a shared secret (set `secret:` or {SECRET_ENV}): MCP sessions and "
                "requestState sealed by one worker would be refused by another",
            )
        )
    if workers > 1 and settings.approvals.store == "memory":
        problems.append(
            Problem(
                str(settings.path),
                "approvals.store",
                f"approval requests in memory cannot be shared by {workers} workers (a request held by one would "
                "not exist for the approver on another): use approvals.store: audit, or one worker",
            )
        )
    if workers > 1 and uses_identity(settings) and not settings.signing.keys and secret_of(settings) is None:
        problems.append(
            Problem(
                str(settings.path),
                "signing",
                f"{workers} workers need the same signing keys (set `secret:`, {SECRET_ENV} or signing.keys): "
                "an assertion signed by one worker would not verify against another's JWKS",
            )
        )
    return problems


def uses_identity(settings: Settings) -> bool:
    """Does any upstream get an identity assertion or exchanged token (registry `identity:` blocks)?"""
    reg = settings.registry_data
    return any(s.identity is not None for s in reg.mcp.servers) or any(
        p.identity is not None for p in reg.llm.providers
    )


def load_settings(path: str | os.PathLike[str], *, host: str | None = None) -> Settings:
    """Load and check everything; raise ConfigError with every problem found (not just the first).

    `host` is the `--host` override of `agentgw serve` (it matters for loopback-only keys)."""
    cfg_path = Path(path).resolve()
    file = str(cfg_path)
    problems: list[Problem] = []
    raw = read_yaml(cfg_path, problems)
    if problems:
        raise ConfigError(problems)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([Problem(file, "", "expected a mapping at the top level")])
    raw, unset = interpolated(raw, file, problems)
    settings, invalid = _validate_settings(raw, file, unset, problems)
    settings._path = cfg_path
    if "registry" not in invalid:
        settings._registry = load_registry(settings, problems)
    _check_keys(settings, host or settings.listen.host, problems)
    problems.extend(worker_problems(settings, settings.server.workers))
    env_secret = os.environ.get(SECRET_ENV)
    if settings.secret is None and env_secret and len(env_secret.encode()) < 32:
        problems.append(Problem(SECRET_ENV, "", "the gateway secret must be at least 32 bytes"))
    if "signing" not in invalid and settings.signing.keys:
        # PyJWT and cryptography only when there are PEMs to read (the audit worker reads settings too)
        from agentgw.identity.signing import load_keys

        try:
            load_keys(settings.signing, settings.base_dir)
        except ValueError as exc:
            where, _, what = str(exc).partition(": ")
            problems.append(Problem(file, where, what))
    if settings.policies is not None:
        for key in ("model", "policy"):
            p = settings.resolve(getattr(settings.policies, key))
            if not p.is_file():
                problems.append(Problem(file, f"policies.{key}", f"file not found: {p}"))
    if problems:
        raise ConfigError(problems)
    return settings


def roles_of(path: str | os.PathLike[str]) -> set[str]:
    """The role names the config at `path` uses (admin and metrics roles, its keys' roles, the `role:` names of
    its policy file), read without validating the rest: `keys create` refuses a subject that takes one."""
    from agentgw.policy import policy_roles

    cfg_path = Path(path).resolve()
    raw = read_yaml(cfg_path, [])
    top: dict[str, Any] = raw if isinstance(raw, dict) else {}
    auth, metrics, policies = (_section(top, name) for name in ("auth", "metrics", "policies"))
    roles = set(_names(auth.get("admin_roles", ["admins"]))) | set(_names(metrics.get("roles")))
    roles |= set(_names(_section(top, "approvals").get("approver_roles", ["approvers"])))
    roles |= set(_names(auth.get("auditor_roles", ["auditors"])))
    for key in auth.get("api_keys") or []:
        if isinstance(key, dict):
            roles.update(_names(key.get("roles")))
    policy = Path(str(policies.get("policy") or Policies().policy))
    with contextlib.suppress(OSError, UnicodeDecodeError):  # no readable policy yet: nothing to collide with
        roles |= policy_roles(policy if policy.is_absolute() else cfg_path.parent / policy)
    return roles


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    return value if isinstance(value, dict) else {}


def _names(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def keys_file_of(path: str | os.PathLike[str]) -> Path:
    """Where `agentgw keys create` stores hashes: `auth.keys_file` of the config at `path` (default keys.yaml
    beside it). Reads only the `auth` section, so creating a key needs no provider secrets in the environment."""
    cfg_path = Path(path).resolve()
    problems: list[Problem] = []
    raw = read_yaml(cfg_path, problems)
    auth = raw.get("auth") if isinstance(raw, dict) else None
    if raw is not None and not isinstance(raw, dict):
        problems.append(Problem(str(cfg_path), "", "expected a mapping at the top level"))
    keys_file = "keys.yaml"
    if auth is not None:
        auth, unset = interpolated(auth, str(cfg_path), problems, ("auth",))
        try:
            keys_file = Auth.model_validate(auth).keys_file
        except ValidationError as err:
            add_problems(problems, validation_problems(str(cfg_path), err, ("auth",)), unset)
    if problems:
        raise ConfigError(problems)
    p = Path(keys_file)
    return p if p.is_absolute() else cfg_path.parent / p
