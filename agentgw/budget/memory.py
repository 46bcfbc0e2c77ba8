"""The in-process ledger: exact under asyncio concurrency (every operation completes without awaiting), for a
single gateway process. `check-config` refuses it with more than one worker."""

from __future__ import annotations

import time

from agentgw.budget.ledger import METRICS, Amount, Rejection, TaskState


class MemoryLedger:
    def __init__(self) -> None:
        self.tasks: dict[str, TaskState] = {}
        self.windows: dict[str, tuple[int, int]] = {}  # key → (window start, count)

    async def open(self, task: str, limits: Amount, parent: str | None) -> None:
        if task not in self.tasks:
            self.tasks[task] = TaskState(task, dict(limits), {}, {}, parent)

    async def reserve(self, chain: list[str], amount: Amount) -> Rejection | None:
        states = [self.tasks.setdefault(t, TaskState(t)) for t in chain]
        for st in states:
            for metric, asked in amount.items():
                limit = st.limits.get(metric, -1)
                if asked <= 0 or limit < 0:
                    continue
                spent, reserved = st.spent.get(metric, 0), st.reserved.get(metric, 0)
                if spent + reserved + asked > limit:
                    return Rejection(st.task, metric, limit, spent, reserved, asked)
        for st in states:
            for metric, asked in amount.items():
                if asked:
                    st.reserved[metric] = st.reserved.get(metric, 0) + asked
        return None

    async def settle(self, chain: list[str], reserved: Amount, actual: Amount) -> None:
        for t in chain:
            st = self.tasks.setdefault(t, TaskState(t))
            for metric in METRICS:
                r, a = reserved.get(metric, 0), actual.get(metric, 0)
                if r:
                    st.reserved[metric] = st.reserved.get(metric, 0) - r
                if a:
                    st.spent[metric] = st.spent.get(metric, 0) + a

    async def release(self, chain: list[str], reserved: Amount) -> None:
        await self.settle(chain, reserved, {})

    async def state(self, task: str) -> TaskState | None:
        st = self.tasks.get(task)
        if st is None:
            return None
        return TaskState(st.task, dict(st.limits), dict(st.spent), dict(st.reserved), st.parent)

    async def hit(self, key: str, amount: int, limit: int, window_s: int) -> tuple[bool, float]:
        now = time.time()
        start = int(now // window_s) * window_s
        w_start, count = self.windows.get(key, (start, 0))
        if w_start != start:
            count = 0
        reset = start + window_s - now
        if count + amount > limit:
            self.windows[key] = (start, count)
            return False, reset
        self.windows[key] = (start, count + amount)
        return True, reset

    async def aclose(self) -> None:
        return None
