"""What the budget stage reads from a client and tells it: the x-agentgw-budget-* headers that lower a task's
limits, the x-agentgw-budget-remaining-* headers, and the budget errors (status, stable code, error type)."""

from __future__ import annotations

import math

from agentgw.budget.config import BudgetRule
from agentgw.budget.ledger import Amount
from agentgw.errors import BadRequest, GatewayError

LOWER_HEADERS = {
    "tokens": "x-agentgw-budget-tokens",
    "tool_calls": "x-agentgw-budget-tool-calls",
    "agent_calls": "x-agentgw-budget-agent-calls",
    "usd": "x-agentgw-budget-usd",
}
LOWERING = frozenset(LOWER_HEADERS.values())
REMAINING_HEADERS = {
    "tokens": "x-agentgw-budget-remaining-tokens",
    "tool_calls": "x-agentgw-budget-remaining-tool-calls",
    "agent_calls": "x-agentgw-budget-remaining-agent-calls",
    "usd_micros": "x-agentgw-budget-remaining-usd",
}


class BudgetExhausted(GatewayError):
    status, code, type = 429, "budget_exhausted", "insufficient_quota"


class RateLimited(GatewayError):
    status, code, type = 429, "rate_limited", "rate_limit_error"


class TaskParentLoop(BadRequest):
    code = "task_parent_loop"


class TaskTooDeep(BadRequest):
    code = "task_too_deep"


class BudgetUnavailable(GatewayError):
    status, code, type = 503, "budget_unavailable", "api_error"


def _usd_header(micros: int) -> str:
    return f"{micros / 1_000_000:.6f}"


def remaining_headers(remaining: dict[str, int]) -> dict[str, str]:
    out: dict[str, str] = {}
    for metric, left in remaining.items():
        name = REMAINING_HEADERS.get(metric)
        if name:
            out[name] = _usd_header(left) if metric == "usd_micros" else str(left)
    return out


def lowered_limits(rule: BudgetRule, headers: dict[str, str]) -> Amount:
    """The rule's task limits, lowered (never raised) by the client's x-agentgw-budget-* headers."""
    out: Amount = {}
    base = {
        "tokens": rule.task.tokens,
        "tool_calls": rule.task.tool_calls,
        "agent_calls": rule.task.agent_calls,
        "usd": rule.task.usd,
    }
    for metric, configured in base.items():
        asked: float | None = None
        raw = headers.get(LOWER_HEADERS[metric])
        if raw is not None:
            try:
                asked = float(raw)
            except ValueError:
                raise GatewayError(
                    f"{LOWER_HEADERS[metric]} must be a number.", status=400, code="invalid_budget_header"
                ) from None
            if not math.isfinite(asked) or asked < 0:
                raise GatewayError(
                    f"{LOWER_HEADERS[metric]} must be a non-negative number.",
                    status=400,
                    code="invalid_budget_header",
                )
        values = [v for v in (configured, asked) if v is not None]
        if not values:
            continue
        value = min(values)
        if metric == "usd":
            out["usd_micros"] = int(value * 1_000_000)
        else:
            out[metric] = int(value)
    return out
