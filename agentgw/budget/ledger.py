"""The ledger protocol: atomic reserve / settle / release over a task and all its ancestors, and fixed-window
counters. Amounts are integers per metric (tokens, tool_calls, agent_calls, usd_micros); a limit < 0 or
absent means unlimited. Backends: memory.py (one process) and redis.py (atomic Lua, many replicas).

A task's limits are fixed by the first reservation that names it (later requests cannot raise them); its
ancestors are named by the caller on every call (`chain`: the task first, then its parent, …).
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


@dataclass(frozen=True, slots=True)
class Reservation:
    amount: Amount  # what was reserved on every task of the chain
    remaining: dict[str, int]  # per limited metric, the least any task of the chain has left afterwards


@dataclass(slots=True)
class TaskState:
    task: str
    limits: Amount = field(default_factory=dict)
    spent: Amount = field(default_factory=dict)
    reserved: Amount = field(default_factory=dict)
    chain: list[str] = field(default_factory=list)  # ancestors, nearest first

    def remaining(self, metric: str) -> int | None:
        limit = self.limits.get(metric, -1)
        if limit < 0:
            return None
        return max(0, limit - self.spent.get(metric, 0) - self.reserved.get(metric, 0))


class Ledger(Protocol):
    async def reserve(
        self, chain: list[str], amount: Amount, limits: Amount, rest: str | None = None, op: str | None = None
    ) -> Reservation | Rejection:
        """Reserve `amount` on every task of `chain` or on none. `limits` become chain[0]'s limits if it is new.
        With `rest` (a metric), reserve everything the chain has left of it instead, as long as that is at least
        `amount[rest]` (an LLM call without max_tokens may use all that is left, and no more)."""

    async def settle(self, chain: list[str], reserved: Amount, actual: Amount, op: str | None = None) -> None:
        """Turn a reservation into spending: reserved -= reserved, spent += actual, on every task of `chain`.
        `op` names the operation: settling the same `op` again (a retry after a lost reply) changes nothing."""

    async def release(self, chain: list[str], reserved: Amount, op: str | None = None) -> None:
        """Give a reservation back (error, disconnect)."""

    async def state(self, task: str) -> TaskState | None: ...

    async def undo(self, chain: list[str], op: str) -> None:
        """Give back what reservation `op` took, if it took anything (its reply may have been lost)."""

    async def forget(self, task: str) -> None:
        """Drop a task nothing will name again (a one-request task that delegated nothing)."""

    async def link(self, parent: str, child: str) -> None:
        """Remember that `child` was delegated from `parent` (for inspection; charging follows the chain)."""

    async def children(self, task: str) -> list[str]: ...

    async def hit(self, key: str, amount: int, limit: int, window_s: int) -> tuple[bool, float]:
        """Count `amount` in the current fixed window of `key`; (allowed, seconds until the window resets)."""

    async def adjust(self, key: str, amount: int, window_s: int) -> None:
        """Correct the current window of `key` by `amount` (settling an estimate; may be negative)."""

    async def aclose(self) -> None: ...
