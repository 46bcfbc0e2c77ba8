"""Agent cards through the gateway: a real a2a-sdk agent's signed card fetched through CardCache, rewritten,
re-signed with the gateway's key and accepted by the SDK's verifier and card resolver; HTTP caching against a
small Starlette card server that counts its hits."""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import orjson
import pytest
from a2a.client.card_resolver import A2ACardResolver
from a2a.compat.v0_3 import types as types_v03
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    APIKeySecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.signing import (
    InvalidSignaturesError,
    NoSignatureError,
    create_agent_card_signer,
    create_signature_verifier,
)
from anyio import wait_all_tasks_blocked
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.json_format import MessageToDict, ParseDict
from jwt import PyJWK
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentgw.a2a.catalog.cards import (
    SERVED_CACHE_CONTROL,
    CachedCard,
    CardCache,
    CardUnavailable,
    GatewaySecurity,
    etag_matches,
    rewrite_card,
    served,
    sign_card,
)
from agentgw.identity.signing import Signing, SigningKeys
from tests.support import serve

GW = "http://127.0.0.1:8080/a2a/planner"
CARD_PATH = "/.well-known/agent-card.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Nothing(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def gateway_keys() -> SigningKeys:
    return SigningKeys(Signing(), Path("."), "gateway-secret-for-card-tests")


def upstream_card(base: str = "http://127.0.0.1:1") -> AgentCard:
    return AgentCard(
        name="planner",
        description="plans things",
        version="1.2.0",
        supported_interfaces=[
            AgentInterface(url=f"{base}/grpc", protocol_binding="GRPC", protocol_version="1.0"),
            AgentInterface(url=f"{base}/a2a/jsonrpc", protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=f"{base}/a2a/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        security_schemes={
            "upstreamKey": SecurityScheme(
                api_key_security_scheme=APIKeySecurityScheme(location="header", name="x-upstream-secret")
            )
        },
        security_requirements=[SecurityRequirement(schemes={"upstreamKey": StringList(list=[])})],
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="plan", name="plan", description="makes a plan", tags=["demo", "ünïcode"])],
    )


def sdk_signed(card: AgentCard) -> AgentCard:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = create_agent_card_signer(
        pem, {"alg": "ES256", "kid": "upstream-key", "typ": "JOSE", "jku": None}
    )
    return signer(card)


def jwks_verifier(keys: SigningKeys) -> Any:
    published = {k["kid"]: k for k in orjson.loads(keys.jwks())["keys"]}

    def key_provider(kid: str | None, jku: str | None) -> PyJWK:
        assert jku == "http://127.0.0.1:8080/.well-known/jwks.json"
        return PyJWK(published[kid])

    return create_signature_verifier(key_provider, ["ES256", "RS256"])


def protected(sig: dict[str, Any]) -> dict[str, Any]:
    raw = sig["protected"]
    return dict(json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))))


@asynccontextmanager
async def sdk_agent(card: AgentCard, extended: AgentCard | None = None) -> AsyncIterator[str]:
    """A real a2a-sdk agent (card, JSON-RPC and REST routes) on loopback."""
    handler = DefaultRequestHandler(
        agent_executor=Nothing(),
        task_store=InMemoryTaskStore(),
        agent_card=card,
        extended_agent_card=extended,
    )
    routes = [
        *create_agent_card_routes(card, cache_control="max-age=60"),
        *create_jsonrpc_routes(handler, rpc_url="/a2a/jsonrpc"),
        *create_rest_routes(handler, path_prefix="/a2a/rest"),
    ]
    async with serve(Starlette(routes=routes)) as url:
        yield url


