"""The `budgets:` section of agentgw.yaml: ledger backend, and the rules that give a principal's tasks their
limits and rate windows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BudgetMatch(Frozen):
    subjects: list[str] = Field(default_factory=list)  # any of these principals (empty: any)
    roles: list[str] = Field(default_factory=list)  # or any principal with one of these roles (empty: any)


class TaskLimits(Frozen):
    """What one task may spend. Absent: unlimited."""

    tokens: int | None = Field(default=None, ge=0)  # input + output tokens, weighted by `weights`
    tool_calls: int | None = Field(default=None, ge=0)
    agent_calls: int | None = Field(default=None, ge=0)
    usd: float | None = Field(default=None, ge=0)  # priced from the registry's model pricing


class TokenWeights(Frozen):
    input: float = Field(default=1.0, ge=0)
    output: float = Field(default=1.0, ge=0)


class Windows(Frozen):
    """Per-principal rate limits (fixed windows)."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)


class BudgetRule(Frozen):
    match: BudgetMatch = Field(default_factory=BudgetMatch)
    task: TaskLimits = Field(default_factory=TaskLimits)
    weights: TokenWeights = Field(default_factory=TokenWeights)
    windows: Windows = Field(default_factory=Windows)


class Budgets(Frozen):
    ledger: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "agentgw"
    on_ledger_error: Literal["fail_closed", "fail_open"] = "fail_closed"
    task_ttl_s: int = Field(default=7 * 86400, ge=60)
    # Output tokens a chat call without max_tokens reserves when its model sets no max_output_tokens, and what a
    # stream that uses them up tops its reservation up by (from the task); either is charged what it really used.
    default_max_tokens: int = Field(default=512, ge=1)
    # How far below its root a task may sit (parent chains): every reserve and settle touches the task and all its
    # ancestors, so this bounds the work one call can cause.
    max_task_depth: int = Field(default=16, ge=1)
    rules: list[BudgetRule] = Field(default_factory=list)  # the first rule that matches the principal applies
