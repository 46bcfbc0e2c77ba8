"""Agent cards through the gateway: the upstream card fetched and cached as HTTP caching allows (`CardCache`),
rewritten so it points at the gateway and names the gateway's security (`rewrite_card`), re-signed with the
gateway's key when the upstream's was signed (`sign_card`), and served with a strong ETag (`served`)."""

from __future__ import annotations

import asyncio
import base64
import copy
import email.utils
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import aiohttp
import orjson
from cryptography.hazmat.primitives import serialization

from agentgw.identity.signing import JWKS_PATH, Key, SigningKeys

if TYPE_CHECKING:
    from a2a.types import AgentCard

JSONRPC, HTTP_JSON = "JSONRPC", "HTTP+JSON"
PROTOCOL_VERSION = "1.0"
LEGACY_VERSION = "0.3"
API_KEY_HEADER = "x-api-key"
API_KEY_SCHEME, BEARER_SCHEME = "gatewayApiKey", "gatewayBearer"
# What a served card says to caches: the card is only shown to callers the policy lets read it (and extended
# cards differ per caller), so no shared cache may keep it; a client may keep it and revalidate with the ETag.
# Served from the cache, the card's headers say how long the gateway's copy stays fresh (`served_cache_control`).
SERVED_CACHE_CONTROL = "private, no-cache"


def served_cache_control(fresh_for_s: float) -> str:
    """Cache-Control for a card the gateway holds fresh for `fresh_for_s` more seconds: a client may keep it as
    long (the A2A spec asks for max-age) and revalidate with the ETag after."""
    return f"private, max-age={max(0, int(fresh_for_s))}"


# Upstream fields the gateway replaces or must not pass through: the 1.0 ones it rewrites, and the 0.3 compat
# fields the SDK's card route adds (re-derived from the rewritten interfaces, never copied from the upstream).
_REPLACED = frozenset(
    {
        "supportedInterfaces",
        "securitySchemes",
        "securityRequirements",
        "signatures",
        "url",
        "preferredTransport",
        "protocolVersion",
        "additionalInterfaces",
        "security",
        "supportsAuthenticatedExtendedCard",
    }
)


class CardUnavailable(Exception):
    """The upstream card cannot be had: unreachable, an error status, or not a card (no stale copy to serve)."""


@dataclass(frozen=True, slots=True)
class GatewaySecurity:
    api_key: bool = True  # keys accepted as `Authorization: Bearer <key>` and `x-api-key`
    jwt: bool = False  # bearer JWTs accepted
    resource_metadata: str | None = None  # RFC 9728 protected-resource metadata URL when JWTs are configured


# --- rewriting -------------------------------------------------------------------------------------------


def _security(security: GatewaySecurity) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The gateway's schemes and requirements in A2A 1.0 JSON; each requirement is one accepted alternative."""
    schemes: dict[str, Any] = {}
    if security.api_key:
        schemes[API_KEY_SCHEME] = {
            "apiKeySecurityScheme": {
                "description": "an agentgw API key",
                "location": "header",
                "name": API_KEY_HEADER,
            }
        }
    if security.api_key or security.jwt:
        accepted = " or ".join(
            what for on, what in ((security.api_key, "an agentgw API key"), (security.jwt, "a JWT")) if on
        )
        bearer: dict[str, Any] = {"scheme": "Bearer", "description": f"Authorization: Bearer with {accepted}"}
        if security.jwt:
            bearer["bearerFormat"] = "JWT"
            if security.resource_metadata:
                # A2A 1.0 has no field for RFC 9728 metadata (oauth2MetadataUrl is RFC 8414's); the 401 challenge
                # carries it as `resource_metadata`, and the description names it for a human or a client.
                bearer["description"] += (
                    f"; protected-resource metadata (RFC 9728): {security.resource_metadata}"
                )
        schemes[BEARER_SCHEME] = {"httpAuthSecurityScheme": bearer}
    return schemes, [{"schemes": {name: {"list": []}}} for name in schemes]


