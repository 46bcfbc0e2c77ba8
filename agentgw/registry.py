"""The tool registry: what exists (LLM providers and model aliases, MCP servers and virtual servers, A2A agents).

Every `registry/*.yaml` file merges into one Registry; names are unique across files. Frozen pydantic models,
validated once at load, never on the request path.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class Frozen(BaseModel):
    # Numbers become strings where strings are expected (`env: {PORT: 9001}`, `model: 3.5`).
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


class Supervised(Frozen):
    """An upstream the gateway may launch and watch (`command:`)."""

    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    # names in `env` whose values are secrets (kept out of audit records, trace output and logs); env names that
    # look like credentials (…KEY, …TOKEN, …SECRET, …PASSWORD) are treated as secrets without being listed
    secret_env: list[str] = Field(default_factory=list)
    cwd: str | None = None

    @model_validator(mode="after")
    def _secret_env_in_env(self) -> Supervised:
        unknown = [n for n in self.secret_env if n not in self.env]
        if unknown:
            raise ValueError(f"secret_env names {', '.join(unknown)}, which env does not set")
        return self


class MockFailure(Frozen):
    status: int = Field(default=500, ge=400, le=599)
    times: int = Field(default=1, ge=1)


class MockOptions(Frozen):
    """In-process deterministic provider behaviour, for the quickstart, examples and tests."""

    replies: list[str] = Field(default_factory=list)  # cycled; empty means echo the last user message
    latency_ms: float = Field(default=0.0, ge=0)  # before the first byte
    chunk_delay_ms: float = Field(default=0.0, ge=0)  # between stream chunks
    chunk_tokens: int = Field(default=1, ge=1)  # tokens per stream chunk
    failures: list[MockFailure] = Field(default_factory=list)  # consumed in order, then success
    embedding_dims: int = Field(default=8, ge=1, le=4096)


class Assertion(Frozen):
    """A gateway-signed JWT about the caller (sub, roles, task; `aud` = this upstream), minted per call."""

    header: str = Field(default="X-Agentgw-Identity", min_length=1)
    scheme: str | None = None  # e.g. "Bearer": the header value is "Bearer <jwt>"; none: the bare JWT
    ttl_s: float = Field(default=60.0, ge=5, le=3600)
    audience: str | None = Field(default=None, min_length=1)  # default: the upstream's URL


class TokenExchange(Frozen):
    """RFC 8693 token exchange at `token_url`: the subject token is a gateway-signed assertion about the caller
    (never the caller's own credential); the access token it returns is sent to the upstream."""

    token_url: HttpUrl
    client_id: str | None = Field(default=None, min_length=1)
    client_secret: str | None = Field(default=None, min_length=1)
    client_auth: Literal["basic", "post"] = "basic"  # client_secret_basic or client_secret_post
    audience: str | None = Field(
        default=None, min_length=1
    )  # the `audience` parameter; default: the upstream URL
    resource: str | None = Field(default=None, min_length=1)  # RFC 8707 `resource`, when the issuer wants one
    scope: str | None = Field(default=None, min_length=1)
    subject_audience: str | None = Field(
        default=None, min_length=1
    )  # the assertion's `aud`; default: token_url
    requested_token_type: str = "urn:ietf:params:oauth:token-type:access_token"
    header: str = Field(default="Authorization", min_length=1)
    scheme: str | None = "Bearer"
    skew_s: float = Field(default=30.0, ge=0)  # a cached token is renewed this long before it expires
    default_ttl_s: float = Field(default=300.0, gt=0)  # cache lifetime when the issuer sends no `expires_in`
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _client(self) -> TokenExchange:
        if self.client_secret is not None and self.client_id is None:
            raise ValueError("client_secret needs client_id")
        return self


class UpstreamIdentity(Frozen):
    """Who the gateway says is calling, per upstream (MCP servers, LLM providers, A2A agents): a signed
    assertion, an exchanged token, or both. The caller's own token is never forwarded."""

    assertion: Assertion | None = None
    token_exchange: TokenExchange | None = None

    @model_validator(mode="after")
    def _one(self) -> UpstreamIdentity:
        if self.assertion is None and self.token_exchange is None:
            raise ValueError("set assertion, token_exchange, or both")
        a, t = self.assertion, self.token_exchange
        if a is not None and t is not None and a.header.lower() == t.header.lower():
            raise ValueError("assertion and token_exchange must use different headers")
        return self


class Provider(Supervised):
    name: str = Field(pattern=NAME)
    kind: Literal["openai", "azure", "anthropic", "gemini", "bedrock", "mock"]
    base_url: HttpUrl | None = None
    api_key: str | None = None
    api_version: str | None = None  # azure: ?api-version=…; anthropic: anthropic-version header
    # bedrock: the AWS region and credentials SigV4 signs with (api_key is not used); see docs/llm.md#bedrock
    region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0)  # whole request (non-streaming) / first byte (streaming)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    mock: MockOptions | None = None
    identity: UpstreamIdentity | None = None  # kinds openai and azure (see docs/identity.md)
    # kind openai: the upstream serves `POST /responses` itself; Responses requests are passed through to it
    # when nothing needs to read or change them (docs/llm.md#passthrough)
    responses_api: bool = False

    @model_validator(mode="after")
    def _needs(self) -> Provider:
        if self.kind in ("openai", "azure") and not self.base_url:
            raise ValueError(f"provider kind {self.kind!r} needs base_url")
        if self.kind != "mock" and self.mock is not None:
            raise ValueError("mock options are only for kind: mock")
        if self.kind == "azure" and not self.api_version:
            raise ValueError("provider kind 'azure' needs api_version")
        if self.identity is not None and self.kind not in ("openai", "azure"):
            raise ValueError("identity is for provider kinds openai and azure")
        if self.responses_api and self.kind != "openai":
            raise ValueError("responses_api is for provider kind openai")
        if self.kind == "bedrock" and not self.region:
            raise ValueError("provider kind 'bedrock' needs region")
        aws = (self.region, self.aws_access_key_id, self.aws_secret_access_key, self.aws_session_token)
        if bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            raise ValueError("aws_access_key_id and aws_secret_access_key go together")
        if self.kind != "bedrock" and any(aws):
            raise ValueError("region and aws_* credentials are only for kind: bedrock")
        return self


