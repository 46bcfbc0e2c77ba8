"""What agentgw.yaml says about identities, as plain settings (pydantic only, so reading a configuration does not
load the JWT and cryptography libraries): the gateway's own signing keys (`signing:`) and the JWT issuers it
trusts (`auth.jwt`). The keys and the verifier that use them live in signing.py and agentgw/jwt_auth.py."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class SigningKeySource(BaseModel):
    """One PEM private key (EC P-256 → ES256, RSA ≥ 2048 bits → RS256): a file, or the PEM itself (`${ENV}`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str | None = None
    pem: SecretStr | None = None

    @model_validator(mode="after")
    def _one(self) -> SigningKeySource:
        if (self.file is None) == (self.pem is None):
            raise ValueError("set exactly one of file or pem")
        return self


class Signing(BaseModel):
    """`signing:` in agentgw.yaml: the keys the gateway signs identity assertions (and, later, agent cards) with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str | None = Field(
        default=None, min_length=1
    )  # `iss`; default: http://<listen.host>:<listen.port>
    # The first key signs; every key is published. None: keys derived from the gateway secret, rotated below.
    keys: list[SigningKeySource] = Field(default_factory=list)
    rotate_every_s: float = Field(default=86_400.0, ge=3600)  # derived keys; ≥ any assertion ttl_s


ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


class JWTSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str
    audiences: list[str] = Field(min_length=1)
    jwks_url: str | None = None
    jwks_file: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_s: float = Field(default=30.0, ge=0)
    subject_claim: str = "sub"
    roles_claim: str = (
        "roles"  # dotted path into the claims, e.g. realm_access.roles; list or space-separated
    )
    scopes_claim: str = "scope"
    required_scopes: list[str] = Field(default_factory=list)  # for /mcp: missing → 403 insufficient_scope
    jwks_refresh_s: float = Field(default=30.0, ge=0)  # at most one refetch per interval on unknown kids
    resource: str | None = None  # canonical URL of this gateway's MCP endpoint (RFC 8707/9728)

    @model_validator(mode="after")
    def _check(self) -> JWTSettings:
        if bool(self.jwks_url) == bool(self.jwks_file):
            raise ValueError("set exactly one of jwks_url or jwks_file")
        bad = [a for a in self.algorithms if a not in ASYMMETRIC]
        if bad:
            raise ValueError(
                f"unsupported algorithms {bad}: only asymmetric algorithms ({sorted(ASYMMETRIC)})"
            )
        return self
