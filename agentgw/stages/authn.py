"""Authentication: who is calling. Decides a Principal from `Authorization: Bearer` (an API key or, when
configured, a JWT) or `x-api-key`, and which credential kinds each plane accepts (`auth.accept`).

Fails with 401 (`missing_api_key`, `invalid_api_key`, `invalid_token`) carrying a `WWW-Authenticate`
challenge; the credential itself is never stored or logged.
"""

from __future__ import annotations

from agentgw.errors import Forbidden, Unauthenticated
from agentgw.exchange import Exchange, Principal
from agentgw.frontdoor import loopback_host
from agentgw.jwt_auth import JWTVerifier, TokenError, looks_like_jwt
from agentgw.keys import KeyStore
from agentgw.pipeline import Stage
from agentgw.settings import is_loopback


def credential(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Authenticator:
    """API keys and JWTs behind one call; `accept` maps a plane to the credential kinds it takes."""

    def __init__(
        self,
        keys: KeyStore,
        jwt: JWTVerifier | None = None,
        accept: dict[str, list[str]] | None = None,
        challenge: dict[str, str] | None = None,
    ) -> None:
        self.keys = keys
        self.jwt = jwt
        self.accept = accept or {}
        self.challenge = challenge or {}  # plane → extra WWW-Authenticate parameters (e.g. resource_metadata)
        self.last_scopes: frozenset[str] = frozenset()

    def _fail(self, plane: str, message: str, code: str, error: str | None = None) -> Unauthenticated:
        params = self.challenge.get(plane, "")
        parts = [p for p in (f'error="{error}"' if error else "", params) if p]
        header = "Bearer " + ", ".join(parts) if parts else "Bearer"
        return Unauthenticated(message, code=code, headers={"WWW-Authenticate": header})

    def _allowed(self, plane: str, kind: str) -> bool:
        kinds = self.accept.get(plane)
        return kinds is None or kind in kinds

    async def authenticate(
        self, headers: dict[str, str], client: str | None, plane: str
    ) -> tuple[Principal, frozenset[str]]:
        """The principal and its scopes (API keys carry none), or Unauthenticated."""
        token = credential(headers)
        if token is None:
            raise self._fail(
                plane,
                "Missing credentials: send 'Authorization: Bearer <key>' or 'x-api-key'.",
                "missing_api_key",
            )
        if self.jwt is not None and looks_like_jwt(token):
            if not self._allowed(plane, "jwt"):
                raise self._fail(plane, "JWTs are not accepted here.", "invalid_token", "invalid_token")
            try:
                principal, scopes = await self.jwt.verify(token)
            except TokenError as err:
                raise self._fail(
                    plane, f"Invalid token: {err.reason}.", "invalid_token", "invalid_token"
                ) from None
            required = self.jwt.cfg.required_scopes
            if plane == "mcp" and required and not scopes.issuperset(required):
                # MCP authorization: 403 with a challenge naming the scopes, so the client can step up.
                params = ", ".join(
                    p for p in (f'scope="{" ".join(required)}"', self.challenge.get(plane, "")) if p
                )
                raise Forbidden(
                    "The token lacks the scopes this endpoint needs.",
                    code="insufficient_scope",
                    headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", {params}'},
                )
            return principal, scopes
        hit = self.keys.lookup(token)
        if (
            hit is not None
            and hit[1]
            and not (client and is_loopback(client) and loopback_host(headers.get("host", "")))
        ):
            hit = None  # demo keys only work from loopback peers naming a loopback host (no DNS rebinding)
        if hit is None or not self._allowed(plane, "api_key"):
            raise self._fail(plane, "Invalid API key.", "invalid_api_key", "invalid_token")
        return hit[0], frozenset()


class AuthnStage(Stage):
    name = "authn"
    identifies = True

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def on_request(self, exchange: Exchange) -> None:
        if exchange.principal is not None:  # already established by the plane (e.g. an MCP session)
            return
        try:
            principal, scopes = await self.auth.authenticate(
                exchange.headers, exchange.client, exchange.plane
            )
        except Unauthenticated as err:
            exchange.decide(self.name, "deny", detail=err.code)
            raise
        exchange.principal = principal
        if scopes:
            exchange.attrs["scopes"] = scopes
        exchange.decide(self.name, "allow", rule=f"{principal.auth}:{principal.key_id or principal.subject}")
