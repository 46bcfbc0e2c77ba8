"""The gateway's signing keys: loaded from PEM files or values, else derived from the gateway secret and rotated
on a fixed period; every replica with the same secret (or the same PEMs) holds the same keys. The published set
(JWKS) keeps the previous key beside the current one, so tokens signed just before a rotation still verify."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from agentgw.identity.config import Signing, SigningKeySource

__all__ = ["JWKS_PATH", "Signing", "SigningKeySource", "SigningKeys", "load_keys"]
log = logging.getLogger("agentgw.identity")

JWKS_PATH = "/.well-known/jwks.json"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_DERIVE_SALT = b"agentgw signing key v1"  # domain separation: the secret also seals MCP session ids


@dataclass(frozen=True, slots=True)
class Key:
    kid: str
    alg: str  # ES256 | RS256
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    jwk: dict[str, Any]  # the public half, as published


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_key(private: Any) -> Key:
    """A Key for a private key the gateway may sign with; `kid` is the RFC 7638 thumbprint of its public half."""
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1):
        alg, public = "ES256", ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
        members = {k: public[k] for k in ("crv", "kty", "x", "y")}
    elif isinstance(private, rsa.RSAPrivateKey) and private.key_size >= 2048:
        alg, public = "RS256", RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        members = {k: public[k] for k in ("e", "kty", "n")}
    else:
        raise ValueError("a signing key must be EC P-256 (ES256) or RSA of at least 2048 bits (RS256)")
    kid = _b64(hashlib.sha256(orjson.dumps(members, option=orjson.OPT_SORT_KEYS)).digest())
    return Key(kid, alg, private, {**members, "kid": kid, "alg": alg, "use": "sig"})


def derived_key(seed: bytes, epoch: int) -> Key:
    """The ES256 key of one rotation period, the same in every process holding `seed`."""
    okm = HKDF(hashes.SHA256(), 48, _DERIVE_SALT, epoch.to_bytes(8, "big")).derive(seed)
    scalar = int.from_bytes(okm, "big") % (_P256_ORDER - 1) + 1
    return make_key(ec.derive_private_key(scalar, ec.SECP256R1()))


def load_keys(cfg: Signing, base_dir: Path) -> list[Key]:
    """The configured PEM keys, in order; raises ValueError naming the first unusable one."""
    keys: list[Key] = []
    for i, source in enumerate(cfg.keys):
        where = f"signing.keys[{i}]"
        try:
            if source.file is not None:
                path = Path(source.file)
                data = (path if path.is_absolute() else base_dir / path).read_bytes()
            else:
                assert source.pem is not None
                data = source.pem.get_secret_value().encode()
            private = serialization.load_pem_private_key(data, password=None)
            keys.append(make_key(private))
        except (OSError, ValueError, TypeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc).split("\n")[0]
            raise ValueError(f"{where}: {reason}") from None
    return keys


class SigningKeys:
    """The current signing key and the published set. Configured keys: the first signs, all are published
    (rotate by adding the new key second, then moving it first, then dropping the old one). Derived keys: a new
    key every `rotate_every_s`; the previous and the next period's keys are published too, so a token signed just
    before a rotation verifies until it expires and replicas whose clocks differ a little agree."""

    def __init__(
        self,
        cfg: Signing,
        base_dir: Path,
        secret: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self._fixed = load_keys(cfg, base_dir)
        if not self._fixed and not secret:
            log.info("no gateway secret is set: identity assertions are signed with a per-process key")
        self._seed = (secret.encode() if secret else os.urandom(32)) if not self._fixed else b""
        self._derived: dict[int, Key] = {}
        self._jwks: tuple[int, bytes] | None = None

    def _epoch(self) -> int:
        return int(self.clock() // self.cfg.rotate_every_s)

    def _at(self, epoch: int) -> Key:
        key = self._derived.get(epoch)
        if key is None:
            if len(self._derived) > 8:
                self._derived = {e: k for e, k in self._derived.items() if abs(e - epoch) <= 1}
            key = self._derived[epoch] = derived_key(self._seed, epoch)
        return key

    def current(self) -> Key:
        return self._fixed[0] if self._fixed else self._at(self._epoch())

    def published(self) -> list[Key]:
        if self._fixed:
            return list(self._fixed)
        epoch = self._epoch()
        return [self._at(epoch), self._at(epoch - 1), self._at(epoch + 1)]

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.current()
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT"})

    def jwks(self) -> bytes:
        """The JSON Web Key Set (public keys only), rebuilt when the period changes."""
        epoch = -1 if self._fixed else self._epoch()
        cached = self._jwks
        if cached is None or cached[0] != epoch:
            cached = self._jwks = (epoch, orjson.dumps({"keys": [k.jwk for k in self.published()]}))
        return cached[1]
