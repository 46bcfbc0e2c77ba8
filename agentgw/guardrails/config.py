"""The `guardrails:` section of agentgw.yaml: named guards (what to look for and what to do), the rules that apply
them by plane, direction, target and role, and the system prompts the gateway adds to LLM requests."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GuardType = Literal["sensitive_data", "secrets", "prompt_injection", "content", "http"]
Action = Literal["block", "mask", "pseudonymize", "warn"]
PlaneName = Literal["llm", "mcp", "a2a"]
GUARD_TYPES: tuple[str, ...] = ("sensitive_data", "secrets", "prompt_injection", "content", "http")
PLANES: tuple[PlaneName, ...] = ("llm", "mcp", "a2a")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuardSpec(_Frozen):
    """One named guard. `type` defaults to the guard's name (`sensitive-data` is a `sensitive_data` guard), so
    the common guards need nothing but an action. Only the keys of the guard's type apply."""

    type: GuardType | None = None
    action: Action = "block"
    # sensitive_data: built-in kinds to look for (default all) and custom patterns (name: regex)
    entities: list[str] | None = None
    patterns: dict[str, str] = Field(default_factory=dict)
    # secrets: kinds to look for (default all), and the high-entropy token heuristic
    kinds: list[str] | None = None
    entropy: bool = True
    # prompt_injection: the score at which it acts; hosts markdown images and links may point at
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    allow_hosts: list[str] = Field(default_factory=list)
    # content: deny words and phrases (whole words over normalised text) and named regexes
    deny: list[str] = Field(default_factory=list)
    regex: dict[str, str] = Field(default_factory=dict)
    leetspeak: bool = True
    # http: an external classifier
    url: str | None = None
    api: Literal["openai_moderation", "custom"] = "openai_moderation"
    model: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    categories: list[str] | None = None
    score: float | None = Field(default=None, ge=0.0, le=1.0)  # flag on any category score at or above this
    timeout_s: float = Field(default=2.0, gt=0)
    fail: Literal["open", "closed"] = "closed"


def guard_type(name: str, spec: GuardSpec) -> str:
    return spec.type or name.replace("-", "_")


class GuardRule(_Frozen):
    """Which guards apply where: every listed plane (default all), direction, target glob (`llm:*`,
    `mcp:docs/*`, `a2a:planner`) and role (empty: every caller)."""

    guards: list[str] = Field(min_length=1)
    planes: list[PlaneName] = Field(default_factory=lambda: list(PLANES))
    direction: Literal["request", "response", "both"] = "both"
    targets: list[str] = Field(default_factory=lambda: ["*"])
    roles: list[str] = Field(default_factory=list)


class SystemPrompt(_Frozen):
    """A system prompt the gateway adds to chat requests of matching models and callers. `text` is a template:
    `{principal.sub}`, `{principal.roles}`, `{claims.NAME}`, `{date}`, `{model}`, `{task}` (a missing claim is
    empty). `lock`: the caller's own system messages are refused (400 `system_prompt_locked`), so a client
    cannot override it."""

    text: str = Field(min_length=1)
    models: list[str] = Field(default_factory=lambda: ["*"])
    roles: list[str] = Field(default_factory=list)
    position: Literal["prepend", "append"] = "prepend"
    lock: bool = False


class GuardrailSettings(_Frozen):
    guards: dict[str, GuardSpec] = Field(default_factory=dict)
    rules: list[GuardRule] = Field(default_factory=list)
    prompts: list[SystemPrompt] = Field(default_factory=list)
    # streams are checked over a sliding window: this many characters are held back per stream, so a value up
    # to this long is never split across a mask (nor sent before a block)
    window: int = Field(default=128, ge=16, le=65536)

    @property
    def active(self) -> bool:
        """Whether any guard or system prompt can apply (else the gateway builds no guard stage at all)."""
        return bool(self.rules) or bool(self.prompts)

    @model_validator(mode="after")
    def _check(self) -> GuardrailSettings:
        for name, spec in self.guards.items():
            kind = guard_type(name, spec)
            if kind not in GUARD_TYPES:
                raise ValueError(
                    f"guardrails.guards.{name}: unknown guard type {kind!r}: set `type:` to one of "
                    f"{', '.join(GUARD_TYPES)}"
                )
            if kind == "http" and not spec.url:
                raise ValueError(f"guardrails.guards.{name}: an http guard needs `url:`")
            if kind in ("http", "prompt_injection") and spec.action in ("mask", "pseudonymize"):
                raise ValueError(
                    f"guardrails.guards.{name}: a {kind} guard can block or warn, not {spec.action}"
                )
            if kind == "content" and not (spec.deny or spec.regex):
                raise ValueError(f"guardrails.guards.{name}: a content guard needs `deny:` or `regex:`")
        for i, rule in enumerate(self.rules):
            unknown = [g for g in rule.guards if g not in self.guards]
            if unknown:
                raise ValueError(f"guardrails.rules[{i}] names undefined guards {unknown}")
        return self