def _interfaces(upstream: list[Any], base_url: str, legacy_0_3: bool) -> list[dict[str, Any]]:
    """The gateway's interfaces, in the upstream's order of preference between the two bindings it serves."""
    tenants: dict[str, str] = {}
    order: list[str] = []
    for iface in upstream:
        if not isinstance(iface, dict):
            continue
        binding = iface.get("protocolBinding")
        if binding in (JSONRPC, HTTP_JSON) and binding not in order:
            order.append(binding)
        if isinstance(tenant := iface.get("tenant"), str) and tenant:
            tenants.setdefault(str(binding), tenant)
    order += [b for b in (JSONRPC, HTTP_JSON) if b not in order]
    # The tenant travels in the request (a JSON-RPC param, a REST path prefix) that the relay forwards as is,
    # so the upstream's tenant stays usable through the gateway; a binding without one borrows another's.
    fallback = next(iter(tenants.values()), None)
    urls = {JSONRPC: base_url, HTTP_JSON: base_url + "/rest"}
    out: list[dict[str, Any]] = []
    for binding in order:
        iface = {"url": urls[binding], "protocolBinding": binding, "protocolVersion": PROTOCOL_VERSION}
        if tenant := tenants.get(binding, fallback):
            iface["tenant"] = tenant
        out.append(iface)
    if legacy_0_3:  # the gateway serves both 0.3 bindings for every agent (a 0.3 REST client appends /v1/...)
        out.append({"url": base_url, "protocolBinding": JSONRPC, "protocolVersion": LEGACY_VERSION})
        out.append({"url": urls[HTTP_JSON], "protocolBinding": HTTP_JSON, "protocolVersion": LEGACY_VERSION})
    return out


def _parse(card: dict[str, Any]) -> AgentCard:
    """The card as the SDK's client reads it (0.3 compat fields mapped, unknown fields dropped)."""
    from a2a.client.card_resolver import parse_agent_card
    from google.protobuf.json_format import ParseError  # type: ignore[import-untyped]

    try:
        return parse_agent_card(copy.deepcopy(card))
    except (ParseError, ValueError, TypeError) as exc:
        raise CardUnavailable(f"the upstream card is not an A2A agent card: {str(exc)[:200]}") from None


def rewrite_card(
    card: dict[str, Any],
    *,
    base_url: str,
    security: GatewaySecurity,
    keys: SigningKeys | None,
    legacy_0_3: bool = False,
) -> dict[str, Any]:
    """The upstream's 1.0 card as the gateway serves it: interfaces at `base_url` (JSON-RPC) and `base_url/rest`
    (HTTP+JSON), no gRPC, the gateway's security, and the gateway's signature when the upstream's card was signed
    (the upstream's own no longer verifies and is never passed on). Serialized exactly as the a2a-sdk card route
    serves a card, so the 0.3 compat fields (`url`, `preferredTransport`, ...) appear when, and only when, a 0.3
    interface is listed (`legacy_0_3`: also list JSON-RPC 0.3 at `base_url` and HTTP+JSON 0.3 at `base_url/rest`). Raises CardUnavailable when
    `card` is not an agent card."""
    from a2a.server.request_handlers.response_helpers import agent_card_to_dict

    base_url = base_url.rstrip("/")
    out = {k: v for k, v in card.items() if k not in _REPLACED}
    ifaces = card.get("supportedInterfaces")
    out["supportedInterfaces"] = _interfaces(ifaces if isinstance(ifaces, list) else [], base_url, legacy_0_3)
    out["securitySchemes"], out["securityRequirements"] = _security(security)
    if isinstance(skills := card.get("skills"), list):
        # A skill's requirements name upstream schemes; through the gateway the card-level ones apply.
        out["skills"] = [
            {k: v for k, v in s.items() if k not in ("securityRequirements", "security")}
            if isinstance(s, dict)
            else s
            for s in skills
        ]
    proto = _parse(out)
    if card.get("signatures") and keys is not None:
        origin = urlsplit(base_url)
        _sign(proto, keys.current(), f"{origin.scheme}://{origin.netloc}{JWKS_PATH}")
    return agent_card_to_dict(proto)


