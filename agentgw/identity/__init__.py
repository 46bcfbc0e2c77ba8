"""The gateway's own identity: its signing keys (published at `/.well-known/jwks.json`) and the credentials it
presents to upstreams on a caller's behalf (signed assertions, RFC 8693 exchanged tokens)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentgw.identity.outbound import Credentials, OutboundIdentity, UpstreamCredentialsUnavailable
    from agentgw.identity.signing import JWKS_PATH, Signing, SigningKeys

__all__ = [
    "JWKS_PATH",
    "Credentials",
    "OutboundIdentity",
    "Signing",
    "SigningKeys",
    "UpstreamCredentialsUnavailable",
]
# Imported on first use: settings.py reads identity.config, and the audit worker, which only reads settings, should
# not load aiohttp, PyJWT and cryptography for it.
_HOME = {
    "Credentials": "outbound",
    "OutboundIdentity": "outbound",
    "UpstreamCredentialsUnavailable": "outbound",
    "JWKS_PATH": "signing",
    "Signing": "signing",
    "SigningKeys": "signing",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"agentgw.identity.{home}"), name)
