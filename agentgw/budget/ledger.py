"""The ledger protocol: atomic reserve / settle / release over a task and all its ancestors, with the caller's
fixed-window counters in the same operation. Amounts are integers per metric (tokens, tool_calls, agent_calls,
usd_micros); a limit < 0 or absent means unlimited. Backends: memory.py (one process) and redis.py (one Lua
script per reserve and per settle: one round trip each, many replicas).

A task's limits are fixed by the first reservation that names it (later requests cannot raise them); its
ancestors are named by the caller on every call (`chain`: the task first, then its parent, …), and a chain in which
a task would be its own ancestor is refused (Loop), as is one that would sit deeper below its root than the caller's
`max_depth` (TooDeep: this bounds the tasks every reserve and settle touches). Task names are keys built by `task_key`/`child_key`: every
component percent-encoded, so distinct (subject, task id) pairs never share a key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote

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
class Loop:
    """The chain names a task twice, or its first task is already an ancestor of its second (recorded by earlier
    calls): the task would be its own ancestor and charged twice. Nothing was written."""

    task: str  # the task that would be its own ancestor


@dataclass(frozen=True, slots=True)
class TooDeep:
    """The chain's first task would sit `depth` levels below its root (counting the chain given and the ancestors
    recorded for its parent), more than the caller allows. Nothing was written."""

    task: str
    depth: int


def too_deep(chain: Sequence[str], recorded: int | None, max_depth: int | None) -> TooDeep | None:
    """chain[0]'s depth: its chain's, or one below its parent's recorded ancestors if those are more."""
    if max_depth is None or not chain:
        return None
    depth = max(len(chain) - 1, 0 if recorded is None else recorded + 1)
    return TooDeep(chain[0], depth) if depth > max_depth else None


# How many recorded ancestries a reservation reads, beyond its own chain, to find a loop that calls racing each
# other closed (each naming a parent that did not exist yet). Chains are caller-built; this bounds the work.
ANCESTRY_WALK = 64


class NotSent(ConnectionError):
    """The ledger could not be reached and the operation never left the process (nothing to undo)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed-window counter (`requests_per_minute`, `tokens_per_day`, …): count `amount` in the current window
    of `key` if that keeps it within `limit`. In a settle, `amount` is a correction (may be negative) and `limit`
    is unused."""

    key: str
    amount: int
    limit: int
    seconds: int


@dataclass(frozen=True, slots=True)
class Throttled:
    window: Window  # the window that is full
    retry_after: float  # seconds until it resets


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


@dataclass(frozen=True, slots=True)
class WindowCount:
    """A rate window counting now: its key (`rpm:<subject>`, `tpm:…`, `tpd:…`, the subject a key part), its length,
    when it began (epoch seconds) and what it has counted."""

    key: str
    seconds: int
    start: int
    count: int


@dataclass(slots=True)
class LedgerListing:
    """What `Ledger.listing` found: live tasks, current rate windows, and whether there were more than asked for (or
    the scan stopped at its bound before it saw every key)."""

    kind: str  # memory | redis
    tasks: list[TaskState]
    windows: list[WindowCount]
    truncated: bool


WINDOW_SECONDS = {"rpm": 60, "tpm": 60, "tpd": 86400}


