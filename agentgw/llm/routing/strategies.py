"""Routing strategies across a model alias's targets: which target a call tries first, the others following as
failover. Each target's latency and errors are tracked (EWMA), its calls in flight counted, and its calls and
tokens per minute kept against its `rpm`/`tpm`: a target at its limit is skipped, not failed. Kept in this process;
with `llm.routing.state: redis` every process also folds in the others' numbers (shared.py)."""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgw.exchange import Exchange
from agentgw.registry import Model, Target

ALPHA = 0.3  # weight of the newest sample in the moving averages


@dataclass(slots=True)
class TargetStats:
    latency_ms: float | None = None  # EWMA of successful calls' latency
    error_rate: float = 0.0  # EWMA of failures (1) and successes (0)
    in_flight: int = 0  # a stream counts until its first frame (until it ends under least_busy)
    # Calls started and tokens used in the last minute, in one-second buckets [second, calls, tokens] with running
    # totals: bounded memory and O(1) limit checks however many calls a second a target takes.
    buckets: deque[list[int]] = field(default_factory=deque)
    calls: int = 0
    tokens: int = 0
    others: Others | None = None  # the other processes' numbers, as last synced (shared routing state only)

    def _bucket(self, now: float) -> list[int]:
        second = int(now)
        if self.buckets and self.buckets[-1][0] == second:
            return self.buckets[-1]
        self.trim(now)  # once a second at most: memory stays bounded for targets no limit ever checks
        bucket = [second, 0, 0]
        self.buckets.append(bucket)
        return bucket

    def add(self, now: float, calls: int, tokens: int) -> None:
        bucket = self._bucket(now)
        bucket[1] += calls
        bucket[2] += tokens
        self.calls += calls
        self.tokens += tokens

    def trim(self, now: float) -> None:
        """Forget the buckets that ended more than a minute ago."""
        while self.buckets and now - (self.buckets[0][0] + 1) > 60:
            _, calls, tokens = self.buckets.popleft()
            self.calls -= calls
            self.tokens -= tokens

    def at_limit(self, target: Target, now: float) -> bool:
        if target.rpm is None and target.tpm is None:
            return False
        self.trim(now)
        o = self.others
        if target.rpm is not None and self.calls + (o.calls if o else 0) >= target.rpm:
            return True
        return target.tpm is not None and self.tokens + (o.tokens if o else 0) >= target.tpm

    def busy(self) -> int:
        return self.in_flight + (self.others.in_flight if self.others else 0)

    def latency(self) -> float | None:
        """This process's latency EWMA, averaged with the others' when they have one, raised by the error rate."""
        mine = self.latency_ms
        o = self.others
        theirs = o.latency_ms if o is not None else None
        if mine is None and theirs is None:
            return None
        values = [v for v in (mine, theirs) if v is not None]
        errors = self.error_rate if o is None else (self.error_rate + o.error_rate) / 2
        return sum(values) / len(values) * (1.0 + 10.0 * errors)

    def report(self) -> dict[str, Any]:
        self.trim(time.monotonic())
        out: dict[str, Any] = {
            "latency_ms": round(self.latency_ms, 3) if self.latency_ms is not None else None,
            "error_rate": round(self.error_rate, 4),
            "in_flight": self.in_flight,
            "calls_last_minute": self.calls,
            "tokens_last_minute": self.tokens,
        }
        if self.others is not None:
            out["others"] = self.others.report()
        return out


@dataclass(slots=True)
class Others:
    """The sum (calls, tokens, in flight) or mean (latency, errors) of the other processes' numbers for a target."""

    processes: int = 0
    calls: int = 0
    tokens: int = 0
    in_flight: int = 0
    latency_ms: float | None = None
    error_rate: float = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "processes": self.processes,
            "calls_last_minute": self.calls,
            "tokens_last_minute": self.tokens,
            "in_flight": self.in_flight,
            "latency_ms": round(self.latency_ms, 3) if self.latency_ms is not None else None,
            "error_rate": round(self.error_rate, 4),
        }


class Routing:
    """Per-target statistics (by `provider/model`) and the order a model's strategy gives its targets."""

    def __init__(self) -> None:
        self.stats: dict[str, TargetStats] = {}
        self._turns: dict[str, itertools.count[int]] = {}

    def of(self, key: str) -> TargetStats:
        st = self.stats.get(key)
        if st is None:
            st = self.stats[key] = TargetStats()
        return st

    def order(self, model: Model) -> tuple[list[Target], list[Target]]:
        """(the targets to try, in order; those skipped now because they are at their rpm/tpm limit)."""
        now = time.monotonic()
        ready: list[Target] = []
        skipped: list[Target] = []
        for t in model.targets:
            (skipped if self.of(_key(t)).at_limit(t, now) else ready).append(t)
        return _ranked(model.strategy, ready, self, model.name), skipped

    def started(self, target: Target) -> None:
        st = self.of(_key(target))
        st.in_flight += 1
        st.add(time.monotonic(), 1, 0)

    def ended(self, target: Target, latency_ms: float | None, failed: bool) -> None:
        st = self.of(_key(target))
        st.in_flight = max(0, st.in_flight - 1)
        st.error_rate += ALPHA * ((1.0 if failed else 0.0) - st.error_rate)
        if not failed and latency_ms is not None:
            st.latency_ms = (
                latency_ms if st.latency_ms is None else st.latency_ms + ALPHA * (latency_ms - st.latency_ms)
            )

    def used(self, key: str, tokens: int) -> None:
        """Tokens a call on `key` used (for tpm), once they are known."""
        if tokens > 0 and key:
            self.of(key).add(time.monotonic(), 0, tokens)

    def turn(self, model: str) -> int:
        counter = self._turns.get(model)
        if counter is None:
            counter = self._turns[model] = itertools.count()
        return next(counter)


def _key(t: Target) -> str:
    return f"{t.provider}/{t.model}"


def _ranked(strategy: str, targets: Sequence[Target], routing: Routing, model: str) -> list[Target]:
    if len(targets) <= 1 or strategy == "failover":
        return list(targets)
    if strategy == "round_robin":
        i = routing.turn(model) % len(targets)
        return [*targets[i:], *targets[:i]]
    if strategy == "weighted":
        first = random.choices(targets, weights=[t.weight for t in targets])[0]
        return [first, *(t for t in targets if t is not first)]
    if strategy == "least_busy":
        return sorted(targets, key=lambda t: routing.of(_key(t)).busy())  # stable: ties keep their order
    if strategy == "least_latency":
        # an untried target goes first (it must be measured); a failing one is pushed back by its error rate
        def latency(t: Target) -> float:
            ms = routing.of(_key(t)).latency()
            return -1.0 if ms is None else ms

        return sorted(targets, key=latency)
    if strategy == "cost":
        return sorted(targets, key=lambda t: t.cost_per_mtok if t.cost_per_mtok is not None else float("inf"))
    return list(targets)


async def then(stream: AsyncIterator[bytes], done: Callable[[], None]) -> AsyncIterator[bytes]:
    """`stream` as it comes; when it ends (or is closed early) it is closed, then `done()` runs."""
    try:
        async for frame in stream:
            yield frame
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
        done()


def counted(stream: AsyncIterator[bytes], ex: Exchange, routing: Routing) -> AsyncIterator[bytes]:
    """A metered stream whose tokens, known once it ended, count against its target's tpm."""
    return then(
        stream, lambda: routing.used(ex.attrs.get("target", ""), ex.usage.total_tokens if ex.usage else 0)
    )
