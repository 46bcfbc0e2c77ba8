"""What a call costs in budget terms: the estimate reserved before it (prompt tokens counted, output bounded), what
it really cost after (provider usage, or one tool or agent call), and the principal's rate windows it counts in.
Pure functions over an Exchange; the budget stage (agentgw/stages/budget.py) decides what to do with them."""

from __future__ import annotations

import math

from agentgw.budget.config import BudgetRule
from agentgw.budget.ledger import Amount, Window, key_part
from agentgw.errors import UpstreamInvalidResponse
from agentgw.exchange import Exchange, Principal
from agentgw.registry import Pricing
from agentgw.tokens import count_messages, count_tokens

# The A2A operations that delegate (one `agent_calls` unit and a child task each); reads and cancels are free.
A2A_SENDS = frozenset({"SendMessage", "SendStreamingMessage"})


def estimate(
    ex: Exchange, rule: BudgetRule, price: Pricing | None, tool_cost: int, guess_out: int
) -> tuple[Amount, str | None, int, int | None]:
    """What to reserve; whether to take what is left of a metric instead, and then at most how much; and the
    prompt's weighted tokens. A chat call without max_tokens reserves its prompt and a bounded estimate of its
    output (`guess_out`: the model's max_output_tokens, else default_max_tokens), or what is left if that is less
    (at least one output token): parallel calls share the task instead of the first taking it all."""
    payload = ex.payload or {}
    if ex.plane == "llm":
        if ex.operation == "embeddings":
            inp = payload.get("input")
            texts = inp if isinstance(inp, list) else [inp]
            prompt = sum(count_tokens(t) if isinstance(t, str) else 1 for t in texts)
            out = 0
        else:
            known = ex.attrs.get("prompt_tokens")  # counted by a routing rule, if the messages are unchanged
            if known is not None and known[0] is payload.get("messages"):
                prompt = known[1]
            else:
                prompt = count_messages(payload.get("messages"), payload.get("tools"))
            mt = payload.get("max_completion_tokens") or payload.get("max_tokens")
            out = mt if isinstance(mt, int) and mt > 0 else 0
        w = rule.weights
        weighted_prompt = math.ceil(prompt * w.input)
        amount: Amount = {"tokens": weighted_prompt + math.ceil(out * w.output)}
        bounded = ex.operation == "chat" and out == 0
        guess = guess_out if bounded else out
        if price is not None and rule.task.usd is not None:
            amount["usd_micros"] = math.ceil(prompt * price.input_per_mtok + guess * price.output_per_mtok)
        if bounded and rule.task.tokens is not None:
            amount["tokens"] = weighted_prompt + 1  # at least one output token must be affordable
            return amount, "tokens", weighted_prompt, weighted_prompt + math.ceil(guess * w.output)
        return amount, None, weighted_prompt, None
    if ex.plane == "mcp":
        if ex.operation == "tools/call":
            return ({"tool_calls": 1, **({"tokens": tool_cost} if tool_cost else {})}), None, 0, None
        return {}, None, 0, None
    if ex.plane == "a2a":
        return ({"agent_calls": 1}, None, 0, None) if ex.operation in A2A_SENDS else ({}, None, 0, None)
    return {}, None, 0, None


def actual(ex: Exchange, rule: BudgetRule, price: Pricing | None, tool_cost: int) -> Amount:
    """What the call really cost: provider usage (or the estimate of what was delivered); a tool or agent call
    counts once it reached the upstream and answered something readable."""
    if ex.plane == "llm":
        u = ex.usage
        if u is None or (ex.error is not None and u.output_tokens == 0 and not ex.result):
            return {}
        w = rule.weights
        out: Amount = {"tokens": math.ceil(u.input_tokens * w.input + u.output_tokens * w.output)}
        if price is not None:
            out["usd_micros"] = math.ceil(
                u.input_tokens * price.input_per_mtok + u.output_tokens * price.output_per_mtok
            )
        return out
    if not ex.attempts:  # refused before any upstream was asked
        return {}
    if isinstance(ex.error, UpstreamInvalidResponse):  # no usable answer came back: nothing delivered
        return {}
    if ex.plane == "mcp" and ex.operation == "tools/call":
        return {"tool_calls": 1, **({"tokens": tool_cost} if tool_cost else {})}
    if ex.plane == "a2a" and ex.operation in A2A_SENDS:
        return {"agent_calls": 1}
    return {}


def windows(p: Principal, rule: BudgetRule, tokens: int, requests: bool = True) -> list[Window]:
    """The principal's rate windows this call counts in (its estimated tokens for the token windows; a stream's
    top-up counts in the token windows only)."""
    w, who = rule.windows, key_part(p.subject)
    out: list[Window] = []
    if w.requests_per_minute and requests:
        out.append(Window(f"rpm:{who}", 1, w.requests_per_minute, 60))
    if w.tokens_per_minute and tokens:
        out.append(Window(f"tpm:{who}", tokens, w.tokens_per_minute, 60))
    if w.tokens_per_day and tokens:
        out.append(Window(f"tpd:{who}", tokens, w.tokens_per_day, 86400))
    return out


def corrections(p: Principal, rule: BudgetRule, tokens: int) -> list[Window]:
    """Token-window corrections once the real usage is known (`tokens`: actual minus what was counted)."""
    w, who = rule.windows, key_part(p.subject)
    out: list[Window] = []
    if tokens and w.tokens_per_minute:
        out.append(Window(f"tpm:{who}", tokens, 0, 60))
    if tokens and w.tokens_per_day:
        out.append(Window(f"tpd:{who}", tokens, 0, 86400))
    return out
