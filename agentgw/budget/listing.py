"""The Redis ledger listed for operators (`GET /admin/budgets`): its live task hashes and current rate windows, found
with SCAN (a MATCH pattern, a bounded COUNT per step and a bounded number of steps; never KEYS, which blocks Redis)
and read in one pipelined round trip."""

from __future__ import annotations

import re
import time
from typing import Any

from agentgw.budget.ledger import WINDOW_SECONDS, LedgerListing, TaskState, WindowCount, key_part

SCAN_COUNT = 500  # keys Redis examines per SCAN step
MAX_STEPS = (
    400  # SCAN steps per listing (at most ~200,000 keys examined): a larger keyspace is cut, and says so
)
_GLOB = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """`text` matched literally in a SCAN MATCH pattern."""
    return _GLOB.sub(r"\\\1", text)


def task_state(task: str, raw: dict[str, str]) -> TaskState:
    """A task hash's fields (`l:`/`s:`/`r:<metric>`, `chain`) as a TaskState."""
    st = TaskState(task, chain=[c for c in raw.get("chain", "").split("\n") if c])
    for field_name, value in raw.items():
        kind, _, metric = field_name.partition(":")
        target = {"l": st.limits, "s": st.spent, "r": st.reserved}.get(kind)
        if target is not None and metric:
            target[metric] = int(value)
    return st


async def _scan(client: Any, pattern: str, want: int) -> tuple[list[str], bool]:
    """Up to `want` keys matching `pattern`, and whether there may be more (found more, or stopped at the bound)."""
    found: list[str] = []
    cursor: int | str = 0
    for _ in range(MAX_STEPS):
        cursor, keys = await client.scan(cursor=cursor, match=pattern, count=SCAN_COUNT)
        found.extend(str(k) for k in keys)
        if len(found) > want:
            return sorted(set(found))[:want], True
        if int(cursor) == 0:
            return sorted(set(found)), False
    return sorted(set(found))[:want], True


async def redis_listing(client: Any, prefix: str, limit: int, principal: str | None = None) -> LedgerListing:
    """Up to `limit` live tasks (in key order) and current windows under `prefix`, of one principal or of all."""
    head = f"{prefix}:task:"
    mine = glob_escape(key_part(principal)) + "/*" if principal is not None else "*"
    keys, more = await _scan(client, glob_escape(head) + mine, limit)
    tasks: list[TaskState] = []
    if keys:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        for key, raw in zip(keys, await pipe.execute(), strict=True):
            if raw:  # expired between the scan and the read
                tasks.append(task_state(key[len(head) :], raw))
    who = key_part(principal) if principal is not None else None
    wins = f"{prefix}:win:"
    theirs = f"???:{glob_escape(who)}:*" if who is not None else "*"  # rpm:, tpm:, tpd:
    names, more_windows = await _scan(client, glob_escape(wins) + theirs, limit)
    windows: list[WindowCount] = []
    if names:
        now = time.time()
        for name, value in zip(names, await client.mget(names), strict=True):
            key, _, start = name[len(wins) :].rpartition(":")
            kind, _, subject = key.partition(":")
            seconds = WINDOW_SECONDS.get(kind)
            if value is None or seconds is None or not start.isdigit() or int(start) + seconds <= now:
                continue  # gone, not a window of ours, or already over (windows expire 5 s after they end)
            if who is None or subject == who:
                windows.append(WindowCount(key, seconds, int(start), int(value)))
    windows.sort(key=lambda w: (w.key, w.start))
    return LedgerListing("redis", tasks, windows, more or more_windows)
