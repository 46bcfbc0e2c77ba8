"""The console at `/console`: a page and its scripts served from the package (nothing from anywhere else), and
sign-in: a credential (an admin or auditor API key, or a JWT) is exchanged for a session cookie. Every page's
data comes from the `/admin/*` API, which takes that cookie (admin/__init__.py); there is no other back door."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from agentgw.console.sessions import COOKIE, Session, Sessions, cookie_value, csrf_ok
from agentgw.errors import BadRequest, Forbidden, GatewayError, NotFound, Unauthenticated
from agentgw.exchange import Principal
from agentgw.http import ClientGone, Receive, Scope, Send, client_host, header_dict, read_body, send_bytes
from agentgw.stages.authn import Authenticator

if TYPE_CHECKING:
    from agentgw.settings import Settings

PREFIX = "/console"
# No inline script or style, nothing from another origin, never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
_MAX_LOGIN_BODY = 64 * 1024


def _assets() -> dict[str, tuple[bytes, bytes]]:
    """The console's files (name → (content type, bytes)), read once from the package."""
    out: dict[str, tuple[bytes, bytes]] = {}
    for item in resources.files("agentgw.console").joinpath("static").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in _TYPES:
            out[item.name] = (_TYPES[suffix], item.read_bytes())
    return out


def _json_error(err: GatewayError) -> bytes:
    return orjson.dumps({"error": {"message": err.message, "type": err.type, "code": err.code}})


class Console:
    """`GET /console` (the page), `GET /console/static/<file>`, `GET /console/session` (who is signed in, the CSRF
    token), `POST /console/login` `{"credential": "…"}`, `POST /console/logout`."""

    def __init__(
        self,
        auth: Authenticator,
        sessions: Sessions,
        admin_roles: list[str],
        auditor_roles: list[str],
        approver_roles: Sequence[str] = (),
    ) -> None:
        """`approver_roles`: who may decide approval requests (the page shows them the buttons; the API decides)."""
        self.auth, self.sessions = auth, sessions
        self.admin_roles, self.auditor_roles = frozenset(admin_roles), frozenset(auditor_roles)
        self.approver_roles = frozenset(approver_roles)
        self.assets = _assets()

    @classmethod
    def from_settings(cls, settings: Settings, auth: Authenticator) -> Console | None:
        """The console the settings describe, or None when `console.enabled` is false."""
        c = settings.console
        if not c.enabled:
            return None
        return cls(
            auth,
            Sessions(c.session_idle_s, c.session_max_s),
            settings.auth.admin_roles,
            settings.auth.auditor_roles,
            settings.approvals.approver_roles,
        )

    def may_sign_in(self, principal: Principal) -> bool:
        return bool((self.admin_roles | self.auditor_roles).intersection(principal.roles))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        try:
            if path in (PREFIX, PREFIX + "/") and method in ("GET", "HEAD"):
                await self._asset(send, "index.html")
            elif path.startswith(PREFIX + "/static/") and method in ("GET", "HEAD"):
                await self._asset(send, path[len(PREFIX + "/static/") :])
            elif path == PREFIX + "/session" and method == "GET":
                session = self.sessions.get(cookie_value(header_dict(scope)))
                if session is None:
                    raise Unauthenticated("Not signed in.", code="not_signed_in")
                await self._json(send, 200, self._about(session))
            elif path == PREFIX + "/login" and method == "POST":
                await self._login(scope, receive, send)
            elif path == PREFIX + "/logout" and method == "POST":
                await self._logout(scope, send)
            else:
                raise NotFound(f"No {method} {path}.", code="unknown_url")
        except GatewayError as err:
            await send_bytes(send, err.status, _json_error(err), extra={**_SECURITY, **err.headers})

    def _about(self, session: Session) -> dict[str, Any]:
        p = session.principal
        return {
            "subject": p.subject,
            "roles": list(p.roles),
            "csrf": session.csrf,
            "admin": bool(self.admin_roles.intersection(p.roles)),
            "approver": bool(self.approver_roles.intersection(p.roles)),
        }

    async def _asset(self, send: Send, name: str) -> None:
        found = self.assets.get(name)
        if found is None:
            raise NotFound("No such console file.", code="unknown_url")
        kind, body = found
        await send_bytes(send, 200, body, headers=[(b"content-type", kind)], extra=_SECURITY)

    async def _json(self, send: Send, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
        await send_bytes(send, status, orjson.dumps(body), extra={**_SECURITY, **(extra or {})})

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_dict(scope)
        if not headers.get("content-type", "").startswith("application/json"):
            # a cross-site form can only post form encodings; JSON from another origin needs CORS, never given
            raise BadRequest('Sign in with a JSON body: {"credential": "…"}.')
        try:
            raw = await read_body(receive, headers, _MAX_LOGIN_BODY)
        except ClientGone:
            return
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("The body is not JSON.") from None
        credential = data.get("credential") if isinstance(data, dict) else None
        if not isinstance(credential, str) or not credential.strip():
            raise BadRequest("Give an API key or a JWT as credential.")
        probe = {"authorization": f"Bearer {credential.strip()}", "host": headers.get("host", "")}
        principal, _ = await self.auth.authenticate(probe, client_host(scope), "admin")
        if not self.may_sign_in(principal):
            raise Forbidden("The console is for admins and auditors.", code="console_role_required")
        sid, session = self.sessions.create(principal)
        await self._json(send, 200, self._about(session), {"set-cookie": self._cookie(scope, sid)})

    async def _logout(self, scope: Scope, send: Send) -> None:
        headers = header_dict(scope)
        sid = cookie_value(headers)
        session = self.sessions.get(sid)
        if session is not None:
            if not csrf_ok(session, headers):
                raise Forbidden("Missing or wrong CSRF token.", code="csrf_failed")
            self.sessions.end(sid)
        await self._json(
            send, 200, {"signed_out": True}, {"set-cookie": self._cookie(scope, "", expire=True)}
        )

    @staticmethod
    def _cookie(scope: Scope, value: str, expire: bool = False) -> str:
        attrs = [f"{COOKIE}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if scope.get("scheme") == "https":
            attrs.append("Secure")
        if expire:
            attrs.append("Max-Age=0")
        return "; ".join(attrs)
