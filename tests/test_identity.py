"""Identity across the gateway: JWTs and API keys side by side, which planes accept which, the MCP OAuth
resource-server metadata and challenges (RFC 9728), and the admin API's role requirement."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, gateway, sha
from tests.test_jwt import JWK1, KEY1

ISSUER, AUD = "https://issuer.test", "agentgw"
ADMIN_KEY = "agw-admin-key-0123456789"


def token(**claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUD,
        "sub": "jwt-agent",
        "exp": now + 300,
        "roles": ["agents"],
        "scope": "mcp:tools",
        **claims,
    }
    return jwt.encode(body, KEY1, algorithm="RS256", headers={"kid": "k1"})


def settings(tmp: Path, **auth: Any) -> dict[str, Any]:
    (tmp / "jwks.json").write_text(json.dumps({"keys": [JWK1]}))
    return {
        "auth": {
            "api_keys": [
                {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
                {"subject": "other", "roles": [], "sha256": sha(OTHER_KEY)},
                {"subject": "root", "roles": ["admins"], "sha256": sha(ADMIN_KEY)},
            ],
            "jwt": {
                "issuer": ISSUER,
                "audiences": [AUD],
                "jwks_file": "jwks.json",
                "algorithms": ["RS256"],
                "required_scopes": ["mcp:tools"],
                "resource": "http://127.0.0.1:8080/mcp",
            },
            **auth,
        }
    }


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


async def test_a_jwt_and_an_api_key_both_authenticate_on_the_llm_plane(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, settings(tmp_path)) as (url, _), httpx.AsyncClient() as c:
        by_jwt = await c.get(f"{url}/v1/models", headers=bearer(token()))
        by_key = await c.get(f"{url}/v1/models", headers=bearer(TEST_KEY))
    assert by_jwt.status_code == by_key.status_code == 200
    assert by_jwt.json() == by_key.json()


@pytest.mark.parametrize(
    "bad",
    [
        token(aud="elsewhere"),
        token(exp=int(time.time()) - 3600),
        token(iss="https://evil.test"),
        token()[:-4] + "AAAA",
    ],
    ids=["wrong audience", "expired", "wrong issuer", "bad signature"],
)
async def test_bad_jwts_are_a_401_with_an_invalid_token_challenge(tmp_path: Path, bad: str) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, settings(tmp_path)) as (url, _), httpx.AsyncClient() as c:
        r = await c.get(f"{url}/v1/models", headers=bearer(bad))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_token"
    assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


async def test_a_plane_can_be_limited_to_one_credential_kind(tmp_path: Path) -> None:
    cfg = settings(tmp_path, accept={"llm": ["api_key"]})
    async with gateway(tmp_path, MOCK_REGISTRY, cfg) as (url, _), httpx.AsyncClient() as c:
        by_jwt = await c.get(f"{url}/v1/models", headers=bearer(token()))
        by_key = await c.get(f"{url}/v1/models", headers=bearer(TEST_KEY))
    assert (by_jwt.status_code, by_key.status_code) == (401, 200)


async def test_the_mcp_protected_resource_metadata_is_served_at_both_well_known_paths(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, settings(tmp_path)) as (url, _), httpx.AsyncClient() as c:
        inserted = await c.get(f"{url}/.well-known/oauth-protected-resource/mcp")
        root = await c.get(f"{url}/.well-known/oauth-protected-resource")
    for r in (inserted, root):
        assert r.status_code == 200
        assert r.json() == {
            "resource": "http://127.0.0.1:8080/mcp",
            "authorization_servers": [ISSUER],
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["mcp:tools"],
        }


async def test_without_jwt_there_is_no_protected_resource_metadata(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _), httpx.AsyncClient() as c:
        r = await c.get(f"{url}/.well-known/oauth-protected-resource/mcp")
    assert r.status_code == 404


async def test_mcp_without_credentials_gets_a_401_pointing_at_the_resource_metadata(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, settings(tmp_path)) as (url, _), httpx.AsyncClient() as c:
        r = await c.post(
            f"{url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
    assert r.status_code == 401
    assert (
        'resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"'
        in r.headers["www-authenticate"]
    )


async def test_mcp_with_a_token_missing_the_scope_gets_403_insufficient_scope(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, settings(tmp_path)) as (url, _), httpx.AsyncClient() as c:
        r = await c.post(
            f"{url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream", **bearer(token(scope="other"))},
        )
    assert r.status_code == 403
    challenge = r.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="mcp:tools"' in challenge


@pytest.mark.parametrize(
    ("key", "status"), [(ADMIN_KEY, 200), (TEST_KEY, 403), (OTHER_KEY, 403), (None, 401)]
)
async def test_the_admin_api_needs_an_admin_role(tmp_path: Path, key: str | None, status: int) -> None:
    q = "subject=ivy&roles=interns&object=llm:mock-fast&action=call"
    async with gateway(tmp_path, MOCK_REGISTRY, settings(tmp_path)) as (url, _), httpx.AsyncClient() as c:
        r = await c.get(f"{url}/admin/policy/check?{q}", headers=bearer(key) if key else {})
    assert r.status_code == status
    if status == 200:
        assert r.json()["allowed"] is True
        assert r.json()["rule"] == "p, role:interns, llm:mock-fast, call, allow"