# --- signing ---------------------------------------------------------------------------------------------


def _sign(proto: AgentCard, key: Key, jku: str | None) -> None:
    """Replace the card's signatures with one JWS by `key`, made by the SDK's own signer so the canonical
    form (proto field presence, empty values dropped, RFC 8785) is the one the SDK's verifier rebuilds."""
    from a2a.utils.signing import ProtectedHeader, create_agent_card_signer

    # PEM because the signer's type is PyJWK | str | bytes; a card is signed once per upstream fetch, not per call
    pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fields = {"alg": key.alg, "kid": key.kid, "typ": "JOSE"} | ({"jku": jku} if jku else {})
    header = cast(ProtectedHeader, fields)  # jku is optional in the spec, and PyJWT would write a null
    del proto.signatures[:]
    create_agent_card_signer(pem, header)(proto)


def sign_card(card: dict[str, Any], keys: SigningKeys, *, jku: str | None = None) -> dict[str, Any]:
    """`card` with its signatures replaced by one A2A card signature (a detached JWS over the JCS-canonical card,
    `kid` = the gateway key's kid in /.well-known/jwks.json, `jku` when given)."""
    proto = _parse(card)
    _sign(proto, keys.current(), jku)
    return {
        **card,
        "signatures": [{"protected": s.protected, "signature": s.signature} for s in proto.signatures],
    }


# --- serving ---------------------------------------------------------------------------------------------


