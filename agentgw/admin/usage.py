"""The usage API under `/admin/` (the Admin class has already checked the admin role):
`GET /admin/usage?group_by=&since=&until=&step=&limit=`: calls, tokens, cost, denials and errors of the audit
records by principal, model, tool, agent, plane or status over time (the rollup and the keys: audit/usage.py)."""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson

from agentgw.audit.store import AuditStore
from agentgw.audit.usage import BadUsageQuery, usage_query
from agentgw.errors import GatewayError, NotFound
from agentgw.http import Scope, Send, send_bytes
from agentgw.secrets import Scrubber

PATH = "/admin/usage"


class UsageAPI:
    def __init__(self, store: AuditStore | None, scrubber: Scrubber | None = None) -> None:
        self.store = store
        self.scrubber = scrubber or Scrubber(())  # keys come from records, which may predate a secret

    async def __call__(self, scope: Scope, send: Send) -> bool:
        """Answer `GET /admin/usage`; False when the request is not ours.

        Parameters (all optional): `group_by` principal (default), model, tool, agent, plane or status (model:
        `llm` records by target `llm:<model>`; tool: `mcp` records by `mcp:<server>/<name>`, keyed
        `<server>/<name>`; agent: `a2a` records by `a2a:<agent>`; details in audit/usage.py); `since`
        and `until` as `24h` / `7d` (ago), `now` or ISO 8601 (default: the last 24 hours), widened to whole steps
        (or minutes); `step` `5m`, `1h`, `1d`, … (whole minutes; without it one bucket for the whole range);
        `limit` groups shown (default 20, at most 1000), the rest summed as `other`. Answer: `{group_by, since,
        until, step (seconds or null), totals, groups: [{key, calls, input_tokens, output_tokens, total_tokens,
        cost, denied, errors, series: [{t, …the same metrics}]}], other}`; bad parameters 400 invalid_request."""
        if scope["method"] != "GET" or scope["path"] != PATH:
            return False
        if self.store is None:
            raise NotFound("Audit is disabled on this gateway.", code="audit_disabled")
        raw = scope.get("query_string", b"").decode("latin-1")
        params = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        try:
            q = usage_query(params)
        except BadUsageQuery as exc:
            raise GatewayError(f"{exc}.", status=400, code="invalid_request") from None
        body = await self.store.usage(q)
        await send_bytes(send, 200, self.scrubber.data(orjson.dumps(body)))
        return True
