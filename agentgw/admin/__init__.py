"""Operator endpoints: `/admin/*` (admin roles; auditor roles read only: policy check, task budgets, the audit
trace API; approvers too: `/admin/approvals`, see approvals.py), by credential or console session, and the MCP
OAuth protected-resource metadata (RFC 9728) at `/.well-known/oauth-protected-resource[/mcp…]` when JWTs are
configured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from agentgw.admin.approvals import PREFIX as APPROVALS
from agentgw.admin.approvals import ApprovalsAPI
from agentgw.admin.budgets import BudgetsAPI
from agentgw.admin.registry import RegistryAPI
from agentgw.admin.tools import PREFIX as TOOLS
from agentgw.admin.tools import PinBoard, serve_tools
from agentgw.admin.trace import TraceAPI
from agentgw.admin.usage import UsageAPI
from agentgw.approvals import Approvals
from agentgw.audit.store import AuditStore
from agentgw.budget.ledger import Ledger
from agentgw.console.sessions import Sessions, cookie_value, csrf_ok
from agentgw.errors import Forbidden, GatewayError, NotFound
from agentgw.exchange import Principal
from agentgw.http import Receive, Scope, Send, client_host, header_dict, send_bytes
from agentgw.jwt_auth import JWTSettings
from agentgw.names import parse_who
from agentgw.policy import PolicyStore
from agentgw.secrets import Scrubber
from agentgw.stages.authn import Authenticator, credential
from agentgw.stages.budget import BudgetStage

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def _error(err: GatewayError) -> bytes:
    return orjson.dumps({"error": {"message": err.message, "type": err.type, "code": err.code}})


def protected_resource_url(jwt: JWTSettings, fallback: str) -> str:
    return (jwt.resource or fallback).rstrip("/")


class Admin:
    def __init__(
        self,
        auth: Authenticator,
        policy: PolicyStore,
        admin_roles: list[str],
        jwt: JWTSettings | None,
        mcp_url: Callable[[], str],
        ledger: Ledger | None = None,
        audit: AuditStore | None = None,
        scrubber: Scrubber | None = None,
        approvals: Approvals | None = None,
        auditor_roles: list[str] | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        """`auditor_roles`: roles that read everything here and change nothing; `sessions`: the console's signed-in
        sessions, whose cookie stands in for a credential (state changes must echo the session's CSRF token)."""
        self.auth = auth
        self.auditor_roles = frozenset(auditor_roles or ())
        self.sessions = sessions
        self.policy = policy
        self.admin_roles = set(admin_roles)
        self.jwt = jwt
        self.mcp_url = mcp_url
        self.ledger = ledger
        self.trace = TraceAPI(audit, scrubber)
        self.registry = RegistryAPI(scrubber)  # its sources are set by the app, like `pins`
        self.budgets = BudgetsAPI(ledger, scrubber)
        self.usage = UsageAPI(audit, scrubber)
        self.approvals = ApprovalsAPI(approvals, self.admin_roles)
        self.pins: Callable[[], PinBoard | None] = lambda: None  # the MCP plane's tool pins (set by the app)

    async def task_budget(self, scope: Scope, send: Send, task_id: str) -> None:
        """Limits, spent, reserved, ancestors and children of one task's budget."""
        if self.ledger is None:
            raise NotFound("No budgets are configured.", code="no_budgets")
        q = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        key = BudgetStage.task_key(task_id, q.get("principal"))
        if key is None:
            raise GatewayError(
                "Name the task's principal: ?principal=<subject>.", status=400, code="invalid_request"
            )
        st = await self.ledger.state(key)
        if st is None:
            raise NotFound(f"No budget is recorded for task {task_id}.", code="task_not_found")
        body = {
            "task": task_id,
            "key": key,
            "limits": st.limits,
            "spent": st.spent,
            "reserved": st.reserved,
            "parents": st.chain,
            "children": await self.ledger.children(key),
        }
        await send_bytes(send, 200, orjson.dumps(body))

    async def metadata(self, scope: Scope, receive: Receive, send: Send) -> None:
        """RFC 9728 metadata for the MCP endpoint (path-inserted and root forms)."""
        if self.jwt is None:
            await send_bytes(
                send, 404, _error(NotFound("No protected-resource metadata: JWTs are not configured."))
            )
            return
        resource = protected_resource_url(self.jwt, self.mcp_url())
        suffix = scope["path"][len(WELL_KNOWN) :]
        if (
            suffix
            and suffix != urlsplit(resource).path
            and not suffix.startswith("/mcp")
            and not suffix.startswith("/a2a/")
        ):
            await send_bytes(send, 404, _error(NotFound("Unknown protected resource.")))
            return
        if suffix.startswith(("/mcp/", "/a2a/")):  # a virtual server or an agent: its own resource URL
            resource = resource.rsplit("/mcp", 1)[0] + suffix
        body: dict[str, Any] = {
            "resource": resource,
            "authorization_servers": [self.jwt.issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": self.jwt.required_scopes,
        }
        await send_bytes(send, 200, orjson.dumps(body), extra={"cache-control": "max-age=300"})

    async def principal(self, scope: Scope, headers: dict[str, str]) -> Principal:
        """Who is asking: the credential's principal, or, without one, the console session's (a state change
        through a session must carry its CSRF token: a forged cross-site request cannot)."""
        if self.sessions is not None and credential(headers) is None:
            session = await self.sessions.get(cookie_value(headers))
            if session is not None:
                if scope["method"] not in ("GET", "HEAD") and not csrf_ok(session, headers):
                    raise Forbidden("Missing or wrong CSRF token.", code="csrf_failed")
                return session.principal
        principal, _ = await self.auth.authenticate(headers, client_host(scope), "admin")
        return principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_dict(scope)
        try:
            principal = await self.principal(scope, headers)
            path = scope["path"]
            reading = scope["method"] in ("GET", "HEAD")
            auditor = reading and bool(self.auditor_roles.intersection(principal.roles))
            if path == APPROVALS or path.startswith(APPROVALS + "/"):  # approvers need no admin role
                await self.approvals(scope, receive, send, principal, auditor)
                return
            if not (self.admin_roles.intersection(principal.roles) or auditor):
                raise Forbidden(
                    "The admin API needs an admin role (an auditor role reads only).",
                    code="admin_role_required",
                )
            if path == "/admin/policy/check" and scope["method"] == "GET":
                q = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
                missing = [k for k in ("subject", "object", "action") if not q.get(k)]
                if missing:
                    raise GatewayError(
                        f"Missing query parameters: {', '.join(missing)}.", status=400, code="invalid_request"
                    )
                subject, roles = parse_who(q["subject"])  # `role:<r>` is the role alone; bare names subjects
                roles = (*roles, *(r for r in q.get("roles", "").split(",") if r))
                facts: dict[str, Any] | None = None
                if "args" in q:  # the call's arguments (JSON), for conditional lines
                    try:
                        args = orjson.loads(q["args"])
                    except orjson.JSONDecodeError:
                        raise GatewayError("args is not JSON.", status=400, code="invalid_request") from None
                    who: dict[str, Any] = {"sub": subject, "roles": list(roles), "claims": {}}
                    facts = {"args": args, "principal": who, "task": {}, "target": q["object"]}
                d = self.policy.decide(subject, roles, q["object"], q["action"], facts)
                body = {
                    "allowed": d.allowed,
                    "effect": d.effect,
                    "unmet": list(d.unmet),
                    "errors": list(d.errors),
                    "rule": d.rule,
                    "line": d.line,
                    "subject": subject,  # None: the roles alone
                    "roles": list(roles),
                    "object": q["object"],
                    "action": q["action"],
                }
                await send_bytes(send, 200, orjson.dumps(body))
                return
            if path.startswith("/admin/tasks/") and path.endswith("/budget") and scope["method"] == "GET":
                await self.task_budget(scope, send, path[len("/admin/tasks/") : -len("/budget")])
                return
            if await self.trace(scope, send):
                return
            if await self.registry(scope, send) or await self.budgets(scope, send):
                return
            if await self.usage(scope, send):
                return
            if path == TOOLS or path.startswith(TOOLS + "/"):
                await serve_tools(self.pins(), principal, scope, receive, send)
                return
            raise NotFound(f"Unknown admin path {path}.", code="unknown_url")
        except GatewayError as err:
            await send_bytes(send, err.status, _error(err), extra=err.headers)
