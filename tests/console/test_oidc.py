"""Console sign-in through the JWT issuer's OpenID Connect login, against a small identity provider on loopback
that speaks the authorization code flow with PKCE: an admin at the provider lands in the console signed in; a
user without an admin or auditor role comes back to the sign-in form with the reason; a callback this browser did
not start, a wrong PKCE verifier or a replayed nonce gets no session."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.console.test_browser import WAIT_MS, browser
from tests.support import MOCK_REGISTRY, gateway, serve
from tests.test_jwt import JWK1, KEY1

CLIENT, SECRET = "agentgw-console", "console-client-secret-0123456789"


class Provider:
    """The identity provider: `user` is who signs in at its login page (which signs them in at once)."""

    def __init__(self, sub: str = "alice", roles: tuple[str, ...] = ("admins",)) -> None:
        self.sub, self.roles = sub, roles
        self.url = ""
        self.codes: dict[str, dict[str, str]] = {}
        self.nonce_override: str | None = None
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.meta),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/jwks", self.jwks),
            ]
        )

    async def meta(self, request: Request) -> Response:
        u = self.url
        return JSONResponse(
            {
                "issuer": u,
                "authorization_endpoint": f"{u}/authorize",
                "token_endpoint": f"{u}/token",
                "jwks_uri": f"{u}/jwks",
            }
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [JWK1]})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        assert (
            q["client_id"] == CLIENT and q["response_type"] == "code" and q["code_challenge_method"] == "S256"
        )
        code = secrets.token_urlsafe(16)
        self.codes[code] = dict(q)
        return RedirectResponse(q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]}), 302)

    async def token(self, request: Request) -> Response:
        form = await request.form()
        asked = self.codes.pop(str(form["code"]), None)
        if (
            asked is None
            or form.get("client_secret") != SECRET
            or form["redirect_uri"] != asked["redirect_uri"]
        ):
            return JSONResponse({"error": "invalid_grant"}, 400)
        digest = hashlib.sha256(str(form["code_verifier"]).encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != asked["code_challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        now = int(time.time())
        claims = {"iss": self.url, "aud": CLIENT, "sub": self.sub, "iat": now, "exp": now + 300,
                  "roles": list(self.roles), "nonce": self.nonce_override or asked["nonce"]}  # fmt: skip
        id_token = jwt.encode(claims, KEY1, algorithm="RS256", headers={"kid": "k1"})
        return JSONResponse(
            {"access_token": "opaque-" + secrets.token_hex(8), "token_type": "Bearer", "id_token": id_token}
        )


def oidc_settings(issuer: str) -> dict[str, Any]:
    return {
        "auth": {"jwt": {"issuer": issuer, "audiences": ["agentgw", CLIENT], "jwks_url": f"{issuer}/jwks"}},
        "console": {"oidc": {"client_id": CLIENT, "client_secret": SECRET}},
    }


@contextlib.asynccontextmanager
async def provider_sign_in(tmp: Path, idp: Provider) -> AsyncIterator[Any]:
    """A gateway trusting `idp`, and a page that clicked "Sign in with your identity provider" on the console."""
    async with serve(idp.app) as idp_url:
        idp.url = idp_url
        async with gateway(tmp, MOCK_REGISTRY, oidc_settings(idp_url)) as (url, _), browser() as b:
            page = await b.new_page()
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{url}/console")
            await page.click("#oidc a")
            yield page


async def test_an_admin_at_the_identity_provider_lands_in_the_console_signed_in(tmp_path: Path) -> None:
    async with provider_sign_in(tmp_path, Provider()) as page:
        await page.wait_for_selector("#task-list")
        who = await page.inner_text("#who")
        cookies = {c["name"]: c for c in await page.context.cookies()}
    assert who.startswith("alice") and "admins" in who
    session = cookies["agentgw_console"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert "agentgw_console_login" not in cookies  # the login's state is spent


async def test_a_provider_user_without_a_console_role_comes_back_to_the_form_with_the_reason(
    tmp_path: Path,
) -> None:
    async with provider_sign_in(tmp_path, Provider(sub="bob", roles=("agents",))) as page:
        await page.wait_for_function("() => document.querySelector('#signin-error').textContent.length > 0")
        message = await page.inner_text("#signin-error")
        status = await page.evaluate("fetch('/console/session').then(r => r.status)")
    assert "admins and auditors" in message
    assert status == 401


async def test_a_callback_not_started_in_this_browser_or_with_a_foreign_nonce_gets_no_session(
    tmp_path: Path,
) -> None:
    idp = Provider()
    async with serve(idp.app) as idp_url:
        idp.url = idp_url
        async with gateway(tmp_path, MOCK_REGISTRY, oidc_settings(idp_url)) as (url, _):
            async with httpx.AsyncClient(base_url=url) as victim, httpx.AsyncClient(base_url=url) as attacker:
                # the attacker starts a login and hands the victim's browser the callback (login CSRF)
                start = await attacker.get("/console/oidc/start")
                async with httpx.AsyncClient() as http:
                    back = await http.get(start.headers["location"])
                planted = await victim.get(back.headers["location"])
                # a login whose ID token carries another login's nonce
                idp.nonce_override = "someone-elses-nonce"
                start = await victim.get("/console/oidc/start")
                async with httpx.AsyncClient() as http:
                    back = await http.get(start.headers["location"])
                replayed = await victim.get(back.headers["location"])
                options = await victim.get("/console/options")
    for answer in (planted, replayed):
        assert answer.status_code == 302 and answer.headers["location"] == "/console/?error=oidc_login_failed"
        assert "agentgw_console=" not in answer.headers.get("set-cookie", "")
    assert options.json() == {"oidc": True}