async def test_a_signed_sdk_card_through_the_cache_is_rewritten_resigned_and_verifies_against_the_gateway_jwks() -> (
    None
):
    keys = gateway_keys()
    async with sdk_agent(sdk_signed(upstream_card())) as url, aiohttp.ClientSession() as session:
        cache = CardCache(lambda: session)
        got = await cache.get("planner", url + CARD_PATH)
    assert got.card["signatures"] and got.etag is not None and got.max_age_s == 60.0

    card = rewrite_card(got.card, base_url=GW, security=GatewaySecurity(), keys=keys)

    assert card["supportedInterfaces"] == [
        {"url": GW, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        {"url": GW + "/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
    ]
    assert "upstreamKey" not in card["securitySchemes"]
    assert card["securitySchemes"]["gatewayApiKey"] == {
        "apiKeySecurityScheme": {
            "description": "an agentgw API key",
            "location": "header",
            "name": "x-api-key",
        }
    }
    assert card["securitySchemes"]["gatewayBearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert card["securityRequirements"] == [
        {"schemes": {"gatewayApiKey": {}}},
        {"schemes": {"gatewayBearer": {}}},
    ]
    assert "url" not in card and "preferredTransport" not in card  # the SDK serves no 0.3 fields for 1.0 only
    [sig] = card["signatures"]
    header = protected(sig)
    assert header == {
        "alg": "ES256",
        "kid": keys.current().kid,
        "typ": "JOSE",
        "jku": "http://127.0.0.1:8080/.well-known/jwks.json",
    }
    assert card["skills"][0]["tags"] == ["demo", "ünïcode"]

    proto = ParseDict(card, AgentCard())  # strict: every field is an A2A 1.0 card field
    jwks_verifier(keys)(proto)
    proto.skills[0].description = "tampered"
    with pytest.raises(InvalidSignaturesError):
        jwks_verifier(keys)(proto)

    body, headers = served(card)

    async def card_route(request: Request) -> Response:
        return Response(body, headers=headers)

    async with serve(Starlette(routes=[Route(CARD_PATH, card_route)])) as gw, httpx.AsyncClient() as client:
        resolved = await A2ACardResolver(client, gw).get_agent_card(signature_verifier=jwks_verifier(keys))
    assert [i.url for i in resolved.supported_interfaces] == [GW, GW + "/rest"]
    assert MessageToDict(resolved) == card


async def test_an_unsigned_upstream_card_gets_no_signature_and_loses_its_grpc_interface() -> None:
    card = MessageToDict(upstream_card())
    out = rewrite_card(card, base_url=GW + "/", security=GatewaySecurity(), keys=gateway_keys())
    assert "signatures" not in out
    assert [i["protocolBinding"] for i in out["supportedInterfaces"]] == ["JSONRPC", "HTTP+JSON"]
    assert all("grpc" not in i["url"] for i in out["supportedInterfaces"])
    with pytest.raises(NoSignatureError):
        jwks_verifier(gateway_keys())(ParseDict(out, AgentCard()))


def test_a_signed_card_without_gateway_keys_passes_no_signature_on() -> None:
    card = MessageToDict(sdk_signed(upstream_card()))
    out = rewrite_card(card, base_url=GW, security=GatewaySecurity(), keys=None)
    assert "signatures" not in out


def test_jwt_only_security_names_a_bearer_jwt_with_the_rfc9728_metadata() -> None:
    meta = "http://127.0.0.1:8080/.well-known/oauth-protected-resource/a2a/planner"
    out = rewrite_card(
        MessageToDict(upstream_card()),
        base_url=GW,
        security=GatewaySecurity(api_key=False, jwt=True, resource_metadata=meta),
        keys=None,
    )
    assert list(out["securitySchemes"]) == ["gatewayBearer"]
    bearer = out["securitySchemes"]["gatewayBearer"]["httpAuthSecurityScheme"]
    assert bearer["bearerFormat"] == "JWT" and meta in bearer["description"]
    assert out["securityRequirements"] == [{"schemes": {"gatewayBearer": {}}}]


def test_skill_security_is_dropped_and_the_upstreams_tenant_and_binding_preference_kept() -> None:
    card = MessageToDict(upstream_card())
    card["supportedInterfaces"] = [
        {"url": "http://u/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0", "tenant": "acme"},
        {"url": "http://u/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
    ]
    card["skills"][0]["securityRequirements"] = [{"schemes": {"upstreamKey": {"list": ["admin"]}}}]
    out = rewrite_card(card, base_url=GW, security=GatewaySecurity(), keys=None)
    assert out["supportedInterfaces"] == [
        {"url": GW + "/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0", "tenant": "acme"},
        {"url": GW, "protocolBinding": "JSONRPC", "protocolVersion": "1.0", "tenant": "acme"},
    ]
    assert "securityRequirements" not in out["skills"][0]


def test_with_a_0_3_interface_the_card_carries_the_sdk_compat_fields_a_0_3_client_reads() -> None:
    keys = gateway_keys()
    card = MessageToDict(sdk_signed(upstream_card()))
    out = rewrite_card(card, base_url=GW, security=GatewaySecurity(), keys=keys, legacy_0_3=True)
    assert out["supportedInterfaces"][-2:] == [
        {"url": GW, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
        {"url": GW + "/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "0.3"},
    ]
    legacy = types_v03.AgentCard.model_validate(out)
    assert (legacy.url, legacy.preferred_transport, legacy.protocol_version) == (GW, "JSONRPC", "0.3")
    assert legacy.additional_interfaces is not None
    assert [(i.url, i.transport) for i in legacy.additional_interfaces] == [(GW + "/rest", "HTTP+JSON")]
    assert legacy.security_schemes is not None and set(legacy.security_schemes) == {
        "gatewayApiKey",
        "gatewayBearer",
    }
    from a2a.client.card_resolver import parse_agent_card

    jwks_verifier(keys)(parse_agent_card(out))  # the 1.0 reading of the same bytes still verifies


def test_sign_card_replaces_the_signatures_with_one_the_sdk_verifies() -> None:
    keys = gateway_keys()
    card = MessageToDict(sdk_signed(upstream_card()))
    out = sign_card(card, keys, jku="http://127.0.0.1:8080/.well-known/jwks.json")
    [sig] = out["signatures"]
    assert protected(sig)["kid"] == keys.current().kid and sig != card["signatures"][0]
    jwks_verifier(keys)(ParseDict(out, AgentCard()))


def test_served_bytes_carry_a_strong_etag_and_private_revalidation() -> None:
    card = rewrite_card(MessageToDict(upstream_card()), base_url=GW, security=GatewaySecurity(), keys=None)
    body, headers = served(card)
    assert orjson.loads(body) == card
    assert headers["content-type"] == "application/json"
    assert headers["etag"].startswith('"') and not headers["etag"].startswith("W/")
    assert headers["cache-control"] == SERVED_CACHE_CONTROL == "private, no-cache"
    assert served(card)[1]["etag"] == headers["etag"]
    assert etag_matches(headers["etag"], headers["etag"]) and etag_matches(
        f'"x", W/{headers["etag"]}', headers["etag"]
    )
    assert etag_matches("*", headers["etag"]) and not etag_matches('"other"', headers["etag"])


# --- caching against a counting card server -----------------------------------------------------------------


class CardServer:
    """A Starlette card server whose answers the test sets; counts hits and keeps the last request's headers."""

    def __init__(self) -> None:
        self.hits = 0
        self.status = 200
        self.headers: dict[str, str] = {}
        self.etag: str | None = None
        self.card: dict[str, Any] = MessageToDict(upstream_card())
        self.seen: list[dict[str, str]] = []
        self.gate: anyio.Event | None = None
        self.arrived = anyio.Event()

    async def route(self, request: Request) -> Response:
        self.hits += 1
        self.seen.append(dict(request.headers))
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        headers = dict(self.headers)
        if self.etag is not None:
            headers["etag"] = self.etag
            if request.headers.get("if-none-match") == self.etag and self.status == 200:
                return Response(status_code=304, headers=headers)
        return Response(orjson.dumps(self.card), self.status, headers, media_type="application/json")


@asynccontextmanager
async def card_cache(**kw: Any) -> AsyncIterator[tuple[CardServer, CardCache, str, Clock]]:
    server, clock = CardServer(), Clock()
    async with serve(Starlette(routes=[Route(CARD_PATH, server.route)])) as url:
        async with aiohttp.ClientSession() as session:
            yield server, CardCache(lambda: session, clock=clock, **kw), url + CARD_PATH, clock


async def test_max_age_is_honoured_and_capped_by_max_ttl() -> None:
    async with card_cache(max_ttl_s=300.0) as (server, cache, url, clock):
        server.headers = {"cache-control": "public, max-age=60"}
        first = await cache.get("a", url)
        assert (await cache.get("a", url)) is first and server.hits == 1
        clock.now += 61
        second = await cache.get("a", url)
        assert server.hits == 2 and second.card == first.card and second is not first
        server.headers = {"cache-control": "max-age=100000", "age": "10"}
        clock.now += 61
        capped = await cache.get("a", url)
        assert capped.max_age_s == 300.0 and server.hits == 3
        clock.now += 299
        assert (await cache.get("a", url)) is capped
        clock.now += 2
        await cache.get("a", url)
        assert server.hits == 4


async def test_no_store_and_private_are_not_cached_and_no_headers_get_the_default_ttl() -> None:
    async with card_cache(default_ttl_s=30.0) as (server, cache, url, _clock):
        for directive in ("no-store", "private, max-age=60"):
            server.headers = {"cache-control": directive}
            await cache.get(directive, url)
            await cache.get(directive, url)
        assert server.hits == 4
        server.headers = {}
        plain = await cache.get("plain", url)
        assert plain.max_age_s == 30.0 and (await cache.get("plain", url)) is plain and server.hits == 5


async def test_expires_against_date_gives_the_lifetime() -> None:
    async with card_cache() as (server, cache, url, _clock):
        # uvicorn writes its own Date; Expires is set two minutes after the wall clock's now
        server.headers = {"expires": email.utils.formatdate(time.time() + 120, usegmt=True)}
        got = await cache.get("a", url)
        assert 118.0 <= got.max_age_s <= 120.0
        server.headers = {"expires": "0"}
        assert (await cache.get("b", url)).max_age_s == 0.0


async def test_a_304_revalidation_keeps_the_cached_body_and_its_memo() -> None:
    async with card_cache() as (server, cache, url, _clock):
        server.etag, server.headers = '"v1"', {"cache-control": "no-cache"}
        first = await cache.get("a", url)
        first.memo["served"] = "rewritten once"
        server.card = {"name": "must not be seen"}
        again = await cache.get("a", url)
        assert server.hits == 2 and server.seen[-1]["if-none-match"] == '"v1"'
        assert again.card == first.card and again.memo["served"] == "rewritten once"
        server.etag = '"v2"'
        changed = await cache.get("a", url)
        assert changed.card == {"name": "must not be seen"} and changed.etag == '"v2"' and not changed.memo


async def test_concurrent_misses_for_one_key_make_one_upstream_request() -> None:
    async with card_cache() as (server, cache, url, _clock):
        server.gate = anyio.Event()
        results: list[CachedCard] = []

        async def get() -> None:
            results.append(await cache.get("a", url))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(get)
                await server.arrived.wait()
                await wait_all_tasks_blocked()
                server.gate.set()
        assert server.hits == 1 and len(results) == 8 and all(r is results[0] for r in results)


async def test_an_upstream_failure_serves_the_stale_card_for_a_bounded_time() -> None:
    async with card_cache(stale_if_error_s=100.0) as (server, cache, url, clock):
        server.headers = {"cache-control": "max-age=10"}
        fresh = await cache.get("a", url)
        server.status = 503
        clock.now += 50
        stale = await cache.get("a", url)
        assert stale.stale and stale.card == fresh.card and server.hits == 2
        clock.now += 70
        with pytest.raises(CardUnavailable):
            await cache.get("a", url)


async def test_must_revalidate_and_a_missing_card_are_never_served_stale() -> None:
    async with card_cache() as (server, cache, url, clock):
        server.headers = {"cache-control": "max-age=10, must-revalidate"}
        await cache.get("a", url)
        server.headers = {"cache-control": "max-age=10"}
        await cache.get("b", url)
        clock.now += 11
        server.status = 503
        with pytest.raises(CardUnavailable):
            await cache.get("a", url)
        server.status = 404
        with pytest.raises(CardUnavailable):
            await cache.get("b", url)
        clock.now += 6  # past the failure backoff
        server.status = 503  # the 404 dropped the entry: nothing stale left to serve
        with pytest.raises(CardUnavailable):
            await cache.get("b", url)
        assert server.hits == 5


async def test_an_unreachable_upstream_or_a_non_card_body_is_card_unavailable() -> None:
    async with card_cache() as (server, cache, url, _clock):
        server.card = ["not", "a", "card"]  # type: ignore[assignment]
        with pytest.raises(CardUnavailable):
            await cache.get("a", url)
        with pytest.raises(CardUnavailable):
            await cache.get("b", "http://127.0.0.1:9" + CARD_PATH)
        with pytest.raises(CardUnavailable):
            rewrite_card({"name": 7, "skills": "x"}, base_url=GW, security=GatewaySecurity(), keys=None)


async def test_invalidate_forces_a_fresh_fetch_and_headers_go_upstream() -> None:
    async with card_cache() as (server, cache, url, _clock):
        server.headers = {"cache-control": "max-age=60"}
        await cache.get("a", url, {"A2A-Version": "1.0"})
        cache.invalidate("a")
        await cache.get("a", url)
        assert server.hits == 2 and server.seen[0]["a2a-version"] == "1.0"


async def test_after_a_failure_the_upstream_is_not_asked_again_until_the_backoff_passes() -> None:
    async with card_cache(failure_backoff_s=5.0) as (server, cache, url, clock):
        server.headers = {"cache-control": "max-age=10"}
        fresh = await cache.get("a", url)
        clock.now += 11
        server.status = 503
        for _ in range(3):
            assert (await cache.get("a", url)).stale
            with pytest.raises(CardUnavailable):
                await cache.get("never-fetched", url)
        assert server.hits == 3
        clock.now += 5
        server.status = 200
        back = await cache.get("a", url)
        assert not back.stale and back.card == fresh.card and server.hits == 4


async def test_an_extended_card_is_fetched_over_rest_and_rewritten_likewise() -> None:
    keys = gateway_keys()
    public = upstream_card()
    public.capabilities.extended_agent_card = True
    extended = sdk_signed(upstream_card())
    extended.skills.add(id="secret-plan", name="secret plan", description="for callers who signed in")
    async with sdk_agent(sdk_signed(public), extended) as url, aiohttp.ClientSession() as session:
        cache = CardCache(lambda: session)
        got = await cache.get("planner:extended", url + "/a2a/rest/extendedAgentCard", {"A2A-Version": "1.0"})
    card = rewrite_card(got.card, base_url=GW, security=GatewaySecurity(jwt=True), keys=keys)
    assert [s["id"] for s in card["skills"]] == ["plan", "secret-plan"]
    assert [i["url"] for i in card["supportedInterfaces"]] == [GW, GW + "/rest"]
    jwks_verifier(keys)(ParseDict(card, AgentCard()))


def test_a_configured_rsa_gateway_key_signs_with_rs256() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from agentgw.identity.signing import SigningKeySource

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    keys = SigningKeys(Signing(keys=[SigningKeySource(pem=pem)]), Path("."), None)
    card = MessageToDict(sdk_signed(upstream_card()))
    out = rewrite_card(card, base_url=GW, security=GatewaySecurity(), keys=keys)
    assert protected(out["signatures"][0])["alg"] == "RS256"
    jwks_verifier(keys)(ParseDict(out, AgentCard()))
