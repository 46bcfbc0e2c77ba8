"""Authentication: who is calling. Decides a Principal from `Authorization: Bearer` or `x-api-key`.

Fails with 401 `missing_api_key` / `invalid_api_key`; the credential itself is never stored or logged.
"""

from __future__ import annotations

from agentgw.errors import Unauthenticated
from agentgw.exchange import Exchange
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


class AuthnStage(Stage):
    name = "authn"
    identifies = True

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def on_request(self, exchange: Exchange) -> None:
        if exchange.principal is not None:  # already established by the plane (e.g. an MCP session)
            return
        token = credential(exchange.headers)
        if token is None:
            exchange.decide(self.name, "deny", detail="no credentials")
            raise Unauthenticated(
                "Missing credentials: send 'Authorization: Bearer <key>' or 'x-api-key'.",
                code="missing_api_key",
            )
        hit = self.keys.lookup(token)
        if hit is not None and hit[1] and not (exchange.client and is_loopback(exchange.client)):
            hit = None  # demo keys only work from loopback peers
        if hit is None:
            exchange.decide(self.name, "deny", detail="unknown key")
            raise Unauthenticated("Invalid API key.")
        exchange.principal = hit[0]
        exchange.decide(self.name, "allow", rule=f"api_key:{hit[0].key_id}")
