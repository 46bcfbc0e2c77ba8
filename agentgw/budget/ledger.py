"""The ledger protocol: atomic reserve / settle / release over a task and all its ancestors, and fixed-window
counters. Amounts are integers per metric (tokens, tool_calls, agent_calls, usd_micros); a limit < 0 or
absent means unlimited. Backends: memory.py (one process) and redis.py (atomic Lua, many replicas).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

METRICS = ("tokens", "tool_calls", "agent_calls", "usd_micros")

Amount = dict[str, int]


@dataclass(frozen=True, slots=True)
class Rejection:
    task: str  # the task in the chain that could not afford it (the task itself or an ancestor)
    metric: str
    limit: int
    spent: int
    reserved: int
    asked: int


@dataclass(slots=True)
class TaskState:
    task: str
    limits: Amount = field(default_factory=dict)
    spent: Amount = field(default_factory=dict)
    reserved: Amount = field(default_factory=dict)
    parent: str | None = None

    def remaining(self, metric: str) -> int | None:
        limit = self.limits.get(metric, -1)
        if limit < 0:
            return None
        return max(0, limit - self.spent.get(metric, 0) - self.reserved.get(metric, 0))


class Ledger(Protocol):
    async def open(self, task: str, limits: Amount, parent: str | None) -> None:
        """Create the task with its limits if it does not exist (limits of an existing task never change)."""

    async def reserve(self, chain: list[str], amount: Amount) -> Rejection | None:
        """Reserve `amount` on every task of `chain` (the task, then its ancestors) or on none of them."""

    async def settle(self, chain: list[str], reserved: Amount, actual: Amount) -> None:
        """Turn a reservation into spending: reserved -= reserved, spent += actual, on every task of `chain`."""

    async def release(self, chain: list[str], reserved: Amount) -> None:
        """Give a reservation back (error, disconnect)."""

    async def state(self, task: str) -> TaskState | None: ...

    async def hit(self, key: str, amount: int, limit: int, window_s: int) -> tuple[bool, float]:
        """Count `amount` in the current fixed window of `key`; (allowed, seconds until the window resets)."""

    async def aclose(self) -> None: ...
