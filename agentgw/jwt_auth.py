"""JWT bearer tokens: the settings that describe a trusted issuer, and the verifier authn uses.

Verifies signature (keys from a JWKS file or URL, cached, refreshed on an unknown `kid` at most every
`jwks_refresh_s`), issuer, audience, expiry (with leeway) and the allowed algorithms (`none` never). The
subject and roles come from configurable claims; scopes are kept for the MCP resource server's checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import jwt

from agentgw.exchange import Principal
from agentgw.identity.config import ASYMMETRIC, JWTSettings

__all__ = ["ASYMMETRIC", "JWTSettings", "JWTVerifier", "TokenError", "looks_like_jwt"]

log = logging.getLogger("agentgw.jwt")


class TokenError(Exception):
    """A presented JWT is not acceptable; `reason` is safe to show (never the token)."""

    def __init__(self, reason: str, *, scope: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.scope = scope


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def _claim(claims: dict[str, Any], path: str) -> Any:
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _as_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v for v in value.split() if v)
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str | int))
    return ()


class JWTVerifier:
    def __init__(self, cfg: JWTSettings, base_dir: Path) -> None:
        self.cfg = cfg
        self.base_dir = base_dir
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -1e9
        self._lock = asyncio.Lock()
        self.session: aiohttp.ClientSession | None = None  # set by the app (the shared upstream pool)

    def _load_set(self, data: dict[str, Any]) -> None:
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in data.get("keys", []):
            try:
                key = jwt.PyJWK(jwk)
            except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
                log.warning("skipping an unusable JWKS key: %s", exc)
                continue
            keys[str(jwk.get("kid", ""))] = key
        self._keys = keys

    async def refresh(self) -> None:
        if self.cfg.jwks_file:
            path = Path(self.cfg.jwks_file)
            path = path if path.is_absolute() else self.base_dir / path
            self._load_set(json.loads(await asyncio.to_thread(path.read_text)))
        elif self.cfg.jwks_url and self.session is not None:
            async with self.session.get(self.cfg.jwks_url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                r.raise_for_status()
                self._load_set(await r.json(content_type=None))
        self._fetched_at = time.monotonic()

    async def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with (
            self._lock
        ):  # one refetch at a time, at most once per interval (unknown kids are cheap to send)
            key = self._keys.get(kid)
            if key is None and time.monotonic() - self._fetched_at >= self.cfg.jwks_refresh_s:
                try:
                    await self.refresh()
                except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("JWKS refresh failed: %s", exc)
                key = self._keys.get(kid)
        if key is None and not kid and len(self._keys) == 1:
            key = next(iter(self._keys.values()))  # a JWKS with one key and tokens without kid
        if key is None:
            raise TokenError("unknown signing key")
        return key

    async def verify(self, token: str) -> tuple[Principal, frozenset[str]]:
        """The principal and its scopes, or TokenError."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        alg = header.get("alg")
        if alg not in self.cfg.algorithms:
            raise TokenError("algorithm not allowed")
        key = await self._key(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.cfg.algorithms,
                audience=self.cfg.audiences,
                issuer=self.cfg.issuer,
                leeway=self.cfg.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("untrusted issuer") from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        subject = _claim(claims, self.cfg.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise TokenError(f"token has no '{self.cfg.subject_claim}' claim")
        roles = _as_list(_claim(claims, self.cfg.roles_claim))
        scopes = frozenset(_as_list(_claim(claims, self.cfg.scopes_claim)))
        jti = claims.get("jti")
        principal = Principal(subject, roles, "jwt", str(jti)[:16] if jti else None, MappingProxyType(claims))
        return principal, scopes