def served(card: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The card's bytes and response headers; the strong ETag is of these bytes, so the caller should keep the
    result for as long as the upstream card is unchanged (a re-signature with ES256 gives new bytes)."""
    body = orjson.dumps(card)
    tag = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
    return body, {
        "content-type": "application/json",
        "etag": f'"{tag}"',
        "cache-control": SERVED_CACHE_CONTROL,
        "vary": "Authorization, X-Api-Key",
    }


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header selects `etag` (RFC 9110 §13.1.2: weak comparison, `*` matches)."""
    if not if_none_match:
        return False
    bare = etag.removeprefix("W/")
    return any(c.strip() == "*" or c.strip().removeprefix("W/") == bare for c in if_none_match.split(","))


# --- the upstream card cache -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedCard:
    card: dict[str, Any]  # the upstream's JSON, as fetched
    fetched_at: float  # clock() when last fetched or revalidated
    max_age_s: float  # fresh until fetched_at + max_age_s (0: revalidate before each use)
    etag: str | None = None  # the upstream's validators, for a conditional revalidation
    last_modified: str | None = None
    must_revalidate: bool = False  # never served stale, not even when the upstream fails
    stale: bool = False  # served past its freshness because the upstream failed
    # The caller's derived results (e.g. the rewritten, signed, served card); a 304 keeps the body and so
    # keeps this too, which keeps the served card's bytes and ETag stable across revalidations.
    memo: dict[str, Any] = field(default_factory=dict, compare=False)

    def fresh(self, now: float) -> bool:
        return now < self.fetched_at + self.max_age_s


@dataclass(frozen=True, slots=True)
class _Policy:
    store: bool
    max_age_s: float
    must_revalidate: bool


def _directives(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            out[name.lower()] = arg.strip().strip('"')
    return out


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(int(value))) if value is not None else None
    except ValueError:
        return None


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class CardCache:
    """Upstream cards by key, fetched over the gateway's pooled session. RFC 9111 as a shared cache needs it:
    `no-store` and `private` are not stored; `s-maxage`, then `max-age`, then `Expires` (against `Date`) give
    the lifetime, less `Age`, capped at `max_ttl_s`; without any, `default_ttl_s` (heuristic freshness);
    `no-cache` stores for revalidation only; a stale entry is revalidated with If-None-Match / If-Modified-Since
    and a 304 keeps its body. Concurrent misses for one key share one upstream request. When the upstream fails
    (unreachable, 5xx, not a card) a stale entry is served for up to `stale_if_error_s` past its freshness,
    unless it said `must-revalidate`; otherwise CardUnavailable; for `failure_backoff_s` after a failure the
    upstream is not asked again for that key. Extended cards: `get` the HTTP+JSON `GET <rest>/extendedAgentCard`
    (with `A2A-Version: 1.0` and the gateway's credentials) under a key of their own."""

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        max_ttl_s: float = 300.0,
        *,
        default_ttl_s: float = 60.0,
        stale_if_error_s: float = 300.0,
        timeout_s: float = 10.0,
        max_bytes: int = 1 << 20,
        max_entries: int = 1024,
        failure_backoff_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self.max_ttl_s = max_ttl_s
        self.default_ttl_s = min(default_ttl_s, max_ttl_s)
        self.stale_if_error_s = stale_if_error_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.failure_backoff_s = failure_backoff_s
        self._clock = clock
        self._entries: dict[str, CachedCard] = {}
        self._inflight: dict[str, asyncio.Task[CachedCard]] = {}
        self._backoff: dict[str, tuple[float, str]] = {}  # key → (no upstream call before, why it failed)

    async def get(self, key: str, url: str, headers: dict[str, str] | None = None) -> CachedCard:
        entry = self._entries.get(key)
        if entry is not None and entry.fresh(self._clock()):
            return entry
        backoff = self._backoff.get(key)
        if backoff is not None and self._clock() < backoff[0]:
            return self._failed(key, entry, backoff[1], record=False)
        task = self._inflight.get(key)
        if task is None:
            # The fetch runs in a task of its own, so a caller that gives up does not cancel it for the others.
            task = self._inflight[key] = asyncio.create_task(self._refresh(key, url, headers, entry))
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    def fresh_for(self, entry: CachedCard) -> float:
        """Seconds `entry` stays fresh (0 once stale or served past its freshness)."""
        return 0.0 if entry.stale else max(0.0, entry.fetched_at + entry.max_age_s - self._clock())

    def peek(self, key: str) -> dict[str, Any]:
        """What the cache knows of the key's upstream, asking it nothing: `unknown` (never fetched), `reachable`
        (its last fetch succeeded; `card_fresh` says whether the card is still fresh) or `unreachable` (its last
        fetch failed: `error` says why)."""
        entry, failed = self._entries.get(key), self._backoff.get(key)
        fresh = entry.fresh(self._clock()) if entry is not None else None
        if failed is not None:
            return {"state": "unreachable", "error": failed[1], "card_fresh": fresh}
        return {"state": "unknown" if entry is None else "reachable", "error": None, "card_fresh": fresh}

    def invalidate(self, key: str) -> None:
        """Forget the key's card and any recent failure: the next get asks the upstream."""
        self._entries.pop(key, None)
        self._backoff.pop(key, None)

    def _done(self, key: str, task: asyncio.Task[CachedCard]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone

    def _keep(self, key: str, entry: CachedCard) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))  # the least recently fetched
        self._entries[key] = entry

    async def _refresh(
        self, key: str, url: str, headers: dict[str, str] | None, entry: CachedCard | None
    ) -> CachedCard:
        send = {"accept": "application/json", **(headers or {})}
        if entry is not None:
            if entry.etag:
                send["if-none-match"] = entry.etag
            if entry.last_modified:
                send["if-modified-since"] = entry.last_modified
        try:
            async with self._session().get(
                url, headers=send, timeout=self._timeout, allow_redirects=False
            ) as r:
                if r.status == 304 and entry is not None:
                    return self._revalidated(key, entry, r.headers)
                if r.status != 200:
                    if r.status < 500:
                        self.invalidate(key)  # the card is gone or refused: not a failure to paper over
                        entry = None
                    return self._failed(key, entry, f"the upstream answered {r.status} for its card")
                body = await self._read(r)
                headers_in = r.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._failed(key, entry, f"the upstream card could not be fetched: {type(exc).__name__}")
        if body is None:
            return self._failed(key, entry, f"the upstream card is larger than {self.max_bytes} bytes")
        try:
            card = orjson.loads(body)
        except orjson.JSONDecodeError:
            card = None
        if not isinstance(card, dict):
            return self._failed(key, entry, "the upstream card is not a JSON object")
        self._backoff.pop(key, None)
        policy = self._policy(headers_in)
        fetched = CachedCard(
            card,
            self._clock(),
            policy.max_age_s,
            headers_in.get("etag"),
            headers_in.get("last-modified"),
            policy.must_revalidate,
        )
        if policy.store:
            self._keep(key, fetched)
        else:
            self.invalidate(key)
        return fetched

    async def _read(self, r: aiohttp.ClientResponse) -> bytes | None:
        """The body, or None when it is over `max_bytes` (read no further than that)."""
        if r.content_length is not None and r.content_length > self.max_bytes:
            return None
        body = await r.content.read(self.max_bytes + 1)
        return None if len(body) > self.max_bytes else body

    def _revalidated(self, key: str, entry: CachedCard, headers: Any) -> CachedCard:
        """A 304: the stored body stays; freshness and validators follow the 304's headers where it has them."""
        self._backoff.pop(key, None)
        explicit = "cache-control" in headers or "expires" in headers
        policy = (
            self._policy(headers)
            if explicit
            else _Policy(True, min(entry.max_age_s, self.max_ttl_s), entry.must_revalidate)
        )
        updated = CachedCard(
            entry.card,
            self._clock(),
            policy.max_age_s,
            headers.get("etag") or entry.etag,
            headers.get("last-modified") or entry.last_modified,
            policy.must_revalidate,
            memo=entry.memo,
        )
        if policy.store:
            self._keep(key, updated)
        else:
            self.invalidate(key)
        return updated

    def _failed(self, key: str, entry: CachedCard | None, reason: str, *, record: bool = True) -> CachedCard:
        """After a failed refresh: the stale entry if it may still be served, else CardUnavailable. For
        `failure_backoff_s` the key's upstream is not asked again, so a dead upstream costs one call per period."""
        if record:
            self._backoff.pop(key, None)
            if len(self._backoff) >= self.max_entries:
                self._backoff.pop(next(iter(self._backoff)))
            self._backoff[key] = (self._clock() + self.failure_backoff_s, reason)
        if entry is not None and not entry.must_revalidate:
            expired_at = entry.fetched_at + entry.max_age_s
            if self._clock() <= expired_at + self.stale_if_error_s and self._entries.get(key) is entry:
                return CachedCard(
                    entry.card,
                    entry.fetched_at,
                    entry.max_age_s,
                    entry.etag,
                    entry.last_modified,
                    stale=True,
                    memo=entry.memo,
                )
        raise CardUnavailable(reason)

    def _policy(self, headers: Any) -> _Policy:
        cc = _directives(",".join(headers.getall("cache-control", [])))
        if "no-store" in cc or "private" in cc:
            return _Policy(False, 0.0, True)
        must = "must-revalidate" in cc or "proxy-revalidate" in cc
        if "no-cache" in cc:
            return _Policy(True, 0.0, True)
        lifetime = _seconds(cc.get("s-maxage")) if "s-maxage" in cc else None
        if lifetime is None and "max-age" in cc:
            lifetime = _seconds(cc["max-age"])
            if lifetime is None:
                lifetime = 0.0  # an unparsable max-age is stale (RFC 9111 §4.2.1)
        if lifetime is None and "expires" in headers:
            expires, date = _date(headers.get("expires")), _date(headers.get("date"))
            lifetime = max(0.0, expires - (date if date is not None else time.time())) if expires else 0.0
        if lifetime is None:
            lifetime = self.default_ttl_s
        lifetime -= _seconds(headers.get("age")) or 0.0
        return _Policy(True, max(0.0, min(lifetime, self.max_ttl_s)), must)
