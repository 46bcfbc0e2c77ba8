"""Console sign-in through the JWT issuer's OpenID Connect login (authorization code flow with PKCE): the browser
is sent to the issuer, comes back with a code, and the token the gateway exchanges it for is verified like any
bearer JWT (issuer, audience, keys, roles). Pending logins live in memory for ten minutes."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from agentgw.errors import BadRequest, GatewayError

PENDING_S = 600.0
_MAX_PENDING = 1000


class LoginFailed(GatewayError):
    status, code, type = 400, "oidc_login_failed", "authentication_error"


@dataclass(slots=True)
class _Pending:
    nonce: str
    verifier: str
    redirect_uri: str
    created: float


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class OIDCLogin:
    """`start(redirect_uri)` → (state, the issuer's authorization URL); `finish(state, code)` → the tokens the
    issuer's token endpoint answered (the caller verifies them). Discovery is read once from the issuer."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        scopes: list[str],
        timeout_s: float = 10.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id, self.client_secret, self.scopes = client_id, client_secret, scopes
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._meta: dict[str, Any] | None = None
        self._pending: dict[str, _Pending] = {}

    async def _discover(self) -> dict[str, Any]:
        if self._meta is None:
            url = self.issuer + "/.well-known/openid-configuration"
            meta = await self._json("GET", url)
            if meta.get("issuer", "").rstrip("/") != self.issuer or not all(
                isinstance(meta.get(k), str) for k in ("authorization_endpoint", "token_endpoint")
            ):
                raise LoginFailed("The issuer's OpenID configuration does not describe this issuer's login.")
            self._meta = meta
        return self._meta

    async def _json(self, method: str, url: str, form: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as http,
                http.request(method, url, data=form, headers={"accept": "application/json"}) as r,
            ):
                body = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError):
            raise LoginFailed("The identity provider could not be reached.", status=502) from None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if status != 200 or not isinstance(data, dict):
            raise LoginFailed(f"The identity provider answered {status}.", status=502)
        return data

    async def start(self, redirect_uri: str) -> tuple[str, str]:
        meta = await self._discover()
        now = time.monotonic()
        for s, p in list(self._pending.items()):
            if now - p.created > PENDING_S:
                del self._pending[s]
        if len(self._pending) >= _MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        self._pending[state] = _Pending(nonce, verifier, redirect_uri, now)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
        sep = "&" if "?" in meta["authorization_endpoint"] else "?"
        return state, meta["authorization_endpoint"] + sep + urlencode(query)

    async def finish(self, state: str, code: str) -> tuple[list[str], str]:
        """The tokens to try, best first (a JWT access token, then the ID token), and the nonce the ID token must
        carry. LoginFailed for an unknown or expired state, or an answer without tokens."""
        pending = self._pending.pop(state, None)
        if pending is None or time.monotonic() - pending.created > PENDING_S:
            raise LoginFailed("This sign-in was not started here or took too long; start again.")
        if not code:
            raise BadRequest("The identity provider sent no code.")
        meta = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": pending.verifier,
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        answer = await self._json("POST", meta["token_endpoint"], form)
        tokens = [t for t in (answer.get("access_token"), answer.get("id_token")) if isinstance(t, str) and t]
        if not tokens:
            raise LoginFailed("The identity provider answered without a token.")
        return tokens, pending.nonce
