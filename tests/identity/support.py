"""Real counterparts for the gateway's outbound identity: a verifier that checks assertions against the gateway's
JWKS fetched over HTTP (as an upstream would), an MCP upstream that refuses calls without a valid assertion, and
an RFC 8693 token endpoint (a small Starlette app) that verifies the subject token the same way."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agentgw.identity import JWKS_PATH
from tests.mcp.support import Upstream

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
CLIENT_ID, CLIENT_SECRET = "agentgw-client", "client-secret-0123456789"


@dataclass
class Verifier:
    """Checks a gateway assertion: signature by a key in the JWKS at `gateway + JWKS_PATH` (fetched over HTTP on
    an unknown kid, like PyJWKClient), and the audience."""

    gateway: str = ""
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetches: int = 0

    async def fetch(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            resp = await http.get(self.gateway + JWKS_PATH)
        resp.raise_for_status()
        self.fetches += 1
        jwks: dict[str, Any] = resp.json()
        self.keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id}
        return jwks

    async def verify(self, token: str, audience: str) -> dict[str, Any]:
        kid = jwt.get_unverified_header(token).get("kid")
        if kid not in self.keys:
            await self.fetch()
        key = self.keys[kid]
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["ES256", "RS256"],
            audience=audience,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
        return claims


class VerifyingUpstream(Upstream):
    """The tests' MCP upstream, which also refuses (401) any request whose identity header is present but does
    not verify, and keeps the claims of every one that does."""

    def __init__(self, name: str, verifier: Verifier, header: str = "x-agentgw-identity", **kw: Any) -> None:
        super().__init__(name, **kw)
        self.verifier = verifier
        self.header = header
        self.audience = ""
        self.claims: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            token = headers.get(self.header)
            if token is not None:
                try:
                    self.claims.append(await self.verifier.verify(token, self.audience))
                except jwt.PyJWTError:
                    await JSONResponse({"error": "invalid identity"}, 401)(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


@dataclass
class TokenEndpoint:
    """RFC 8693 token exchange: client_secret_basic, a subject token that must verify against the gateway's JWKS
    with `aud` = this endpoint; issues `xt-<n>-<sub>`. Scriptable: a failing status, a short expiry, a gate."""

    verifier: Verifier
    url: str = ""
    expires_in: int = 3600
    fail: int | None = None
    gate: anyio.Event | None = None  # answers wait for this
    hits: list[dict[str, Any]] = field(default_factory=list)  # (form, subject claims) of every request
    arrived: anyio.Event = field(default_factory=anyio.Event)
    _n: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/token", self.token, methods=["POST"])])

    async def token(self, request: Request) -> JSONResponse:
        form = dict(await request.form())
        auth = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        record: dict[str, Any] = {"form": form, "authorization": auth}
        self.hits.append(record)
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            return JSONResponse({"error": "invalid_grant", "error_description": "refused"}, self.fail)
        if auth != expected:
            return JSONResponse({"error": "invalid_client"}, 401)
        if form.get("grant_type") != GRANT or form.get("subject_token_type") != JWT_TYPE:
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        try:
            claims = await self.verifier.verify(str(form["subject_token"]), self.url)
        except (jwt.PyJWTError, KeyError):
            return JSONResponse({"error": "invalid_grant"}, 400)
        record["subject"] = claims
        return JSONResponse(
            {
                "access_token": f"xt-{next(self._n)}-{claims['sub']}",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": self.expires_in,
            }
        )
