"""The gateway vouches for its callers to MCP upstreams: a signed assertion (verified by the upstream against the
gateway's published keys) or an RFC 8693 exchanged token, per caller, never the caller's own credential."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from mcp.shared.exceptions import MCPError

from tests.identity.support import CLIENT_ID, CLIENT_SECRET, TokenEndpoint, Verifier, VerifyingUpstream
from tests.mcp.support import mcp_client, registry, server_entry
from tests.support import TEST_KEY, audit_records, gateway, serve, sha

HELPER_KEY = "agw-helper-key-0123456789"
KEYS = {
    "auth": {
        "api_keys": [
            {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
            {"subject": "helper", "roles": ["agents", "helpers"], "sha256": sha(HELPER_KEY)},
        ]
    }
}
ASSERTION = {"assertion": {"header": "X-Agentgw-Identity", "ttl_s": 60}}


def entry(name: str, up: str, transport: str, identity: dict[str, Any]) -> dict[str, Any]:
    if transport == "sse":
        return {"name": name, "transport": "sse", "url": f"{up}/sse", "timeout_s": 10, "identity": identity}
    return server_entry(name, up, identity=identity)


def received_credentials(up: VerifyingUpstream) -> str:
    return "\n".join(f"{k}: {v}" for h in up.headers for k, v in h.items())


@pytest.mark.parametrize(
    ("transport", "mode"),
    [("streamable-http", "legacy"), ("streamable-http", "2026-07-28"), ("sse", "legacy")],
)
async def test_an_mcp_upstream_gets_a_signed_assertion_about_the_caller_and_never_the_callers_token(
    tmp_path: Path, transport: str, mode: str
) -> None:
    verifier = Verifier()
    docs = VerifyingUpstream("docs", verifier, sse=transport == "sse")
    async with serve(docs) as up:
        reg = registry(entry("docs", up, transport, ASSERTION))
        docs.audience = reg["mcp"]["servers"][0]["url"]
        async with gateway(tmp_path, reg, KEYS) as (url, gw):
            verifier.gateway = url
            headers = {"x-agentgw-task": "task-42"}
            async with mcp_client(f"{url}/mcp", headers=headers, mode=mode) as client:
                before = time.time()
                result = await client.call_tool("docs__echo", {"text": "hi"})
    assert result.structured_content == {"result": "hi"}
    # The call carries one. Listings are the gateway's own; the caller's own upstream session (session_scope:
    # principal) is opened from its call, so on legacy SSE its set-up messages carry the same caller's assertion.
    assert docs.claims and all(c["sub"] == "tester" for c in docs.claims)
    claims = docs.claims[-1]
    assert claims["sub"] == "tester" and claims["roles"] == ["agents"] and claims["task"] == "task-42"
    assert claims["aud"] == docs.audience
    assert claims["iss"] == f"http://127.0.0.1:{gw.settings.listen.port}"
    assert claims["exp"] - claims["iat"] == 60 and claims["exp"] <= before + 61
    assert TEST_KEY not in received_credentials(docs)


async def test_rotated_signing_keys_keep_earlier_assertions_verifiable_while_both_are_published(
    tmp_path: Path,
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def pem(key: Any, name: str) -> str:
        data = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (tmp_path / name).write_bytes(data)
        return name

    old = pem(ec.generate_private_key(ec.SECP256R1()), "old.pem")
    new = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), "new.pem")
    verifier = Verifier()
    docs = VerifyingUpstream("docs", verifier)
    sent: list[str] = []  # the assertion of each stage's call
    first_verifies: list[bool] = []  # does the first stage's assertion verify against each stage's JWKS?
    published = []
    async with serve(docs) as up:
        reg = registry(entry("docs", up, "streamable-http", ASSERTION))
        docs.audience = reg["mcp"]["servers"][0]["url"]
        for keys in ([old], [new, old], [new]):  # before, during and after the overlap
            signing = {"signing": {"keys": [{"file": k} for k in keys]}}
            async with gateway(tmp_path, reg, {**KEYS, **signing}) as (url, _gw):
                verifier.gateway = url
                published.append([k["alg"] for k in (await verifier.fetch())["keys"]])
                async with mcp_client(f"{url}/mcp") as client:
                    await client.call_tool("docs__echo", {"text": "hi"})
                sent.append(
                    next(h["x-agentgw-identity"] for h in reversed(docs.headers) if "x-agentgw-identity" in h)
                )
                try:
                    await Verifier(url).verify(sent[0], docs.audience)
                    first_verifies.append(True)
                except KeyError:  # its key is no longer published
                    first_verifies.append(False)
    assert published == [["ES256"], ["RS256", "ES256"], ["RS256"]]
    assert [jwt.get_unverified_header(t)["alg"] for t in sent] == ["ES256", "RS256", "RS256"]
    assert len(docs.claims) == 3  # each call verified by the upstream against the keys published at the time
    assert first_verifies == [True, True, False]


async def test_an_exchanged_token_is_fetched_once_per_principal_and_each_principal_gets_its_own(
    tmp_path: Path,
) -> None:
    verifier = Verifier()
    sts = TokenEndpoint(verifier)
    docs = VerifyingUpstream("docs", verifier)
    async with serve(sts.app()) as issuer, serve(docs) as up:
        sts.url = f"{issuer}/token"
        exchange = {
            "token_url": sts.url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "audience": "docs-api",
            "scope": "docs.read",
        }
        reg = registry(entry("docs", up, "streamable-http", {"token_exchange": exchange}))
        async with gateway(tmp_path, reg, KEYS) as (url, _gw):
            verifier.gateway = url
            for key in (TEST_KEY, TEST_KEY, HELPER_KEY, HELPER_KEY, TEST_KEY):
                async with mcp_client(f"{url}/mcp", key=key) as client:
                    await client.call_tool("docs__echo", {"text": "hi"})
    subjects = [hit["subject"]["sub"] for hit in sts.hits]
    assert subjects == ["tester", "helper"]  # once per principal until the token expires
    form = sts.hits[0]["form"]
    assert form["audience"] == "docs-api" and form["scope"] == "docs.read"
    assert form["subject_token"] != TEST_KEY and sts.hits[0]["subject"]["aud"] == sts.url
    calls = [h["authorization"] for h in docs.headers if h.get("mcp-method") == "tools/call"]
    assert calls == [
        "Bearer xt-1-tester",
        "Bearer xt-1-tester",
        "Bearer xt-2-helper",
        "Bearer xt-2-helper",
        "Bearer xt-1-tester",
    ]
    assert TEST_KEY not in received_credentials(docs) and HELPER_KEY not in received_credentials(docs)
    assert CLIENT_SECRET not in received_credentials(docs)


async def test_concurrent_calls_by_one_principal_share_one_token_exchange(tmp_path: Path) -> None:
    verifier = Verifier()
    sts = TokenEndpoint(verifier, gate=anyio.Event())
    docs = VerifyingUpstream("docs", verifier)
    async with serve(sts.app()) as issuer, serve(docs) as up:
        sts.url = f"{issuer}/token"
        exchange = {"token_url": sts.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        reg = registry(entry("docs", up, "streamable-http", {"token_exchange": exchange}))
        async with gateway(tmp_path, reg, KEYS) as (url, _gw), mcp_client(f"{url}/mcp") as client:
            verifier.gateway = url
            results: list[Any] = []

            async def call() -> None:
                results.append(await client.call_tool("docs__echo", {"text": "hi"}))

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(call)
                    await sts.arrived.wait()
                    await anyio.wait_all_tasks_blocked()  # every call is now waiting for that one exchange
                    assert sts.gate is not None
                    sts.gate.set()
    assert len(results) == 5 and len(sts.hits) == 1


async def test_a_token_that_expires_sooner_than_the_skew_is_not_reused(tmp_path: Path) -> None:
    verifier = Verifier()
    sts = TokenEndpoint(verifier, expires_in=5)  # shorter than the default 30 s renewal margin
    docs = VerifyingUpstream("docs", verifier)
    async with serve(sts.app()) as issuer, serve(docs) as up:
        sts.url = f"{issuer}/token"
        exchange = {"token_url": sts.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        reg = registry(entry("docs", up, "streamable-http", {"token_exchange": exchange}))
        async with gateway(tmp_path, reg, KEYS) as (url, _gw), mcp_client(f"{url}/mcp") as client:
            verifier.gateway = url
            await client.call_tool("docs__echo", {"text": "one"})
            await client.call_tool("docs__echo", {"text": "two"})
    assert len(sts.hits) == 2


@pytest.mark.parametrize("failure", ["refused", "unreachable"])
async def test_a_failed_token_exchange_is_a_clear_error_the_upstream_never_sees_and_the_audit_records(
    tmp_path: Path, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = Verifier()
    sts = TokenEndpoint(verifier, fail=400)
    docs = VerifyingUpstream("docs", verifier)
    async with serve(sts.app()) as issuer, serve(docs) as up:
        sts.url = f"{issuer}/token" if failure == "refused" else "http://127.0.0.1:9/token"
        exchange = {"token_url": sts.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        reg = registry(entry("docs", up, "streamable-http", {"token_exchange": exchange}))
        async with gateway(tmp_path, reg, KEYS) as (url, _gw), mcp_client(f"{url}/mcp") as client:
            verifier.gateway = url
            with pytest.raises(MCPError) as err:
                await client.call_tool("docs__echo", {"text": "hi"})
    assert err.value.code == -32013
    assert err.value.data["code"] == "upstream_credentials_unavailable"
    assert "docs" in err.value.message
    assert not [h for h in docs.headers if h.get("mcp-method") == "tools/call"]
    record = next(r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/echo")
    assert record["status"] == "error" and record["error_code"] == "upstream_credentials_unavailable"
    assert "upstream_credentials_unavailable" in caplog.text or "no credentials for mcp:docs" in caplog.text
    subject_tokens = [str(h["form"].get("subject_token")) for h in sts.hits]
    for secret in (CLIENT_SECRET, TEST_KEY, *subject_tokens):
        assert secret not in caplog.text
