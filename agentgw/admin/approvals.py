"""The approvals API under `/admin/approvals`: `GET` lists requests (newest first, `?state=` pending by default,
`all` for every state, `&limit=`), `GET /admin/approvals/{id}` shows one, `POST /admin/approvals/{id}` with
`{"decision": "approve"|"deny", "reason": "…"}` decides one. Listing is open to approvers, admins and auditors; deciding
only to approvers (`approvals.approver_roles`), never on a request of one's own."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from agentgw.approvals import Approvals
from agentgw.errors import BadRequest, Forbidden, GatewayError
from agentgw.exchange import Principal
from agentgw.http import ClientGone, Receive, Scope, Send, header_dict, read_body, send_bytes

PREFIX = "/admin/approvals"
_MAX_BODY = 16 * 1024
_MAX_REASON = 1000


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


class ApprovalsAPI:
    def __init__(self, approvals: Approvals | None, admin_roles: set[str]) -> None:
        self.approvals = approvals
        self.admin_roles = frozenset(admin_roles)

    def allowed(self, principal: Principal) -> bool:
        """Who may use this API at all (an approver, or an admin to look)."""
        if self.approvals is None:
            return bool(self.admin_roles.intersection(principal.roles))
        return self.approvals.is_approver(principal) or bool(self.admin_roles.intersection(principal.roles))

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal, auditor: bool = False
    ) -> None:
        """`auditor`: the principal reads with an auditor role (lists and shows, never decides)."""
        approvals = self.approvals
        if approvals is None:
            raise GatewayError(
                "Approvals are not enabled on this gateway.", status=404, code="approvals_disabled"
            )
        if not (auditor or self.allowed(principal)):
            raise Forbidden("The approvals API needs an approver or an admin role.", code="not_an_approver")
        path, method = scope["path"], scope["method"]
        rest = path[len(PREFIX) :].strip("/")
        body: Any
        if not rest and method == "GET":
            q = _query(scope)
            state: str | None = q.get("state", "pending") or "pending"
            if state == "all":
                state = None
            try:
                limit = int(q.get("limit", "100"))
            except ValueError:
                raise BadRequest("limit must be an integer.") from None
            if not 1 <= limit <= 1000:
                raise BadRequest("limit must be between 1 and 1000.")
            body = {"approvals": [a.as_dict() for a in await approvals.list(state, limit)]}
        elif rest and "/" not in rest and method == "GET":
            body = (await approvals.get(rest)).as_dict()
        elif rest and "/" not in rest and method == "POST":
            try:
                raw = await read_body(receive, header_dict(scope), _MAX_BODY)
            except ClientGone:  # nobody to answer; nothing was decided
                return
            decision, reason = _decision(raw)
            body = (await approvals.decide(rest, decision, principal, reason)).as_dict()
        else:
            raise GatewayError(f"No {method} {path}.", status=405, code="method_not_allowed")
        await send_bytes(send, 200, orjson.dumps(body))


def _decision(raw: bytes) -> tuple[str, str | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest('The body must be JSON: {"decision": "approve"|"deny", "reason": "…"}.') from None
    if not isinstance(data, dict) or set(data) - {"decision", "reason"}:
        raise BadRequest('The body must be {"decision": "approve"|"deny", "reason": "…"} and nothing else.')
    decision, reason = data.get("decision"), data.get("reason")
    if decision not in ("approve", "deny"):
        raise BadRequest('decision must be "approve" or "deny".')
    if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_REASON):
        raise BadRequest(f"reason must be a string of at most {_MAX_REASON} characters.")
    return str(decision), reason
