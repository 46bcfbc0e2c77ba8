"""Budgets: can this task (and every task above it) afford this call, and is the principal within its rate
windows? Reserves an estimate before the call, meters streams as they flow, settles with the real usage after
(or releases on failure).

Fails with 429 `budget_exhausted` (a task limit) or `rate_limited` (a window, with Retry-After), each with
`x-agentgw-budget-remaining-*` headers; with the ledger unreachable, 503 `budget_unavailable` (fail closed,
configurable to fail open). A stream that runs out ends cleanly (the plane's own end: for chat completions a
final chunk with finish_reason "length", then [DONE]), at most one chunk past the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from dataclasses import dataclass, field

from agentgw.budget.config import BudgetRule, Budgets
from agentgw.budget.ledger import Amount, Ledger, NotSent, Rejection, Throttled, Window
from agentgw.errors import GatewayError, UpstreamInvalidResponse
from agentgw.exchange import Exchange, Principal
from agentgw.pipeline import Stage, StopStream
from agentgw.registry import Pricing
from agentgw.tokens import count_messages, count_tokens

log = logging.getLogger("agentgw.budget")

CHILD_PREFIX = "c-"
CHAIN_CACHE = 100_000  # task chains kept in process (each a few hundred bytes)
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


@dataclass(slots=True)
class _Held:
    """What a call reserved, kept on the Exchange until it settles."""

    chain: list[str]
    reserved: Amount
    rule: BudgetRule
    counted: int  # tokens counted in the token windows (the estimate), corrected when the call settles


@dataclass(slots=True)
class _Pending:
    """A ledger write that failed (Redis unreachable) and is retried until it lands."""

    chain: list[str]
    reserved: Amount
    actual: Amount
    op: str
    undo: bool = False  # give back a reservation whose reply was lost
    windows: list[Window] = field(default_factory=list)
    forget: bool = False


class BudgetStage(Stage):
    name = "budget"

    def __init__(
        self, cfg: Budgets, ledger: Ledger, pricing: dict[str, Pricing], tool_costs: dict[str, int]
    ) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.pricing = pricing  # llm:<model> → price
        self.tool_costs = tool_costs  # mcp:<server>/<tool> → extra tokens per call
        self._rules: dict[tuple[str, tuple[str, ...]], BudgetRule | None] = {}
        self._limits: dict[int, Amount] = {}  # id(rule) → its unlowered limits (rules live as long as this)
        self._chains: dict[str, list[str]] = {}  # task key → its ancestors (immutable once the task exists)
        self.pending: list[_Pending] = []  # settlements (and undos) waiting for the ledger
        self._retry_task: asyncio.Task[None] | None = None

    # -- what applies -------------------------------------------------------------------------------------------

    @staticmethod
    def task_key(task_id: str, principal: str | None) -> str | None:
        """The ledger key of a task as an operator names it (child ids are global, others per principal)."""
        if task_id.startswith(CHILD_PREFIX):
            return f"~child/{task_id}"
        return f"{principal}/{task_id}" if principal else None

    def rule_for(self, p: Principal) -> BudgetRule | None:
        key = (p.subject, p.roles)
        if key not in self._rules:
            self._rules[key] = next(
                (
                    r
                    for r in self.cfg.rules
                    if (not r.match.subjects or p.subject in r.match.subjects)
                    and (not r.match.roles or set(r.match.roles) & set(p.roles))
                ),
                None,
            )
        return self._rules[key]

    def task_limits(self, rule: BudgetRule, headers: dict[str, str]) -> Amount:
        """`limits`, computed once per rule for the usual request that lowers nothing (it is on every call)."""
        if not LOWERING.intersection(headers):
            cached = self._limits.get(id(rule))
            if cached is None:
                cached = self._limits[id(rule)] = self.limits(rule, {})
            return cached
        return self.limits(rule, headers)

    @staticmethod
    def limits(rule: BudgetRule, headers: dict[str, str]) -> Amount:
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

    async def chain(self, ex: Exchange, p: Principal) -> list[str]:
        """The task's ledger key, then its ancestors'. Client task ids are scoped to the principal (another
        principal using the same id gets its own task); ids the gateway minted for delegation are global."""
        assert ex.task is not None
        tid = ex.task.task_id
        if tid.startswith(CHILD_PREFIX):
            key = f"~child/{tid}"  # = task_key(tid, …)
            known = await self._ancestors(key)
            if known is not None:
                return [key, *known]
        key = f"{p.subject}/{tid}"
        parent = ex.task.parent_task_id
        if parent:
            pkey = f"{p.subject}/{parent}"
            return [key, pkey, *(await self._ancestors(pkey) or [])]
        return [key]

    async def _ancestors(self, key: str) -> list[str] | None:
        """A task's ancestors: from the cache, else one ledger read (None: the ledger has no such task)."""
        known = self._chains.get(key)
        if known is None:
            st = await self.ledger.state(key)
            if st is None:
                return None
            self._remember(key, st.chain)
            known = st.chain
        return known

    def estimate(self, ex: Exchange, rule: BudgetRule) -> tuple[Amount, str | None, int]:
        """What to reserve, whether to take the rest of a metric instead, and the prompt's weighted tokens."""
        payload = ex.payload or {}
        if ex.plane == "llm":
            if ex.operation == "embeddings":
                inp = payload.get("input")
                texts = inp if isinstance(inp, list) else [inp]
                prompt = sum(count_tokens(t) if isinstance(t, str) else 1 for t in texts)
                out = 0
            else:
                prompt = count_messages(payload.get("messages"), payload.get("tools"))
                mt = payload.get("max_completion_tokens") or payload.get("max_tokens")
                out = mt if isinstance(mt, int) and mt > 0 else 0
            w = rule.weights
            weighted_prompt = math.ceil(prompt * w.input)
            amount: Amount = {"tokens": weighted_prompt + math.ceil(out * w.output)}
            price = self.pricing.get(ex.target)
            if price is not None and rule.task.usd is not None:
                amount["usd_micros"] = math.ceil(
                    prompt * price.input_per_mtok + (out or 1024) * price.output_per_mtok
                )
            rest = "tokens" if ex.operation == "chat" and out == 0 and rule.task.tokens is not None else None
            if rest:
                amount["tokens"] = weighted_prompt + 1  # at least one output token must be affordable
            return amount, rest, weighted_prompt
        if ex.plane == "mcp":
            if ex.operation == "tools/call":
                extra = self.tool_costs.get(ex.target, 0)
                return ({"tool_calls": 1, **({"tokens": extra} if extra else {})}), None, 0
            return {}, None, 0
        if ex.plane == "a2a":
            return {"agent_calls": 1}, None, 0
        return {}, None, 0

    # -- hooks --------------------------------------------------------------------------------------------------

    async def on_request(self, exchange: Exchange) -> None:
        p = exchange.principal
        if not self.cfg.rules or p is None or exchange.attrs.get("listing") or exchange.task is None:
            return
        rule = self.rule_for(p)
        if rule is None:
            return
        amount, rest, prompt = self.estimate(exchange, rule)
        windows = self.windows(p, rule, amount.get("tokens", 0))
        if not amount and not windows:  # costs nothing, counts nowhere: no ledger round trip
            return
        limits = self.task_limits(rule, exchange.headers)
        delegates = bool(amount) and (exchange.operation == "tools/call" or exchange.plane == "a2a")
        # A fresh task id for the upstream this call delegates to, opened with the reservation: a downstream
        # agent calling back through the gateway with it charges that child task and every ancestor.
        # Unguessable: it is a capability.
        child = CHILD_PREFIX + secrets.token_hex(12) if delegates else None
        op = f"{exchange.task.trace_id}{exchange.span_id}"
        chain: list[str] = []
        sent = False  # whether a reservation may have reached the ledger (and so may need undoing)
        try:
            chain = await self.chain(exchange, p) if amount else []
            sent = bool(chain)
            got = await self.ledger.reserve(
                chain, amount, limits, rest, op, windows, child=f"~child/{child}" if child else None
            )
        except GatewayError:
            raise
        except BaseException as exc:
            # A reservation whose reply was lost (Redis failing, or the client gone mid-call) may have been
            # made: undo it once the ledger answers again. One that never left the process needs nothing.
            if sent and not isinstance(exc, NotSent):
                self._later(_Pending(chain, {}, {}, op, undo=True))
            if not isinstance(exc, Exception):
                raise
            if self.cfg.on_ledger_error == "fail_open":
                exchange.decide(
                    self.name, "allow", rule="ledger unavailable: fail_open", detail=type(exc).__name__
                )
                return
            exchange.decide(
                self.name, "deny", rule="ledger unavailable: fail_closed", detail=type(exc).__name__
            )
            raise BudgetUnavailable("The budget ledger is unavailable; the call was refused.") from None
        if isinstance(got, Throttled):
            name = got.window.key.split(":")[0]
            exchange.decide(self.name, "deny", rule=f"window {name} {got.window.limit}")
            raise RateLimited(
                f"Rate limit reached ({name}: {got.window.limit}); retry in {math.ceil(got.retry_after)} s.",
                headers={"Retry-After": str(max(1, math.ceil(got.retry_after)))},
            )
        if isinstance(got, Rejection):
            left = max(0, got.limit - got.spent - got.reserved)
            headers = remaining_headers({got.metric: left})
            exchange.decide(
                self.name,
                "deny",
                rule=f"task {got.task}: {got.metric} limit {got.limit}",
                detail=f"spent {got.spent}, reserved {got.reserved}, asked {got.asked}",
            )
            who = "this task" if got.task == chain[0] else "a parent task"
            raise BudgetExhausted(
                f"The budget of {who} is exhausted ({got.metric}: {left} left, {got.asked} needed).",
                headers=headers,
            )
        if not amount:  # only windows were counted
            exchange.decide(self.name, "allow", rule="windows")
            return
        exchange.attrs["budget"] = _Held(chain, got.amount, rule, amount.get("tokens", 0))
        exchange.attrs["reply_headers"] = remaining_headers(got.remaining)
        exchange.decide(self.name, "allow", rule=f"task {chain[0]}", detail=_fmt(got.amount))
        if exchange.plane == "llm" and exchange.operation == "chat" and rule.task.tokens is not None:
            allowed = (got.amount.get("tokens", 0) - prompt) / (rule.weights.output or 1.0)
            exchange.attrs["stream_budget"] = max(0, math.floor(allowed))
        if child is not None:
            exchange.attrs["child_task"] = child
            self._remember(f"~child/{child}", chain)

    def _remember(self, key: str, ancestors: list[str]) -> None:
        """Cache a task's ancestors (immutable once the task exists). Bounded: the oldest entry goes first, and
        a forgotten one is read back from the ledger when it is named again."""
        if len(self._chains) >= CHAIN_CACHE:
            del self._chains[next(iter(self._chains))]
        self._chains[key] = list(ancestors)

    async def on_chunk(self, exchange: Exchange, chunk: bytes) -> bytes | None:
        allowed = exchange.attrs.get("stream_budget")
        if allowed is not None and exchange.attrs.get("out_tokens_before", 0) >= allowed:
            tail = exchange.attrs.get("cut_tail")
            exchange.decide(
                self.name,
                "deny",
                rule="stream cut: task budget exhausted",
                detail=f"after {exchange.attrs.get('out_tokens_before', 0)} output tokens",
            )
            raise StopStream("budget_exhausted", tail() if callable(tail) else b"")
        return chunk

    async def on_finish(self, exchange: Exchange) -> None:
        held: _Held | None = exchange.attrs.get("budget")
        if held is None:
            return
        actual = self.actual(exchange, held.rule)
        p = exchange.principal
        corrections = self.corrections(p, held.rule, actual.get("tokens", 0) - held.counted) if p else []
        task = exchange.task
        # A one-request task (no x-agentgw-task) that delegated nothing: no later call can name it.
        forget = (
            task is not None
            and not task.chosen
            and "child_task" not in exchange.attrs
            and len(held.chain) == 1
        )
        op = f"{task.trace_id if task else ''}{exchange.span_id}"
        job = _Pending(held.chain, held.reserved, actual, op, False, corrections, forget)
        try:
            await self._apply(job)
        except Exception as exc:
            # The ledger is unreachable (Redis restarting): keep the settlement and retry it until it lands, so no
            # reservation leaks and nothing is charged twice (a settle is applied exactly once, when it succeeds).
            log.warning(
                "budget of %s not settled yet (%s); retrying in the background",
                held.chain[0],
                type(exc).__name__,
            )
            self._later(job)
            return
        exchange.attrs["budget_charged"] = actual

    async def _apply(self, job: _Pending) -> None:
        if job.undo:
            await self.ledger.undo(job.chain, job.op)
        elif job.actual:
            await self.ledger.settle(job.chain, job.reserved, job.actual, job.op, job.windows, job.forget)
        else:
            await self.ledger.release(job.chain, job.reserved, job.op, job.windows, job.forget)

    def _later(self, job: _Pending) -> None:
        self.pending.append(job)
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        delay = 0.2
        while self.pending:
            await asyncio.sleep(delay)
            while self.pending:
                try:
                    await self._apply(self.pending[0])
                except Exception:
                    delay = min(delay * 2, 5.0)
                    break
                self.pending.pop(0)
                delay = 0.2

    async def flush(self, timeout_s: float = 5.0) -> None:
        """On shutdown: give pending settlements a last chance to land."""
        if self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry(), timeout_s)
        if self.pending:
            log.error(
                "%d budget settlements could not be written; their reservations stay until the tasks expire",
                len(self.pending),
            )

    def actual(self, ex: Exchange, rule: BudgetRule) -> Amount:
        """What the call really cost: provider usage (or the estimate of what was delivered); a tool or agent
        call counts once it reached the upstream and answered something readable."""
        if ex.plane == "llm":
            u = ex.usage
            if u is None or (ex.error is not None and u.output_tokens == 0 and not ex.result):
                return {}
            w = rule.weights
            out: Amount = {"tokens": math.ceil(u.input_tokens * w.input + u.output_tokens * w.output)}
            price = self.pricing.get(ex.target)
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
            extra = self.tool_costs.get(ex.target, 0)
            return {"tool_calls": 1, **({"tokens": extra} if extra else {})}
        if ex.plane == "a2a":
            return {"agent_calls": 1}
        return {}

    @staticmethod
    def windows(p: Principal, rule: BudgetRule, tokens: int) -> list[Window]:
        """The principal's rate windows this call counts in (its estimated tokens for the token windows)."""
        w = rule.windows
        out: list[Window] = []
        if w.requests_per_minute:
            out.append(Window(f"rpm:{p.subject}", 1, w.requests_per_minute, 60))
        if w.tokens_per_minute and tokens:
            out.append(Window(f"tpm:{p.subject}", tokens, w.tokens_per_minute, 60))
        if w.tokens_per_day and tokens:
            out.append(Window(f"tpd:{p.subject}", tokens, w.tokens_per_day, 86400))
        return out

    @staticmethod
    def corrections(p: Principal, rule: BudgetRule, tokens: int) -> list[Window]:
        """Token-window corrections once the real usage is known (`tokens`: actual minus what was counted)."""
        w = rule.windows
        out: list[Window] = []
        if tokens and w.tokens_per_minute:
            out.append(Window(f"tpm:{p.subject}", tokens, 0, 60))
        if tokens and w.tokens_per_day:
            out.append(Window(f"tpd:{p.subject}", tokens, 0, 86400))
        return out


def _fmt(amount: Amount) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(amount.items())) or "nothing"
