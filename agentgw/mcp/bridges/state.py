"""The gateway's own `requestState` for multi-round-trip calls (2026-07-28): sealed with AES-256-GCM under the
gateway secret, bound to the principal, the endpoint, the upstream server, the method and its target, with a TTL.
It carries the upstream's own `requestState` (passed back on the retry) or the id of a bridged call held here."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from mcp.server.request_state import AESGCMRequestStateCodec, InvalidRequestState

from agentgw.errors import BadRequest
from agentgw.exchange import Principal

log = logging.getLogger("agentgw.mcp")

STATE_TTL_S = 600.0  # how long a round may wait for the caller's retry
_VERSION = 1


class RefusedState(BadRequest):
    """A `requestState` the gateway did not mint for this caller and call, or one that expired (the spec's
    -32602)."""

    code = "invalid_request_state"

    def __init__(self) -> None:
        super().__init__("Invalid or expired requestState")


def gateway_secret(configured: str | None) -> bytes:
    """The gateway secret (`secret:` or $AGENTGW_SECRET, checked to be ≥ 32 bytes when the settings load), else a
    random key for this process only: session ids and state minted by another replica, or before a restart, are
    then refused (multi-replica deployments and `--workers N` must set the secret)."""
    if configured:
        return configured.encode()
    log.info("no gateway secret is set: MCP session ids and requestState are sealed with a per-process key")
    return os.urandom(32)


@dataclass(frozen=True, slots=True)
class Binding:
    """What one round's state belongs to: only the same caller, retrying the same call, may present it."""

    principal: str  # a digest of the principal (never the credential)
    endpoint: str
    server: str
    method: str
    target: str  # the upstream's tool or prompt name, or resource URI

    @staticmethod
    def principal_of(principal: Principal) -> str:
        ident = f"{principal.auth}\x00{principal.subject}\x00{principal.key_id or ''}"
        return hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def claims(self) -> list[str]:
        return [self.principal, self.endpoint, self.server, self.method, self.target]


@dataclass(frozen=True, slots=True)
class Opened:
    upstream: str | None  # the upstream's own requestState, to echo back to it
    held: str | None  # the id of a bridged call the gateway holds
    round: int


class StateSeal:
    """Mints and verifies the gateway's `requestState` tokens. Fails closed: anything not minted here for this
    binding, or expired, raises RefusedState (the reason goes to the log only)."""

    def __init__(self, secret: bytes, ttl: float = STATE_TTL_S) -> None:
        self._codec = AESGCMRequestStateCodec([secret])
        self.ttl = ttl

    def seal(
        self, bind: Binding, upstream: str | None = None, held: str | None = None, round: int = 0
    ) -> str:
        claims: dict[str, Any] = {
            "v": _VERSION,
            "exp": time.time() + self.ttl,
            "b": bind.claims(),
            "u": upstream,
            "h": held,
            "r": round,
        }
        return self._codec.seal(json.dumps(claims, separators=(",", ":")).encode())

    def open(self, token: object, bind: Binding) -> Opened:
        if not isinstance(token, str):
            raise self.refuse("not a string")
        try:
            claims = json.loads(self._codec.unseal(token))
        except InvalidRequestState as err:
            raise self.refuse(str(err)) from None
        except ValueError:
            raise self.refuse("malformed") from None
        if not isinstance(claims, dict) or claims.get("v") != _VERSION:
            raise self.refuse("malformed")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or not time.time() < exp:
            raise self.refuse("expired")
        if claims.get("b") != bind.claims():
            raise self.refuse("binding (principal, endpoint, server or target)")
        upstream, held, rnd = claims.get("u"), claims.get("h"), claims.get("r")
        if not (
            (upstream is None or isinstance(upstream, str))
            and (held is None or isinstance(held, str))
            and isinstance(rnd, int)
        ):
            raise self.refuse("malformed")
        return Opened(upstream, held, rnd)

    @staticmethod
    def refuse(reason: str) -> RefusedState:
        log.warning("requestState refused: %s", reason)
        return RefusedState()
