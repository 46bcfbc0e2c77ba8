"""External guards: a model-based classifier behind HTTP (OpenAI moderation, or any service speaking the small
`custom` contract below) asked whether some texts are acceptable, with a time limit and a fail-open/closed policy.

`custom` contract: POST `{"texts": ["...", ...]}` as JSON; answer 2xx with `{"flagged": bool, "categories":
["name", ...], "score": float}`. `flagged` is required; `categories` (the kinds that fired, default none) and
`score` (0..1, default 1 when flagged else 0) are optional. One answer covers the whole list of texts.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson

from agentgw import upstream

log = logging.getLogger("agentgw.guardrails")

MAX_RESPONSE = 1 << 20  # a verdict is a few hundred bytes; a bigger answer is not a moderation service
_CACHE_SIZE = 256

Kind = Literal["openai_moderation", "custom"]
Fail = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard says about a list of texts. `kinds` are the categories that fired ("harassment", …);
    `error` is set ("timeout", "unreachable", "http_503", "bad_response") when the service gave no usable
    answer, and then `flagged` is the guard's fail policy (closed: flagged)."""

    flagged: bool
    kinds: tuple[str, ...] = ()
    score: float = 0.0
    error: str | None = None


CLEAN = Verdict(False)


class _BadResponse(Exception):
    """Internal: the service answered 2xx with something that is not the expected JSON shape."""


