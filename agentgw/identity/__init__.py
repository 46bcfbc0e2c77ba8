"""The gateway's own identity: its signing keys (published at `/.well-known/jwks.json`) and the credentials it
presents to upstreams on a caller's behalf (signed assertions, RFC 8693 exchanged tokens)."""

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
