"""Budgets: can this task (and every task above it) afford this call, and is the principal within its rate
windows? Reserves an estimate before the call, meters streams as they flow, settles with the real usage after
(or releases on failure).

Fails with 429 `budget_exhausted` (a task limit) or `rate_limited` (a window, with Retry-After), each with
`x-agentgw-budget-remaining-*` headers; 400 `task_parent_loop` when a task names itself or a descendant as parent,
400 `task_too_deep` when it would sit more than `max_task_depth` below its root;
with the ledger unreachable, 503 `budget_unavailable` (fail closed, configurable to fail open). A stream that runs
out ends cleanly (the plane's own end: for chat completions a final chunk with finish_reason "length", then
[DONE]), at most one chunk past the limit. A stream without max_tokens that uses up its reservation is topped up
from the task first (one ledger call per estimate's worth of output), and cut only when the task (or an
ancestor, or a token window) cannot afford more.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import deque
from dataclasses import dataclass

from agentgw.budget import metering
from agentgw.budget.answers import (
    LOWERING,
    BudgetExhausted,
    BudgetUnavailable,
    RateLimited,
    TaskParentLoop,
    TaskTooDeep,
    lowered_limits,
    remaining_headers,
)
from agentgw.budget.config import BudgetRule, Budgets
from agentgw.budget.ledger import (
    Amount,
    Ledger,
    Loop,
    NotSent,
    Rejection,
    Throttled,
    TooDeep,
    child_key,
    task_key,
    too_deep,
)
from agentgw.budget.retry import Pending, RetryQueue
from agentgw.errors import GatewayError
from agentgw.exchange import Exchange, Principal
from agentgw.pipeline import Stage, StopStream
from agentgw.registry import Pricing

log = logging.getLogger("agentgw.budget")

CHILD_PREFIX = "c-"
CHAIN_CACHE = 100_000  # task chains kept in process (each a few hundred bytes)


@dataclass(slots=True)
class _Held:
    """What a call reserved, kept on the Exchange until it settles."""

    chain: list[str]
    reserved: Amount
    rule: BudgetRule
    counted: int  # tokens counted in the token windows (the estimate), corrected when the call settles
    op: str = ""  # the reservation's id in the ledger (its settle and top-ups name it)
    prompt: int = 0  # the prompt's weighted tokens (the rest of `reserved` is for the output)
    step: int = 0  # output tokens a top-up adds when a stream uses up its reservation (0: never topped up)


class BudgetStage(Stage):
    name = "budget"

    def __init__(
        self,
        cfg: Budgets,
        ledger: Ledger,
        pricing: dict[str, Pricing],
        tool_costs: dict[str, int],
        max_output: dict[str, int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.pricing = pricing  # llm:<model> → price
        self.max_output = max_output or {}  # llm:<model> → its max_output_tokens
        self.tool_costs = tool_costs  # mcp:<server>/<tool> → extra tokens per call
        self._rules: dict[tuple[str, tuple[str, ...]], BudgetRule | None] = {}
        self._limits: dict[int, Amount] = {}  # id(rule) → its unlowered limits (rules live as long as this)
        self._chains: dict[str, list[str]] = {}  # task key → its ancestors (immutable once the task exists)
        self.retries = RetryQueue(ledger)  # settlements (and undos) waiting for the ledger
        self._status: dict[str, object] = {"ledger": cfg.ledger, "persistent": None}

    async def start(self) -> None:
        """At start: does the ledger keep spending across a restart of its store? Warn if it may not."""
        persistent, warning = await self.ledger.persistence()
        self._status = {"ledger": self.cfg.ledger, "persistent": persistent}
        if warning:
            self._status["warning"] = warning
            log.warning("budget ledger: %s", warning)

    def status(self) -> dict[str, object]:
        """The `budgets` field of /readyz (informational: a warning never makes the gateway unready)."""
        return dict(self._status)

    # -- what applies -------------------------------------------------------------------------------------------

    @staticmethod
    def task_key(task_id: str, principal: str | None) -> str | None:
        """The ledger key of a task as an operator names it (child ids are global, others per principal)."""
        if task_id.startswith(CHILD_PREFIX):
            return child_key(task_id)
        return task_key(principal, task_id) if principal else None

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

    def limits_for(self, p: Principal, headers: dict[str, str]) -> Amount | None:
        """The task limits that apply to this principal's call (policy conditions read them as `task.limits`,
        before this stage runs), or None without a rule. A bad lowering header is this stage's to refuse."""
        rule = self.rule_for(p)
        if rule is None:
            return None
        try:
            return self.task_limits(rule, headers)
        except GatewayError:
            return None

    @staticmethod
    def limits(rule: BudgetRule, headers: dict[str, str]) -> Amount:
        """The rule's task limits, lowered (never raised) by the client's x-agentgw-budget-* headers."""
        return lowered_limits(rule, headers)

    async def chain(self, ex: Exchange, p: Principal) -> list[str]:
        """The task's ledger key, then its ancestors'. Client task ids are scoped to the principal (another
        principal using the same id gets its own task); ids the gateway minted for delegation are global."""
        assert ex.task is not None
        tid = ex.task.task_id
        if tid.startswith(CHILD_PREFIX):
            key = child_key(tid)
            known = await self._ancestors(key)
            if known is not None:
                return [key, *known]
        key = task_key(p.subject, tid)
        parent = ex.task.parent_task_id
        if parent:
            pkey = task_key(p.subject, parent)
            chain = [key, pkey, *(await self._ancestors(pkey) or [])]
            if key in chain[1:]:  # the ledger refuses it too (atomically, for loops closed by racing calls)
                raise _loop(tid, parent)
            return chain
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

    def estimate(self, ex: Exchange, rule: BudgetRule) -> tuple[Amount, str | None, int, int | None]:
        guess = self.output_estimate(ex) if ex.plane == "llm" and ex.operation == "chat" else 0
        return metering.estimate(
            ex, rule, self.pricing.get(ex.target), self.tool_costs.get(ex.target, 0), guess
        )

    def output_estimate(self, ex: Exchange) -> int:
        """Output tokens a chat call without max_tokens is expected to produce, and a stream's top-up step."""
        return self.max_output.get(ex.target, self.cfg.default_max_tokens)

    # -- hooks --------------------------------------------------------------------------------------------------

    async def on_request(self, exchange: Exchange) -> None:
        p = exchange.principal
        if not self.cfg.rules or p is None or exchange.attrs.get("listing") or exchange.task is None:
            return
        rule = self.rule_for(p)
        if rule is None:
            return
        amount, rest, prompt, most = self.estimate(exchange, rule)
        windows = metering.windows(p, rule, amount.get("tokens", 0))
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
        depth = self.cfg.max_task_depth
        sent = False  # whether a reservation may have reached the ledger (and so may need undoing)
        try:
            chain = await self.chain(exchange, p) if amount else []
            sent = bool(chain)
            # Too deep as the chain was read: refused without a ledger call (the ledger checks it again, atomically,
            # against the ancestors it has recorded).
            got = too_deep(chain, None, depth) or await self.ledger.reserve(
                chain,
                amount,
                limits,
                rest,
                op,
                windows,
                child=child_key(child) if child else None,
                most=most,
                max_depth=depth,
            )
        except TaskParentLoop:
            exchange.decide(
                self.name, "deny", rule=f"task {task_key(p.subject, exchange.task.task_id)}: parent loop"
            )
            raise
        except GatewayError:
            raise
        except BaseException as exc:
            # A reservation whose reply was lost (Redis failing, or the client gone mid-call) may have been
            # made: undo it once the ledger answers again. One that never left the process needs nothing.
            if sent and not isinstance(exc, NotSent):
                self.retries.later(Pending(chain, {}, {}, op, undo=True))
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
        if isinstance(got, TooDeep):
            exchange.decide(
                self.name, "deny", rule=f"task {got.task}: depth {got.depth} > max_task_depth {depth}"
            )
            raise TaskTooDeep(
                f"Task {exchange.task.task_id!r} would sit {got.depth} levels below its root task; at most "
                f"{depth} are allowed."
            )
        if isinstance(got, Loop):
            exchange.decide(self.name, "deny", rule=f"task {got.task}: parent loop")
            raise _loop(exchange.task.task_id, exchange.task.parent_task_id)
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
        held = _Held(chain, dict(got.amount), rule, amount.get("tokens", 0), op, prompt)
        if rest is not None:  # no max_tokens: a stream that uses up the estimate is topped up from the task
            held.step = self.output_estimate(exchange)
        exchange.attrs["budget"] = held
        exchange.attrs["reply_headers"] = remaining_headers(got.remaining)
        exchange.decide(self.name, "allow", rule=f"task {chain[0]}", detail=_fmt(got.amount))
        if exchange.plane == "llm" and exchange.operation == "chat" and rule.task.tokens is not None:
            allowed = (got.amount.get("tokens", 0) - prompt) / (rule.weights.output or 1.0)
            exchange.attrs["stream_budget"] = max(0, math.floor(allowed))
        if child is not None:
            exchange.attrs["child_task"] = child
            self._remember(child_key(child), chain)

    def _remember(self, key: str, ancestors: list[str]) -> None:
        """Cache a task's ancestors (immutable once the task exists). Bounded: the oldest entry goes first, and
        a forgotten one is read back from the ledger when it is named again."""
        if len(self._chains) >= CHAIN_CACHE:
            del self._chains[next(iter(self._chains))]
        self._chains[key] = list(ancestors)

    async def exhausted(self, exchange: Exchange) -> str | None:
        """Whether the task a running stream charges, or an ancestor, has run out of tokens or USD (spent by the
        agent it delegated to, calling back through the gateway): why, else None. A stream that is cut says so."""
        held: _Held | None = exchange.attrs.get("budget")
        if held is None:
            return None
        for key in held.chain:
            try:
                st = await self.ledger.state(key)
            except Exception:  # the ledger is down: the settle will tell; a stream is not cut on a guess
                return None
            if st is None:
                continue
            for metric in ("tokens", "usd_micros"):
                if st.remaining(metric) == 0:
                    return f"{metric} exhausted on task {st.task}"
        return None

    async def on_chunk(self, exchange: Exchange, chunk: bytes) -> bytes | None:
        allowed = exchange.attrs.get("stream_budget")
        used = exchange.attrs.get("out_tokens_before", 0)
        if allowed is None or used < allowed:
            return chunk
        why = await self._top_up(exchange, used)
        if why is None:
            return chunk
        tail = exchange.attrs.get("cut_tail")
        exchange.decide(self.name, "deny", rule=f"stream cut: {why}", detail=f"after {used} output tokens")
        raise StopStream("budget_exhausted", tail() if callable(tail) else b"")

    async def _top_up(self, exchange: Exchange, used: int) -> str | None:
        """A stream used up its reservation (`used` output tokens relayed): extend the reservation from what the
        task and its ancestors have left (another step of output, or what is left if less; at least enough for
        the next chunk; its USD priced at a step, like the estimate), in one atomic ledger call. None if the
        stream may go on; else why it is cut. Calls with max_tokens are not topped up (the client asked for no
        more)."""
        held: _Held | None = exchange.attrs.get("budget")
        if held is None or not held.step or exchange.principal is None:
            return "max_tokens reached"  # the upstream went past the client's own limit
        w = held.rule.weights.output or 1.0
        have = held.reserved.get("tokens", 0) - held.prompt  # weighted output tokens reserved so far
        least = max(1, math.ceil((used + 1) * w) - have)
        most = max(least, math.ceil((used + held.step) * w) - have)
        amount: Amount = {"tokens": least}
        price = self.pricing.get(exchange.target)
        if price is not None and "usd_micros" in held.reserved:
            amount["usd_micros"] = math.ceil(max(held.step, least / w) * price.output_per_mtok)
        windows = metering.windows(exchange.principal, held.rule, least, requests=False)
        try:
            got = await self.ledger.extend(held.chain, amount, "tokens", most, held.op, windows)
        except Exception as exc:
            # The ledger is unreachable: no more output can be vouched for. A top-up whose reply was lost is given
            # back by the settle (it releases what the reservation's record says it took).
            if self.cfg.on_ledger_error == "fail_open":
                exchange.attrs.pop("stream_budget", None)  # metered no more, charged the truth at the end
                exchange.decide(
                    self.name,
                    "allow",
                    rule="stream top-up: ledger unavailable: fail_open",
                    detail=type(exc).__name__,
                )
                return None
            return f"ledger unavailable ({type(exc).__name__})"
        if isinstance(got, Rejection):
            return f"task {got.task}: {got.metric} limit {got.limit}"
        if isinstance(got, Throttled):
            return f"window {got.window.key.split(':')[0]} {got.window.limit}"
        if got is None:
            return "reservation gone"
        for metric, n in got.amount.items():
            held.reserved[metric] = held.reserved.get(metric, 0) + n
        held.counted += least if windows else 0
        exchange.attrs["stream_budget"] = math.floor((held.reserved["tokens"] - held.prompt) / w)
        return None

    async def on_finish(self, exchange: Exchange) -> None:
        held: _Held | None = exchange.attrs.get("budget")
        if held is None:
            return
        actual = self.actual(exchange, held.rule)
        p = exchange.principal
        corrections = metering.corrections(p, held.rule, actual.get("tokens", 0) - held.counted) if p else []
        task = exchange.task
        # A one-request task (no x-agentgw-task) that delegated nothing: no later call can name it.
        forget = (
            task is not None
            and not task.chosen
            and "child_task" not in exchange.attrs
            and len(held.chain) == 1
        )
        op = f"{task.trace_id if task else ''}{exchange.span_id}"
        job = Pending(held.chain, held.reserved, actual, op, False, corrections, forget)
        try:
            await self.retries.apply(job)
        except Exception as exc:
            # The ledger is unreachable (Redis restarting): keep the settlement and retry it until it lands, so no
            # reservation leaks and nothing is charged twice (a settle is applied exactly once, when it succeeds).
            log.warning(
                "budget of %s not settled yet (%s); retrying in the background",
                held.chain[0],
                type(exc).__name__,
            )
            exchange.decide(
                self.name, "deferred", rule="settle retried: ledger unavailable", detail=type(exc).__name__
            )
            self.retries.later(job)
        # On the record either way: a deferred settle is retried until it lands, and then charges exactly this
        # (once: it is guarded by the reservation's op).
        exchange.attrs["budget_charged"] = actual

    async def flush(self, timeout_s: float = 5.0) -> None:
        """On shutdown: give pending settlements a last chance to land."""
        await self.retries.flush(timeout_s)

    @property
    def pending(self) -> deque[Pending]:
        return self.retries.pending

    def actual(self, ex: Exchange, rule: BudgetRule) -> Amount:
        return metering.actual(ex, rule, self.pricing.get(ex.target), self.tool_costs.get(ex.target, 0))


def _loop(task: str, parent: str | None) -> TaskParentLoop:
    return TaskParentLoop(
        f"Task {task!r} cannot have {parent!r} as its parent: {parent!r} is {task!r} itself or one of its "
        "descendants, so the task would be its own ancestor."
    )


def _fmt(amount: Amount) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(amount.items())) or "nothing"
