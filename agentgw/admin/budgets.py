"""`GET /admin/budgets?limit=&principal=` (the Admin class has already checked the role): the live task budgets
(limits, spent, reserved, parents) and the rate windows counting now, per principal, as the ledger holds them.
404 `no_budgets` without budgets; 503 `budget_unavailable` when the ledger cannot be read."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from agentgw.budget.answers import BudgetUnavailable
from agentgw.budget.ledger import Ledger, LedgerListing, split_key
from agentgw.errors import GatewayError, NotFound
from agentgw.http import Scope, Send, send_bytes
from agentgw.secrets import Scrubber

log = logging.getLogger("agentgw.admin")

PATH = "/admin/budgets"
DEFAULT_LIMIT = 200
MAX_LIMIT = 5000
WINDOWS = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute", "tpd": "tokens_per_day"}


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _limit(text: str | None) -> int:
    try:
        limit = int(text) if text not in (None, "") else DEFAULT_LIMIT
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise GatewayError(
            f"limit must be an integer from 1 to {MAX_LIMIT}.", status=400, code="invalid_request"
        )
    return limit


def listing_body(got: LedgerListing, limit: int, now: float) -> dict[str, Any]:
    """The answer's JSON: tasks as the ledger keys them (decoded into principal and task id), windows grouped by
    principal."""
    tasks = []
    for st in got.tasks:
        principal, task_id = split_key(st.task)
        tasks.append(
            {
                "key": st.task,
                "task": task_id,
                "principal": principal,  # None: a child task the gateway minted (global)
                "limits": st.limits,
                "spent": st.spent,
                "reserved": st.reserved,
                "parents": st.chain,
            }
        )
    by_principal: dict[str, list[dict[str, Any]]] = {}
    for w in got.windows:
        kind, _, subject = w.key.partition(":")
        by_principal.setdefault(unquote(subject), []).append(
            {
                "window": WINDOWS.get(kind, kind),
                "seconds": w.seconds,
                "start": w.start,
                "resets_in_s": round(max(0.0, w.start + w.seconds - now), 3),
                "count": w.count,
            }
        )
    rates = [{"principal": p, "windows": ws} for p, ws in sorted(by_principal.items())]
    return {
        "ledger": got.kind,
        "limit": limit,
        "truncated": got.truncated,
        "tasks": tasks,
        "rate_windows": rates,
    }


class BudgetsAPI:
    def __init__(self, ledger: Ledger | None, scrubber: Scrubber | None = None) -> None:
        self.ledger = ledger
        self.scrubber = scrubber or Scrubber(())

    async def __call__(self, scope: Scope, send: Send) -> bool:
        """Answer `/admin/budgets`; False when the path is not ours."""
        if scope["path"] not in (PATH, PATH + "/"):
            return False
        if scope["method"] not in ("GET", "HEAD"):
            raise GatewayError("Use GET.", status=405, code="method_not_allowed")
        if self.ledger is None:
            raise NotFound("No budgets are configured.", code="no_budgets")
        q = _query(scope)
        limit = _limit(q.get("limit"))
        try:
            got = await self.ledger.listing(limit, q.get("principal") or None)
        except Exception as exc:  # Redis unreachable (or answering nonsense): say so, never a 500
            log.warning("budget ledger could not be listed: %s", exc)
            raise BudgetUnavailable(f"The budget ledger cannot be read ({type(exc).__name__}).") from None
        body = listing_body(got, limit, time.time())
        await send_bytes(send, 200, self.scrubber.data(orjson.dumps(body)))
        return True