class Target(Frozen):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)  # the upstream's model name
    weight: float = Field(default=1.0, gt=0)  # strategy weighted: its share of the calls
    rpm: int | None = Field(
        default=None, ge=1
    )  # at most this many calls a minute: at its limit it is skipped
    tpm: int | None = Field(default=None, ge=1)  # at most this many tokens a minute (as for rpm)
    # USD per million tokens at this target (strategy cost): the cheapest first
    cost_per_mtok: float | None = Field(default=None, ge=0)


class Retry(Frozen):
    attempts: int = Field(default=2, ge=1, le=10)  # tries per target before failing over
    backoff_ms: float = Field(default=100.0, ge=0)
    max_backoff_ms: float = Field(default=2000.0, ge=0)


class Pricing(Frozen):
    """USD per million tokens, for task budgets in USD and the cost in audit records."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)


class RouteWhen(Frozen):
    """What a request must show for its route to apply (all that are set; none set: every request)."""

    min_prompt_tokens: int | None = Field(
        default=None, ge=0
    )  # the prompt as the gateway counts it (tiktoken)
    max_prompt_tokens: int | None = Field(default=None, ge=0)
    roles: list[str] = Field(default_factory=list)  # the caller has any of these roles
    headers: dict[str, str] = Field(
        default_factory=dict
    )  # request header (lower-case name) → glob of its value
    metadata: dict[str, str] = Field(default_factory=dict)  # the request's `metadata` key → glob of its value


class Route(Frozen):
    """A content rule of a model alias: a request that matches `when` is served by model alias `model` (priced,
    budgeted, cached and recorded as that model). The first matching route wins."""

    when: RouteWhen = Field(default_factory=RouteWhen)
    model: str = Field(pattern=NAME)


class Model(Frozen):
    name: str = Field(pattern=NAME)
    pricing: Pricing | None = None
    # The most output tokens a call may produce: what a budgeted call without max_tokens reserves for its output
    # (else budgets.default_max_tokens), and a stream's top-up step. The gateway does not cut a stream there: the
    # model stops itself (one that goes on is topped up from the task, and cut only when the task runs out).
    max_output_tokens: int | None = Field(default=None, ge=1)
    # Its own deployments; may be empty when `routes` ends with a rule without `when` (a pure router alias).
    targets: list[Target] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)  # content rules, before its own targets: docs/llm.md
    # Which target a call tries first (the others follow, in that order, as failover): docs/llm.md#routing
    strategy: Literal["failover", "weighted", "round_robin", "least_latency", "least_busy", "cost"] = (
        "failover"
    )
    retry: Retry | None = None  # falls back to the gateway-wide default
    description: str | None = None
    type: Literal["chat", "embeddings"] | None = None  # informational; listed in /v1/models


class LLMSection(Frozen):
    providers: list[Provider] = Field(default_factory=list)
    models: list[Model] = Field(default_factory=list)

    @model_validator(mode="after")
    def _routes(self) -> LLMSection:
        by_name = {m.name: m for m in self.models}
        for m in self.models:
            catch_all = bool(m.routes) and m.routes[-1].when == RouteWhen()
            if not m.targets and not catch_all:
                raise ValueError(f"model {m.name!r} needs targets, or routes ending with one without `when`")
            for r in m.routes:
                to = by_name.get(r.model)
                if to is None:
                    raise ValueError(f"model {m.name!r} routes to unknown model {r.model!r}")
                if to.routes:  # one hop: what a call is priced and recorded as is never itself a router
                    raise ValueError(f"model {m.name!r} routes to {r.model!r}, which has routes of its own")
        return self


class ToolTrim(Frozen):
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    descriptions: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, list[str]] = Field(default_factory=dict)
    costs: dict[str, int] = Field(default_factory=dict)  # extra budget tokens charged per call of a tool


class MCPServer(Supervised):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # no '_' runs: `__` separates server and tool
    transport: Literal["stdio", "streamable-http", "sse"] = "streamable-http"
    url: HttpUrl | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0)
    tools: ToolTrim = Field(default_factory=ToolTrim)
    identity: UpstreamIdentity | None = None  # HTTP transports (see docs/identity.md)
    # Whose upstream session a call uses (docs/mcp.md): `principal` (one per caller principal; a stdio server: one
    # process per principal), or `shared` (one for every caller: only for servers that keep no per-client state).
    session_scope: Literal["principal", "shared"] = "principal"
    max_sessions: int = Field(default=64, ge=1)  # principal scope: sessions (stdio: processes) open at once
    session_idle_timeout_s: float = Field(default=300.0, gt=0)  # principal scope: unused this long, closed

    @model_validator(mode="after")
    def _needs(self) -> MCPServer:
        if self.transport == "stdio" and not self.command:
            raise ValueError("transport stdio needs command")
        if self.transport == "stdio" and self.identity is not None:
            raise ValueError("identity needs an HTTP transport (a stdio server has no request headers)")
        if self.transport != "stdio" and not self.url:
            raise ValueError(f"transport {self.transport} needs url")
        return self


class VirtualServer(Frozen):
    name: str = Field(pattern=NAME)
    tools: list[str] = Field(min_length=1)
    prefix: Literal["always", "never", "conditional"] = "always"


class MCPSection(Frozen):
    servers: list[MCPServer] = Field(default_factory=list)
    virtual_servers: list[VirtualServer] = Field(default_factory=list)


class Agent(Supervised):
    name: str = Field(pattern=NAME)
    url: HttpUrl  # the agent's base URL: its card is at <url>/.well-known/agent-card.json
    headers: dict[str, str] = Field(
        default_factory=dict
    )  # sent on every request (credentials the agent wants)
    timeout_s: float = Field(
        default=300.0, gt=0
    )  # a unary call's whole time (streams are bounded by the client)
    identity: UpstreamIdentity | None = None  # who the gateway says is calling (see docs/identity.md)
    description: str | None = None  # shown in the directory when the agent's card cannot be fetched


class A2ASection(Frozen):
    agents: list[Agent] = Field(default_factory=list)


class Registry(Frozen):
    llm: LLMSection = Field(default_factory=LLMSection)
    mcp: MCPSection = Field(default_factory=MCPSection)
    a2a: A2ASection = Field(default_factory=A2ASection)

    def provider(self, name: str) -> Provider | None:
        return next((p for p in self.llm.providers if p.name == name), None)

    def supervised(self) -> list[tuple[str, Supervised]]:
        """Every entry with a `command:` that is not a stdio MCP server (those are owned by the MCP plane)."""
        out: list[tuple[str, Supervised]] = []
        for p in self.llm.providers:
            if p.command:
                out.append((f"llm:{p.name}", p))
        for s in self.mcp.servers:
            if s.command and s.transport != "stdio":
                out.append((f"mcp:{s.name}", s))
        for a in self.a2a.agents:
            if a.command:
                out.append((f"a2a:{a.name}", a))
        return out
