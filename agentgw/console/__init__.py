"""The console at `/console`: a page and its scripts served from the package (nothing from anywhere else), and
sign-in: a credential (an admin or auditor API key, or a JWT) is exchanged for a session cookie. Every page's
data comes from the `/admin/*` API, which takes that cookie (admin/__init__.py); there is no other back door."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import orjson

from agentgw.console.oidc import PENDING_S, LoginFailed, OIDCLogin
from agentgw.console.sessions import COOKIE, Session, Sessions, cookie_value, csrf_ok, make_sessions
from agentgw.errors import BadRequest, Forbidden, GatewayError, NotFound, Unauthenticated
from agentgw.exchange import Principal
from agentgw.http import ClientGone, Receive, Scope, Send, client_host, header_dict, read_body, send_bytes
from agentgw.stages.authn import Authenticator

if TYPE_CHECKING:
    from agentgw.settings import Settings

PREFIX = "/console"
OIDC_COOKIE = "agentgw_console_login"
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
    token), `POST /console/login` `{"credential": "…"}`, `POST /console/logout`, `GET /console/options`, and with
    OIDC `GET /console/oidc/start` (to the issuer) and `/console/oidc/callback` (back with a code)."""

    def __init__(
        self,
        auth: Authenticator,
        sessions: Sessions,
        admin_roles: list[str],
        auditor_roles: list[str],
        approver_roles: Sequence[str] = (),
        oidc: OIDCLogin | None = None,
        redirect_url: str | None = None,
    ) -> None:
        """`approver_roles`: who may decide approval requests (the page shows them the buttons; the API decides);
        `oidc`: sign-in through the JWT issuer's login, `redirect_url` its callback (default: this origin's)."""
        self.auth, self.sessions = auth, sessions
        self.oidc, self.redirect_url = oidc, redirect_url
        self.admin_roles, self.auditor_roles = frozenset(admin_roles), frozenset(auditor_roles)
        self.approver_roles = frozenset(approver_roles)
        self.assets = _assets()

    @classmethod
    def from_settings(cls, settings: Settings, auth: Authenticator) -> Console | None:
        """The console the settings describe, or None when `console.enabled` is false."""
        c = settings.console
        if not c.enabled:
            return None
        oidc = None
        if c.oidc is not None and settings.auth.jwt is not None:
            secret = c.oidc.client_secret.get_secret_value() if c.oidc.client_secret else None
            oidc = OIDCLogin(settings.auth.jwt.issuer, c.oidc.client_id, secret, c.oidc.scopes)
        return cls(
            auth,
            make_sessions(settings),
            settings.auth.admin_roles,
            settings.auth.auditor_roles,
            settings.approvals.approver_roles,
            oidc,
            c.oidc.redirect_url if c.oidc is not None else None,
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
                session = await self.sessions.get(cookie_value(header_dict(scope)))
                if session is None:
                    raise Unauthenticated("Not signed in.", code="not_signed_in")
                await self._json(send, 200, self._about(session))
            elif path == PREFIX + "/login" and method == "POST":
                await self._login(scope, receive, send)
            elif path == PREFIX + "/logout" and method == "POST":
                await self._logout(scope, send)
            elif path == PREFIX + "/options" and method == "GET":  # what the sign-in form offers
                await self._json(send, 200, {"oidc": self.oidc is not None})
            elif path == PREFIX + "/oidc/start" and method == "GET" and self.oidc is not None:
                await self._oidc_start(scope, send, self.oidc)
            elif path == PREFIX + "/oidc/callback" and method == "GET" and self.oidc is not None:
                await self._oidc_callback(scope, send, self.oidc)
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
        sid, session = await self.sessions.create(principal)
        await self._json(send, 200, self._about(session), {"set-cookie": self._cookie(scope, sid)})

    def _callback_url(self, scope: Scope) -> str:
        if self.redirect_url:
            return self.redirect_url
        host = header_dict(scope).get("host", "")  # the front door has checked it (no DNS rebinding)
        return f"{scope.get('scheme', 'http')}://{host}{PREFIX}/oidc/callback"

    async def _oidc_start(self, scope: Scope, send: Send, oidc: OIDCLogin) -> None:
        """To the issuer's login; the state rides in a short-lived cookie that must come back with the code."""
        state, url = await oidc.start(self._callback_url(scope))
        cookie = self._cookie(scope, state, name=OIDC_COOKIE, same_site="Lax", max_age=int(PENDING_S))
        await send_bytes(
            send, 302, b"", headers=[], extra={**_SECURITY, "location": url, "set-cookie": cookie}
        )

    async def _oidc_callback(self, scope: Scope, send: Send, oidc: OIDCLogin) -> None:
        """Back from the issuer: the code for tokens, a token verified like any bearer JWT (its nonce checked when
        it is the ID token), then a session, as a signed-in key would get. Any failure: back to the sign-in form
        with a code to show, and no session."""
        q = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        headers = header_dict(scope)
        state = q.get("state", "")
        clear = self._cookie(scope, "", name=OIDC_COOKIE, same_site="Lax", max_age=0)
        try:
            if q.get("error"):
                raise LoginFailed("The identity provider refused the sign-in.")
            expected = cookie_value(headers, OIDC_COOKIE)
            if not state or not expected or not hmac.compare_digest(state, expected):
                raise LoginFailed("This sign-in was not started in this browser.")
            tokens, nonce = await oidc.finish(state, q.get("code", ""))
            principal = await self._verified(scope, headers, tokens, nonce)
            if not self.may_sign_in(principal):
                raise Forbidden("The console is for admins and auditors.", code="console_role_required")
        except GatewayError as err:
            where = f"{PREFIX}/?error={quote(err.code)}"
            await send_bytes(
                send, 302, b"", headers=[], extra={**_SECURITY, "location": where, "set-cookie": clear}
            )
            return
        sid, _ = await self.sessions.create(principal)
        raw = [(b"location", f"{PREFIX}/".encode())]
        raw += [(b"set-cookie", c.encode()) for c in (clear, self._cookie(scope, sid))]
        await send_bytes(send, 302, b"", headers=raw, extra=_SECURITY)

    async def _verified(
        self, scope: Scope, headers: dict[str, str], tokens: list[str], nonce: str
    ) -> Principal:
        failure: GatewayError = LoginFailed("The identity provider's token is not one this gateway accepts.")
        for token in tokens:
            probe = {"authorization": f"Bearer {token}", "host": headers.get("host", "")}
            try:
                principal, _ = await self.auth.authenticate(probe, client_host(scope), "admin")
            except GatewayError as err:
                failure = err
                continue
            if "nonce" in principal.claims and principal.claims["nonce"] != nonce:
                raise LoginFailed("The ID token was issued for another sign-in (nonce).")
            return principal
        raise failure

    async def _logout(self, scope: Scope, send: Send) -> None:
        headers = header_dict(scope)
        sid = cookie_value(headers)
        session = await self.sessions.get(sid)
        if session is not None:
            if not csrf_ok(session, headers):
                raise Forbidden("Missing or wrong CSRF token.", code="csrf_failed")
            await self.sessions.end(sid)
        await self._json(
            send, 200, {"signed_out": True}, {"set-cookie": self._cookie(scope, "", expire=True)}
        )

    @staticmethod
    def _cookie(
        scope: Scope,
        value: str,
        expire: bool = False,
        name: str = COOKIE,
        same_site: str = "Strict",
        max_age: int | None = None,
    ) -> str:
        """The session cookie (or the login's state cookie: Lax, as the issuer's redirect back is cross-site)."""
        attrs = [f"{name}={value}", "Path=/console" if name == OIDC_COOKIE else "Path=/", "HttpOnly"]
        attrs.append(f"SameSite={same_site}")
        if scope.get("scheme") == "https":
            attrs.append("Secure")
        if expire:
            max_age = 0
        if max_age is not None:
            attrs.append(f"Max-Age={max_age}")
        return "; ".join(attrs)