class _Status(Exception):
    """Internal: the service answered with a non-2xx status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _number(value: object) -> float | None:
    # bool is an int subclass; a score of `true` is a wrong shape, not 1.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class HttpGuard:
    """Asks an HTTP classifier about texts. `headers` may carry credentials: they are sent, never logged.

    `session_factory` returns the aiohttp session for each call; the gateway passes `lambda: pool.session` so
    guards share the upstream pool's keep-alive connections (that session is not closed here). Without it the
    guard opens a session of its own on first use and closes it in `aclose()`.

    `categories` restricts which categories count; `threshold` makes the scores decide (a category fires when
    its score is ≥ threshold) instead of the service's own booleans. `cache_ttl_s` > 0 answers an identical
    list of texts from memory for that long (successful answers only; keys are hashes, not the texts).
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        kind: Kind = "openai_moderation",
        timeout_s: float = 2.0,
        fail: Fail = "closed",
        headers: Mapping[str, str] | None = None,
        categories: Iterable[str] | None = None,
        threshold: float | None = None,
        model: str | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        cache_ttl_s: float = 0.0,
    ) -> None:
        # The URL is operator configuration (like registry upstreams), not a caller's: a local classifier on
        # 127.0.0.1 is a normal deployment, so the egress rule for caller-written URLs does not apply here.
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"guard {name!r}: url must be http(s)://host/...")
        if kind not in ("openai_moderation", "custom"):
            raise ValueError(f"guard {name!r}: unknown kind {kind!r}")
        if fail not in ("open", "closed"):
            raise ValueError(f"guard {name!r}: fail must be 'open' or 'closed'")
        if timeout_s <= 0:
            raise ValueError(f"guard {name!r}: timeout_s must be positive")
        self.name = name
        self.url = url
        self.kind: Kind = kind
        self.fail: Fail = fail
        self.categories = frozenset(categories) if categories is not None else None
        self.threshold = threshold
        self.model = model
        self.cache_ttl_s = cache_ttl_s
        self._headers = {**upstream.BASE_HEADERS, "Content-Type": "application/json", **(headers or {})}
        self._timeout = upstream.timeout(timeout_s, timeout_s, False)
        self._session_factory = session_factory
        self._own: aiohttp.ClientSession | None = None
        self._cache: OrderedDict[bytes, tuple[float, Verdict]] = OrderedDict()

    def __repr__(self) -> str:  # never the headers (credentials)
        return f"HttpGuard(name={self.name!r}, kind={self.kind!r}, fail={self.fail!r})"

    async def check(self, texts: Sequence[str]) -> Verdict:
        """The verdict on `texts`. Never raises (except cancellation): a failure is a Verdict with `error`."""
        if not texts:
            return CLEAN
        key = self._key(texts) if self.cache_ttl_s > 0 else b""
        if key:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        try:
            verdict = self._judge(await self._post(texts), len(texts))
        except TimeoutError:
            return self._failed("timeout")
        except _Status as exc:
            return self._failed(f"http_{exc.status}")
        except aiohttp.ClientError:
            # refused, reset, DNS failure, a body cut short: no answer from the service
            return self._failed("unreachable")
        except _BadResponse:
            return self._failed("bad_response")
        except Exception:
            # a guard must not take the request down with an unexpected bug; the fail policy still decides
            log.exception("guard %s: unexpected error", self.name)
            return self._failed("error")
        if key:
            self._remember(key, verdict)
        return verdict

    async def aclose(self) -> None:
        if self._own is not None:
            await self._own.close()
            self._own = None
        self._cache.clear()

    def _session(self) -> aiohttp.ClientSession:
        if self._session_factory is not None:
            return self._session_factory()
        if self._own is None or self._own.closed:
            self._own = aiohttp.ClientSession(trust_env=False)  # no proxy from the environment
        return self._own

    async def _post(self, texts: Sequence[str]) -> Any:
        if self.kind == "custom":
            payload: dict[str, Any] = {"texts": list(texts)}
        else:
            payload = {"input": list(texts)}
            if self.model is not None:
                payload["model"] = self.model
        async with self._session().post(
            self.url, data=orjson.dumps(payload), headers=self._headers, timeout=self._timeout
        ) as resp:
            if not 200 <= resp.status < 300:
                raise _Status(resp.status)
            body = bytearray()
            # bounded read: a misbehaving service cannot make the gateway buffer an unbounded body
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_RESPONSE:
                    raise _BadResponse
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _BadResponse from None

    def _judge(self, data: Any, count: int) -> Verdict:
        if self.kind == "custom":
            return self._judge_custom(data)
        return self._judge_moderation(data, count)

    def _judge_moderation(self, data: Any, count: int) -> Verdict:
        # Shape from the OpenAI API reference, "Moderations" (POST /v1/moderations) and the official SDK's
        # generated types (openai-python `types/moderation.py`, `moderation_create_response.py`): `results` holds
        # one object per input with `flagged: bool`, `categories: {name: bool}` (newer categories such as
        # "illicit" may be null) and `category_scores: {name: float}`; names look like "harassment/threatening".
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or len(results) != count:
            raise _BadResponse
        flagged = False
        fired: set[str] = set()
        top = 0.0
        for result in results:
            if not isinstance(result, dict) or not isinstance(result.get("flagged"), bool):
                raise _BadResponse
            cats = result.get("categories", {})
            scores = result.get("category_scores", {})
            if not isinstance(cats, dict) or not isinstance(scores, dict):
                raise _BadResponse
            for name, score in scores.items():
                value = _number(score)
                if value is None and score is not None:
                    raise _BadResponse
                if value is None or (self.categories is not None and name not in self.categories):
                    continue
                top = max(top, value)
                if self.threshold is not None and value >= self.threshold:
                    fired.add(name)
            if self.threshold is not None:
                continue
            for name, hit in cats.items():
                if hit is not None and not isinstance(hit, bool):
                    raise _BadResponse
                if hit and (self.categories is None or name in self.categories):
                    fired.add(name)
            # the top-level flag cannot be narrowed to some categories, so it counts only without a filter
            flagged = flagged or (result["flagged"] and self.categories is None)
        return Verdict(flagged or bool(fired), tuple(sorted(fired)), top)

    def _judge_custom(self, data: Any) -> Verdict:
        if not isinstance(data, dict) or not isinstance(data.get("flagged"), bool):
            raise _BadResponse
        cats = data.get("categories", [])
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            raise _BadResponse
        raw = data.get("score")
        score = _number(raw)
        if score is None:
            if raw is not None:
                raise _BadResponse
            score = 1.0 if data["flagged"] else 0.0
        kinds = [c for c in cats if self.categories is None or c in self.categories]
        flagged: bool = data["flagged"] if self.threshold is None else score >= self.threshold
        if self.categories is not None:
            flagged = flagged and bool(kinds)
        return Verdict(flagged, tuple(sorted(set(kinds))) if flagged else (), score)

    def _failed(self, error: str) -> Verdict:
        # name and error kind only: the URL may carry a key in its query, headers carry credentials
        log.warning("guard %s failed: %s (fail-%s)", self.name, error, self.fail)
        return Verdict(self.fail == "closed", (), 1.0 if self.fail == "closed" else 0.0, error)

    @staticmethod
    def _key(texts: Sequence[str]) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))  # length-prefixed: ["ab"] and ["a", "b"] differ
            digest.update(data)
        return digest.digest()

    def _remember(self, key: bytes, verdict: Verdict) -> None:
        self._cache[key] = (time.monotonic() + self.cache_ttl_s, verdict)
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
