"""Routing strategies across a model alias's targets: which target a call tries first, the others following as
failover. Each target's latency and errors are tracked (EWMA), its calls in flight counted, and its calls and
tokens per minute kept against its `rpm`/`tpm`: a target at its limit is skipped, not failed. In this process."""

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
    calls: deque[float] = field(default_factory=deque)  # start times in the last minute
    tokens: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens) in the last minute

    def _trim(self, now: float) -> None:
        while self.calls and now - self.calls[0] > 60:
            self.calls.popleft()
        while self.tokens and now - self.tokens[0][0] > 60:
            self.tokens.popleft()

    def at_limit(self, target: Target, now: float) -> bool:
        self._trim(now)
        if target.rpm is not None and len(self.calls) >= target.rpm:
            return True
        return target.tpm is not None and sum(n for _, n in self.tokens) >= target.tpm

    def report(self) -> dict[str, Any]:
        self._trim(time.monotonic())
        return {
            "latency_ms": round(self.latency_ms, 3) if self.latency_ms is not None else None,
            "error_rate": round(self.error_rate, 4),
            "in_flight": self.in_flight,
            "calls_last_minute": len(self.calls),
            "tokens_last_minute": sum(n for _, n in self.tokens),
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
        targets = list(model.targets)
        ready = [t for t in targets if not self.of(_key(t)).at_limit(t, now)]
        skipped = [t for t in targets if t not in ready]
        return _ranked(model.strategy, ready, self, model.name), skipped

    def started(self, target: Target) -> None:
        st = self.of(_key(target))
        st.in_flight += 1
        st.calls.append(time.monotonic())

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
            self.of(key).tokens.append((time.monotonic(), tokens))

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
        return sorted(targets, key=lambda t: routing.of(_key(t)).in_flight)  # stable: ties keep their order
    if strategy == "least_latency":
        # an untried target goes first (it must be measured); a failing one is pushed back by its error rate
        def latency(t: Target) -> float:
            st = routing.of(_key(t))
            return -1.0 if st.latency_ms is None else st.latency_ms * (1.0 + 10.0 * st.error_rate)

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
