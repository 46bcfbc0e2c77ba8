"""The gateway's signing keys: shared by replicas that share the secret, rotated with the previous key still
published, loaded from PEM files, published (public halves only) at /.well-known/jwks.json, and checked at load."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentgw import create_app, load_settings
from agentgw.configfile import ConfigError
from agentgw.identity import JWKS_PATH, Signing, SigningKeys
from tests.support import MOCK_REGISTRY, write_config

SECRET = "s" * 40
DAY = 86_400.0


def keys(secret: str | None, at: float = 10 * DAY) -> SigningKeys:
    return SigningKeys(Signing(), Path("."), secret, clock=lambda: at)


def verifies(token: str, jwks: bytes) -> bool:
    found = {k.key_id: k for k in jwt.PyJWKSet.from_dict(orjson.loads(jwks)).keys}
    kid = jwt.get_unverified_header(token)["kid"]
    if kid not in found:
        return False
    jwt.decode(token, found[kid], algorithms=["ES256"], options={"verify_exp": False, "verify_aud": False})
    return True


def test_replicas_with_the_same_secret_sign_and_publish_the_same_keys() -> None:
    one, two, other = keys(SECRET), keys(SECRET), keys("t" * 40)
    assert one.jwks() == two.jwks() != other.jwks()
    assert verifies(one.sign({"sub": "a"}), two.jwks())
    assert not verifies(other.sign({"sub": "a"}), one.jwks())


def test_a_derived_key_rotates_each_period_and_the_previous_one_stays_published() -> None:
    now = [10 * DAY + 5]
    signing = SigningKeys(Signing(), Path("."), SECRET, clock=lambda: now[0])
    before = signing.sign({"sub": "a"})
    now[0] += DAY  # the next period: a new key signs
    after = signing.sign({"sub": "a"})
    assert jwt.get_unverified_header(before)["kid"] != jwt.get_unverified_header(after)["kid"]
    assert verifies(before, signing.jwks())  # the previous key is still published
    now[0] += DAY
    assert not verifies(before, signing.jwks()) and verifies(after, signing.jwks())


def test_the_published_keys_are_public_halves_named_by_their_thumbprint() -> None:
    jwks = orjson.loads(keys(SECRET).jwks())
    assert len(jwks["keys"]) == 3  # previous, current and next period
    for key in jwks["keys"]:
        assert key["alg"] == "ES256" and key["use"] == "sig" and key["kty"] == "EC"
        assert "d" not in key
        assert key["kid"] == jwt.PyJWK(key).key_id


async def test_the_jwks_is_served_without_credentials(tmp_path: Path) -> None:
    app = create_app(load_settings(write_config(tmp_path, MOCK_REGISTRY, {"secret": SECRET})))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1") as client:
        r = await client.get(JWKS_PATH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == app.identity.keys.jwks()
    assert r.json()["keys"]


def test_a_signing_key_that_does_not_load_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "weak.pem").write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    settings = {"signing": {"keys": [{"file": "missing.pem"}, {"file": "weak.pem"}]}}
    with pytest.raises(ConfigError) as err:
        load_settings(write_config(tmp_path, MOCK_REGISTRY, settings))
    assert [(p.path, p.message) for p in err.value.problems] == [
        ("signing.keys[0]", "No such file or directory")
    ]
    settings = {"signing": {"keys": [{"file": "weak.pem"}]}}
    with pytest.raises(ConfigError) as err:
        load_settings(write_config(tmp_path, MOCK_REGISTRY, settings))
    assert err.value.problems[0].path == "signing.keys[0]"
    assert "EC P-256" in err.value.problems[0].message


def test_identity_on_a_stdio_server_and_unshared_keys_across_workers_are_config_errors(
    tmp_path: Path,
) -> None:
    stdio = {"name": "local", "transport": "stdio", "command": ["true"], "identity": {"assertion": {}}}
    with pytest.raises(ConfigError) as err:
        load_settings(write_config(tmp_path, {"mcp": {"servers": [stdio]}}))
    assert "identity needs an HTTP transport" in str(err.value)
    provider = {
        "name": "up",
        "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "identity": {"assertion": {}},
    }
    reg = {
        "llm": {
            "providers": [provider],
            "models": [{"name": "m", "targets": [{"provider": "up", "model": "x"}]}],
        }
    }
    with pytest.raises(ConfigError) as err:
        load_settings(write_config(tmp_path, reg, {"server": {"workers": 2}}))
    assert [p.path for p in err.value.problems] == ["signing"]
    assert load_settings(write_config(tmp_path, reg, {"server": {"workers": 2}, "secret": SECRET}))
