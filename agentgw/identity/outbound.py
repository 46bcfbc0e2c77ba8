"""Credentials the gateway presents to an upstream on a caller's behalf, never the caller's own token: a signed
assertion (sub, roles, task; `aud` = the upstream) and/or an access token obtained by RFC 8693 token exchange
(subject token: such an assertion), cached per (upstream, principal) until shortly before it expires."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import orjson

from agentgw.errors import UpstreamError
from agentgw.exchange import Principal
from agentgw.identity.signing import SigningKeys
from agentgw.registry import Assertion, TokenExchange, UpstreamIdentity

log = logging.getLogger("agentgw.identity")

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
_SUBJECT_TTL_S = 60  # the assertion handed to the token endpoint is used at once
_MAX_CACHED = 10_000
_ANONYMOUS = Principal("anonymous", auth="anonymous")

HttpSession = Callable[[], aiohttp.ClientSession]


class UpstreamCredentialsUnavailable(UpstreamError):
    """The gateway could not obtain the credentials an upstream requires for this caller (token endpoint down,
    refusing, or answering nonsense). The call is not sent."""

    status, code = 502, "upstream_credentials_unavailable"


class Credentials:
    """One upstream's identity block, resolved: the headers for a call by `principal` within `task`."""

    def __init__(
        self,
        target: str,
        spec: UpstreamIdentity,
        url: str,
        issuer: str,
        keys: SigningKeys,
        http: HttpSession,
    ) -> None:
        self.target = target
        self.spec = spec
        self.url = url
        self.issuer = issuer
        self.keys = keys
        self.http = http
        # (principal, task) → (header value, renew after) ; a token is reused for half its lifetime
        self._assertions: dict[tuple[Principal, str | None], tuple[str, float]] = {}
        self._tokens: dict[Principal, tuple[str, float]] = {}  # principal → (header value, monotonic expiry)
        self._pending: dict[Principal, asyncio.Task[str]] = {}

    async def headers(self, principal: Principal | None, task: str | None) -> dict[str, str]:
        """The headers to add to one request; raises UpstreamCredentialsUnavailable when a token cannot be had."""
        who = principal or _ANONYMOUS
        out: dict[str, str] = {}
        a, x = self.spec.assertion, self.spec.token_exchange
        if a is not None:
            out[a.header] = _with_scheme(a.scheme, self._assertion(a, who, task))
        if x is not None:
            out[x.header] = await self._exchanged(x, who)
        return out

    def mint(self, principal: Principal, audience: str, ttl_s: float, task: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": principal.subject,
            "aud": audience,
            "iat": now,
            "exp": now + int(ttl_s),
            "jti": uuid.uuid4().hex,
            "roles": list(principal.roles),
        }
        if task is not None:
            claims["task"] = task
        return self.keys.sign(claims)

    def _assertion(self, cfg: Assertion, principal: Principal, task: str | None) -> str:
        key = (principal, task)
        now = time.monotonic()
        hit = self._assertions.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        token = self.mint(principal, cfg.audience or self.url, cfg.ttl_s, task)
        if len(self._assertions) >= _MAX_CACHED:
            self._assertions.clear()
        self._assertions[key] = (token, now + cfg.ttl_s / 2)
        return token

    async def _exchanged(self, cfg: TokenExchange, principal: Principal) -> str:
        hit = self._tokens.get(principal)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        pending = self._pending.get(principal)
        if pending is None:  # one request to the token endpoint per principal, however many callers wait
            pending = asyncio.get_running_loop().create_task(self._exchange(cfg, principal))
            self._pending[principal] = pending
            pending.add_done_callback(lambda t: self._done(principal, t))
        # Shielded: a caller that goes away does not cancel the exchange the others are waiting for.
        return await asyncio.shield(pending)

    def _done(self, principal: Principal, task: asyncio.Task[str]) -> None:
        if self._pending.get(principal) is task:
            del self._pending[principal]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody awaited any more is not reported as unhandled

    async def _exchange(self, cfg: TokenExchange, principal: Principal) -> str:
        subject = self.mint(principal, cfg.subject_audience or cfg.token_url, _SUBJECT_TTL_S, None)
        form = {
            "grant_type": GRANT_TYPE,
            "subject_token": subject,
            "subject_token_type": JWT_TOKEN_TYPE,
            "requested_token_type": cfg.requested_token_type,
            "audience": cfg.audience or self.url,
        }
        if cfg.resource:
            form["resource"] = cfg.resource
        if cfg.scope:
            form["scope"] = cfg.scope
        headers = {"Accept": "application/json"}
        if cfg.client_id is not None and cfg.client_secret is not None and cfg.client_auth == "basic":
            # RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
            pair = f"{quote_plus(cfg.client_id)}:{quote_plus(cfg.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif cfg.client_id is not None:
            form["client_id"] = cfg.client_id
            if cfg.client_secret is not None:
                form["client_secret"] = cfg.client_secret
        started = time.monotonic()
        try:
            async with self.http().post(
                cfg.token_url,
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=cfg.timeout_s),
            ) as resp:
                status, body = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failed(f"the token endpoint could not be reached ({type(exc).__name__})") from None
        answer = _json(body)
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            reason = (
                f" ({error})" if isinstance(error, str) and error.isprintable() and len(error) < 100 else ""
            )
            raise self._failed(f"the token endpoint answered {status}{reason}")
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise self._failed("the token endpoint's answer has no access_token")
        expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
        ttl = (
            float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else cfg.default_ttl_s
        )
        value = _with_scheme(cfg.scheme, token)
        if len(self._tokens) >= _MAX_CACHED:
            self._tokens.clear()
        self._tokens[principal] = (value, started + ttl - cfg.skew_s)
        return value

    def _failed(self, reason: str) -> UpstreamCredentialsUnavailable:
        log.warning("no credentials for %s: %s", self.target, reason)  # never the tokens themselves
        name = self.target.partition(":")[2]
        return UpstreamCredentialsUnavailable(
            f"The gateway could not obtain credentials for upstream '{name}': {reason}."
        )


def _with_scheme(scheme: str | None, token: str) -> str:
    return f"{scheme} {token}" if scheme else token


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


class OutboundIdentity:
    """Every upstream's Credentials, by target (`mcp:<server>`, `llm:<provider>`); upstreams without an
    `identity:` block have none (nothing is added to their requests)."""

    def __init__(self, keys: SigningKeys, issuer: str, http: HttpSession) -> None:
        self.keys = keys
        self.issuer = issuer
        self.http = http
        self.by_target: dict[str, Credentials] = {}

    def add(self, target: str, spec: UpstreamIdentity | None, url: str | None) -> None:
        if spec is not None:
            self.by_target[target] = Credentials(
                target, spec, url or target, self.issuer, self.keys, self.http
            )

    def of(self, target: str) -> Credentials | None:
        return self.by_target.get(target)

    def apply(self, specs: dict[str, tuple[UpstreamIdentity | None, str | None]]) -> None:
        """A reloaded registry: every target's block (and URL) by target. An unchanged one keeps its Credentials
        and so its cached tokens; a changed or new one starts afresh; a removed one is gone."""
        old, self.by_target = self.by_target, {}
        for target, (spec, url) in specs.items():
            kept = old.get(target)
            if kept is not None and spec is not None and kept.spec == spec and kept.url == (url or target):
                self.by_target[target] = kept
            else:
                self.add(target, spec, url)