class Ledger(Protocol):
    async def reserve(
        self,
        chain: list[str],
        amount: Amount,
        limits: Amount,
        rest: str | None = None,
        op: str | None = None,
        windows: Sequence[Window] = (),
        child: str | None = None,
        most: int | None = None,
        max_depth: int | None = None,
    ) -> Reservation | Rejection | Throttled | Loop | TooDeep:
        """One atomic step: refuse a chain deeper than `max_depth` (see TooDeep; None: no bound) or one that loops
        (see Loop); else, if every window has room, reserve `amount`
        on every task of `chain` (or on none), and only if both succeed count the windows. `limits` become
        chain[0]'s limits if it is new. With `rest` (a metric), reserve what the chain has left of it instead, up
        to `most` (None: no bound), as long as that is at least `amount[rest]` (an LLM call without max_tokens
        takes its estimated output, or less if less is left; a stream that uses it up is topped up by `extend`).
        With `child`, also open that task as a child of chain[0] (its ancestors: the chain). An empty chain only
        counts the windows."""

    async def extend(
        self,
        chain: list[str],
        amount: Amount,
        rest: str,
        most: int,
        op: str | None = None,
        windows: Sequence[Window] = (),
    ) -> Reservation | Rejection | Throttled | None:
        """One atomic step: add `amount` to reservation `op` on every task of `chain` (opened by it), taking of
        metric `rest` what the chain has left, up to `most`, as long as that is at least `amount[rest]`, and count
        the `windows` if they have room, exactly as `reserve` would (all or nothing; a Rejection names the task
        that cannot afford it). The reservation's settle then gives back all it took. A stream that used up its
        reservation tops it up this way, a bounded number of times. None: the reservation is gone (settled,
        undone, or lost with its store), and nothing was taken."""

    async def settle(
        self,
        chain: list[str],
        reserved: Amount,
        actual: Amount,
        op: str | None = None,
        windows: Sequence[Window] = (),
        forget: bool = False,
    ) -> None:
        """One atomic step: turn a reservation into spending (reserved -= reserved, spent += actual, on every task
        of `chain`), correct the current window of each of `windows` by its amount, and with `forget` drop
        chain[0] (a one-request task nothing will name again). `op` is the reservation's: a settle with it applies
        at most once (a retry after a lost reply, or after an undo, changes nothing); without it, always."""

    async def release(
        self,
        chain: list[str],
        reserved: Amount,
        op: str | None = None,
        windows: Sequence[Window] = (),
        forget: bool = False,
    ) -> None:
        """Give a reservation back (error, disconnect): a settle with nothing spent."""

    async def state(self, task: str) -> TaskState | None: ...

    async def undo(self, chain: list[str], op: str) -> None:
        """Give back what reservation `op` took (tasks and windows), if it took anything (its reply may have been
        lost)."""

    async def children(self, task: str) -> list[str]: ...

    async def listing(self, limit: int, principal: str | None = None) -> LedgerListing:
        """Up to `limit` live tasks (of one principal's key part: `principal` as `task_key` encodes it; None: every
        task, children included) and up to `limit` rate windows counting now (of that principal), read in bounded
        steps; for operators (`GET /admin/budgets`), never on the request path."""

    async def persistence(self) -> tuple[bool | None, str | None]:
        """Whether what the ledger holds survives a restart of its store (None: cannot tell), and a warning for
        the operator if it may not."""

    async def aclose(self) -> None: ...


# What a key component may not contain as itself: the escape character, the separator, control characters (the
# Redis ledger joins chains with newlines) and a leading `~` (so no encoded subject is the child namespace). Any
# component that has none of these keeps its text: existing keys of ordinary ids (emails included) do not change.
_ESCAPED = re.compile(r"[%/\x00-\x1f\x7f]|^~")
CHILD_NAMESPACE = "~child"


def _escape(m: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in m.group().encode())


def key_part(text: str) -> str:
    """One component of a ledger key, percent-encoded: joining encoded components with `/` is injective (a subject
    `alice/x` with task `job` and a subject `alice` with task `x/job` get different keys)."""
    return _ESCAPED.sub(_escape, text)


def task_key(subject: str, task_id: str) -> str:
    """The ledger key of a task a principal names: scoped to the principal."""
    return f"{key_part(subject)}/{key_part(task_id)}"


def child_key(task_id: str) -> str:
    """The ledger key of a child task the gateway minted (global: whoever holds the id may charge it)."""
    return f"{CHILD_NAMESPACE}/{key_part(task_id)}"


def split_key(key: str) -> tuple[str | None, str]:
    """(principal, task id) of a key `task_key` or `child_key` built, decoded (None: a child task, global)."""
    head, _, tail = key.partition("/")
    return (None if head == CHILD_NAMESPACE else unquote(head)), unquote(tail)
