"""The in-process ledger: exact under asyncio concurrency (no operation awaits midway), for one gateway process.
`check-config` refuses it with more than one worker."""

from __future__ import annotations

import time
from collections.abc import Sequence

from agentgw.budget.ledger import (
    ANCESTRY_WALK,
    METRICS,
    Amount,
    LedgerListing,
    Loop,
    Rejection,
    Reservation,
    TaskState,
    Throttled,
    TooDeep,
    Window,
    WindowCount,
    key_part,
    too_deep,
)


class MemoryLedger:
    def __init__(self, task_ttl_s: float = 7 * 86400) -> None:
        self.ttl = task_ttl_s
        self.tasks: dict[str, TaskState] = {}
        self.touched: dict[str, float] = {}  # task → last use, for expiry (like the Redis keys' TTL)
        self._ops = 0
        self.windows: dict[str, tuple[int, int]] = {}  # "<key>:<seconds>" → (window start, count)
        self.kids: dict[str, list[str]] = {}
        # Tasks whose limits and ancestors are fixed (by their first reservation).
        self.opened: set[str] = set()
        self.live: set[str] = set()  # ops of the reservations not settled yet (the ones a top-up may extend)

    def _task(self, key: str) -> TaskState:
        st = self.tasks.get(key)
        if st is None:
            st = self.tasks[key] = TaskState(key)
        return st

    def _expire(self) -> None:
        """Every 10,000 reservations, drop tasks idle for longer than the TTL (amortised, no timer task)."""
        self._ops += 1
        if self._ops % 10_000:
            return
        cutoff = time.monotonic() - self.ttl
        for task in [t for t, at in self.touched.items() if at < cutoff]:
            self._forget(task)

    async def undo(self, chain: list[str], op: str) -> None:
        return None  # in one process a reservation either happened (and was answered) or raised before it

    def _forget(self, task: str) -> None:
        self.tasks.pop(task, None)
        self.touched.pop(task, None)
        self.kids.pop(task, None)
        self.opened.discard(task)

    def _loop(self, chain: list[str]) -> Loop | None:
        """chain[0] named twice, or among the recorded ancestors of the tasks it names as its ancestors."""
        seen: set[str] = set()
        for t in chain:
            if t in seen:
                return Loop(t)
            seen.add(t)
        queue, head = chain[1:], 0
        while head < len(queue) and head < len(chain) + ANCESTRY_WALK:
            st = self.tasks.get(queue[head])
            head += 1
            for t in st.chain if st is not None else ():
                if t == chain[0]:
                    return Loop(t)
                if t not in seen:
                    seen.add(t)
                    queue.append(t)
        return None

    def _window(self, w: Window, now: float) -> tuple[str, int, int]:
        start = int(now // w.seconds) * w.seconds
        key = f"{w.key}:{w.seconds}"
        w_start, count = self.windows.get(key, (start, 0))
        return key, start, count if w_start == start else 0

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
        if len(chain) > 1:
            parent = self.tasks.get(chain[1])
            deep = too_deep(chain, None if parent is None else len(parent.chain), max_depth)
            if deep is not None:
                return deep
            loop = self._loop(chain)
            if loop is not None:
                return loop
        got = self._take(chain, amount, limits, rest, windows, child, most)
        if op is not None and chain and isinstance(got, Reservation):
            self.live.add(op)
        return got

    def _take(
        self,
        chain: list[str],
        amount: Amount,
        limits: Amount,
        rest: str | None,
        windows: Sequence[Window],
        child: str | None,
        most: int | None,
    ) -> Reservation | Rejection | Throttled:
        now_wall = time.time()
        for w in windows:
            _, start, count = self._window(w, now_wall)
            if count + w.amount > w.limit:
                return Throttled(w, start + w.seconds - now_wall)
        if chain:
            self._expire()
            now = time.monotonic()
            for t in chain:
                self.touched[t] = now
            # Like Redis: a task first met as an ancestor is opened (limits, ancestors) by its own first call.
            if chain[0] not in self.opened:
                st = self._task(chain[0])
                st.limits, st.chain = dict(limits), list(chain[1:])
                self.opened.add(chain[0])
        states = [self._task(t) for t in chain]
        asked = dict(amount)
        if rest is not None:
            left = [r for st in states if (r := st.remaining(rest)) is not None]
            least = asked.get(rest, 0)
            if left and min(left) >= least:
                asked[rest] = min(left) if most is None else max(least, min(min(left), most))
            elif not left and most is not None and most > least:
                asked[rest] = most
        for st in states:
            for metric, n in asked.items():
                limit = st.limits.get(metric, -1)
                if n <= 0 or limit < 0:
                    continue
                spent, reserved = st.spent.get(metric, 0), st.reserved.get(metric, 0)
                if spent + reserved + n > limit:
                    return Rejection(st.task, metric, limit, spent, reserved, n)
        for w in windows:
            key, start, count = self._window(w, now_wall)
            self.windows[key] = (start, count + w.amount)
        for st in states:
            for metric, n in asked.items():
                if n:
                    st.reserved[metric] = st.reserved.get(metric, 0) + n
        if child is not None and chain:
            self.tasks[child] = TaskState(child, {}, {}, {}, list(chain))
            self.opened.add(child)
            self.touched[child] = time.monotonic()
            self.kids.setdefault(chain[0], []).append(child)
        remaining: dict[str, int] = {}
        for st in states:
            for metric in st.limits:
                r = st.remaining(metric)
                if r is not None:
                    remaining[metric] = min(r, remaining.get(metric, r))
        return Reservation(asked, remaining)

    async def extend(
        self,
        chain: list[str],
        amount: Amount,
        rest: str,
        most: int,
        op: str | None = None,
        windows: Sequence[Window] = (),
    ) -> Reservation | Rejection | Throttled | None:
        # Re-reserving on the opened chain is the same atomic step (no await midway); its limits and ancestors are
        # fixed, and were checked for loops by the reservation. A task forgotten since (expired) has no
        # reservation left to add to.
        if not chain or chain[0] not in self.opened or op not in self.live:
            return None
        return self._take(chain, amount, {}, rest, windows, None, most)

    async def settle(
        self,
        chain: list[str],
        reserved: Amount,
        actual: Amount,
        op: str | None = None,
        windows: Sequence[Window] = (),
        forget: bool = False,
    ) -> None:
        # In one process a call either happened or raised: there is no lost reply to retry, so `op` only ends the
        # reservation's life (no top-up after its settle).
        if op is not None:
            self.live.discard(op)
        for t in chain:
            st = self._task(t)
            for metric in METRICS:
                r, a = reserved.get(metric, 0), actual.get(metric, 0)
                if r:
                    st.reserved[metric] = st.reserved.get(metric, 0) - r
                if a:
                    st.spent[metric] = st.spent.get(metric, 0) + a
        now = time.time()
        for w in windows:
            key, start, count = self._window(w, now)
            if key in self.windows and self.windows[key][0] == start:
                self.windows[key] = (start, max(0, count + w.amount))
        if forget and chain:
            self._forget(chain[0])

    async def release(
        self,
        chain: list[str],
        reserved: Amount,
        op: str | None = None,
        windows: Sequence[Window] = (),
        forget: bool = False,
    ) -> None:
        await self.settle(chain, reserved, {}, op, windows, forget)

    async def state(self, task: str) -> TaskState | None:
        st = self.tasks.get(task)
        if st is None:
            return None
        return TaskState(st.task, dict(st.limits), dict(st.spent), dict(st.reserved), list(st.chain))

    async def children(self, task: str) -> list[str]:
        return list(self.kids.get(task, ()))

    async def listing(self, limit: int, principal: str | None = None) -> LedgerListing:
        """Tasks used within the TTL, most recently used first; windows that have not ended yet."""
        cutoff, now = time.monotonic() - self.ttl, time.time()
        mine = f"{key_part(principal)}/" if principal is not None else None
        live = [
            (self.touched.get(t, 0.0), t)
            for t in self.tasks
            if self.touched.get(t, 0.0) >= cutoff and (mine is None or t.startswith(mine))
        ]
        live.sort(reverse=True)
        tasks = [st for _, t in live[:limit] if (st := await self.state(t)) is not None]
        who = key_part(principal) if principal is not None else None
        windows: list[WindowCount] = []
        for name, (start, count) in self.windows.items():
            key, _, seconds = name.rpartition(":")
            if start + int(seconds) > now and (who is None or key.partition(":")[2] == who):
                windows.append(WindowCount(key, int(seconds), start, count))
        windows.sort(key=lambda w: (w.key, w.seconds))
        return LedgerListing("memory", tasks, windows[:limit], len(live) > limit or len(windows) > limit)

    async def persistence(self) -> tuple[bool | None, str | None]:
        return False, None  # one process's memory, by design (budgets.md says so)

    async def aclose(self) -> None:
        return None
