"""JWT verification: signature, issuer, audience, expiry with leeway, allowed algorithms, JWKS file and URL
with refresh on an unknown kid, and claims → subject, roles and scopes. Forged tokens are all refused."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentgw.jwt_auth import JWTSettings, JWTVerifier, TokenError, looks_like_jwt
from agentgw.policy import PolicyStore
from agentgw.stages.authz import AuthzStage
from tests.support import POLICIES, serve

ISSUER = "https://issuer.test"
AUD = "agentgw"


def keypair(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**public_jwk, "kid": kid, "alg": "RS256", "use": "sig"}


KEY1, JWK1 = keypair("k1")
KEY2, JWK2 = keypair("k2")
EVIL, _ = keypair("k1")  # same kid, different key: a forgery


def token(key: Any = KEY1, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUD,
        "sub": "agent-7",
        "exp": now + 300,
        "iat": now,
        "roles": ["agents"],
        "scope": "mcp:tools read",
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def unsigned(**claims: Any) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUD, "sub": "root", "exp": now + 300, **claims}
    return f"{b64({'alg': 'none', 'kid': 'k1'})}.{b64(body)}."


def verifier(tmp_path: Path, **extra: Any) -> JWTVerifier:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [JWK1]}))
    cfg = JWTSettings(issuer=ISSUER, audiences=[AUD], jwks_file="jwks.json", algorithms=["RS256"], **extra)
    return JWTVerifier(cfg, tmp_path)


async def test_a_valid_token_gives_the_subject_roles_and_scopes(tmp_path: Path) -> None:
    principal, scopes = await verifier(tmp_path).verify(token())
    assert (principal.subject, principal.roles, principal.auth) == ("agent-7", ("agents",), "jwt")
    assert scopes == {"mcp:tools", "read"}


async def test_roles_and_subject_come_from_configured_claim_paths(tmp_path: Path) -> None:
    v = verifier(tmp_path, subject_claim="email", roles_claim="realm_access.roles")
    tok = token(email="a@b.c", realm_access={"roles": ["admins", "agents"]})
    principal, _ = await v.verify(tok)
    assert (principal.subject, principal.roles) == ("a@b.c", ("admins", "agents"))


FORGED = {
    "expired beyond leeway": lambda: token(exp=int(time.time()) - 120),
    "wrong audience": lambda: token(aud="someone-else"),
    "wrong issuer": lambda: token(iss="https://evil.test"),
    "signed by another key with the same kid": lambda: token(key=EVIL),
    "unknown kid": lambda: token(key=KEY2, kid="k2"),
    "alg none": lambda: unsigned(),
    "HS256 with the public key as secret": lambda: jwt.encode(
        {"iss": ISSUER, "aud": AUD, "sub": "x", "exp": int(time.time()) + 60},
        "k" * 32,
        algorithm="HS256",
        headers={"kid": "k1"},
    ),
    "no exp": lambda: token(exp=None),
    "no subject": lambda: token(sub=None),
    "garbage": lambda: "eyJhbGciOi.not.a-token",
    "tampered payload": lambda: ".".join(
        [token().split(".")[0], unsigned().split(".")[1], token().split(".")[2]]
    ),
}


@pytest.mark.parametrize("make", FORGED.values(), ids=FORGED.keys())
async def test_forged_or_unacceptable_tokens_are_refused(tmp_path: Path, make: Any) -> None:
    with pytest.raises(TokenError):
        await verifier(tmp_path, jwks_refresh_s=3600).verify(make())


async def test_a_token_expired_within_the_leeway_is_still_accepted(tmp_path: Path) -> None:
    principal, _ = await verifier(tmp_path, leeway_s=60).verify(token(exp=int(time.time()) - 10))
    assert principal.subject == "agent-7"


async def test_an_unknown_kid_refetches_the_jwks_url_once(tmp_path: Path) -> None:
    served = {"keys": [JWK1]}
    hits: list[int] = []

    async def jwks(request: Request) -> JSONResponse:
        hits.append(1)
        return JSONResponse(served)

    async with serve(Starlette(routes=[Route("/jwks", jwks)])) as url, aiohttp.ClientSession() as session:
        cfg = JWTSettings(
            issuer=ISSUER, audiences=[AUD], jwks_url=f"{url}/jwks", algorithms=["RS256"], jwks_refresh_s=0
        )
        v = JWTVerifier(cfg, tmp_path)
        v.session = session
        assert (await v.verify(token()))[0].subject == "agent-7"
        served["keys"] = [JWK1, JWK2]  # the issuer rotates in a new key
        assert (await v.verify(token(key=KEY2, kid="k2")))[0].subject == "agent-7"
        assert (await v.verify(token(key=KEY2, kid="k2")))[0].subject == "agent-7"
    assert len(hits) == 2  # first use, then once for the new kid; cached afterwards


def test_settings_refuse_symmetric_algorithms_and_need_one_key_source() -> None:
    with pytest.raises(ValueError, match="unsupported algorithms"):
        JWTSettings(issuer=ISSUER, audiences=[AUD], jwks_file="x", algorithms=["HS256"])
    with pytest.raises(ValueError, match="exactly one"):
        JWTSettings(issuer=ISSUER, audiences=[AUD])


@pytest.mark.parametrize(("value", "expected"), [(token(), True), ("agw-abc", False), ("a.b", False)])
def test_jwts_are_told_apart_from_api_keys(value: str, expected: bool) -> None:
    assert looks_like_jwt(value) is expected


async def test_a_tokens_claims_reach_policy_conditions_as_principal_claims(tmp_path: Path) -> None:
    principal, _ = await verifier(tmp_path).verify(token(groups=["billing"], tenant="acme"))
    assert principal.claims["groups"] == ["billing"] and principal.claims["tenant"] == "acme"
    (tmp_path / "policy.csv").write_text(
        'p, role:agents, mcp:billing/*, call, allow, "billing" in principal.claims.groups\n'
    )
    store = PolicyStore(POLICIES / "model.conf", tmp_path / "policy.csv")
    assert store.load()
    authz = AuthzStage(store)
    assert authz.check(principal, "mcp:billing/refund", "call", {}).allowed
    other, _ = await verifier(tmp_path).verify(token(groups=["support"]))
    assert not authz.check(other, "mcp:billing/refund", "call", {}).allowed
    no_claim, _ = await verifier(tmp_path).verify(token())
    assert not authz.check(no_claim, "mcp:billing/refund", "call", {}).allowed  # missing claim: fails closed
