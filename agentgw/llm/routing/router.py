"""Model aliases → targets in the order their strategy gives (strategies.py): retry with jittered backoff, fail over,
and a circuit breaker per target; a target at its rpm/tpm limit is skipped.

Retries happen on 429/5xx/timeouts/connection errors only, and only before anything reached the client: a
stream is committed once its first frame arrived, and never retried after. Every attempt is recorded on the
Exchange. Fails with 404 `model_not_found`, the upstream's own 4xx (relayed, scrubbed), or 502/504.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from agentgw.errors import (
    GatewayError,
    ModelNotFound,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamRejected,
    UpstreamTimeout,
)
from agentgw.exchange import Attempt, Result
from agentgw.llm.providers import Call, Provider, ProviderError
from agentgw.llm.providers.base import NativeProvider
from agentgw.llm.routing.strategies import Routing, then
from agentgw.registry import Model, Retry
from agentgw.settings import CircuitBreaker, RetryDefaults


class UpstreamRateLimited(GatewayError):
    """Every target of the model is at its rpm/tpm limit: 429, nothing was sent."""

    status, code, type = 429, "upstream_rate_limited", "rate_limit_error"


@dataclass(slots=True)
class Breaker:
    """Closed → open after `failures` consecutive failures; half-open (one trial) after `cooldown_s`."""

    failures: int = 0
    opened_at: float | None = None
    trial: bool = False

    def allow(self, cfg: CircuitBreaker) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= cfg.cooldown_s and not self.trial:
            self.trial = True  # half-open: let exactly one call through
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def failure(self, cfg: CircuitBreaker) -> None:
        self.failures += 1
        if self.trial or self.failures >= cfg.failures:
            self.opened_at = time.monotonic()
        self.trial = False

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else ("half_open" if self.trial else "open")

    def report(self, cfg: CircuitBreaker) -> dict[str, Any]:
        """The circuit as an operator sees it: an open one whose cooldown has passed is half-open (its next call is
        the trial); `retry_in_s`: how long an open one still refuses calls."""
        state, wait = self.state, None
        if self.opened_at is not None and not self.trial:
            wait = round(max(0.0, self.opened_at + cfg.cooldown_s - time.monotonic()), 3)
            state = "half_open" if wait == 0 else "open"
        return {"circuit": state, "failures": self.failures, "retry_in_s": wait}


class Router:
    def __init__(
        self,
        models: list[Model],
        providers: dict[str, Provider],
        retry: RetryDefaults,
        breaker: CircuitBreaker,
    ) -> None:
        self.models = {m.name: m for m in models}
        self.providers = providers
        self.default_retry = Retry(**retry.model_dump())
        self.breaker_cfg = breaker
        self.breakers: dict[str, Breaker] = {}
        self.routing = Routing()

    def circuits(self) -> dict[str, dict[str, Any]]:
        """Each target's circuit by `provider/model` (a target never called has none yet: closed)."""
        return {key: b.report(self.breaker_cfg) for key, b in self.breakers.items()}

    def resolve(self, name: object) -> Model:
        model = self.models.get(name) if isinstance(name, str) else None
        if model is None:
            raise ModelNotFound.named(name)
        return model

    async def call(self, model: Model, call: Call) -> Result:
        retry = model.retry or self.default_retry
        ex = call.exchange
        last: ProviderError | None = None
        number = 0
        trace_id = ex.task.trace_id if ex.task is not None else None
        targets, skipped = self.routing.order(model)
        for target in skipped:  # at its rpm/tpm limit: skipped, not failed (its circuit is not touched)
            number += 1
            ex.attempts.append(Attempt(number, f"{target.provider}/{target.model}", "skipped"))
        if not targets:
            raise UpstreamRateLimited(
                f"Every target of model '{model.name}' is at its rate limit; try again later."
            )
        for target in targets:
            key = f"{target.provider}/{target.model}"
            breaker = self.breakers.get(key)
            if breaker is None:
                breaker = self.breakers[key] = Breaker()
            provider = self.providers[target.provider]
            call.model = target.model
            for attempt in range(retry.attempts):
                number += 1
                if not breaker.allow(self.breaker_cfg):
                    ex.attempts.append(Attempt(number, key, "circuit_open"))
                    last = last or ProviderError(f"circuit open for {key}", retryable=True)
                    break
                tried = Attempt(number, key, "ok")
                if trace_id is not None:  # the upstream learns this attempt's span as its parent
                    call.headers["traceparent"] = f"00-{trace_id}-{tried.span_id}-01"
                self.routing.started(target)
                try:
                    if call.native is not None:
                        result = await cast(NativeProvider, provider).native(call)
                    elif call.operation == "chat":
                        result = await provider.chat(call)
                    else:
                        result = await provider.embeddings(call)
                    if result.stream is not None:
                        result.stream = await _commit(result.stream)
                except ProviderError as err:
                    tried.latency_ms = (time.perf_counter() - tried.started_mono) * 1000
                    self.routing.ended(target, tried.latency_ms, failed=err.retryable)
                    tried.outcome = "timeout" if err.timeout else ("error" if err.retryable else "rejected")
                    tried.status, tried.error = err.status, err.message
                    ex.attempts.append(tried)
                    if not err.retryable:
                        breaker.success()  # the upstream is healthy; the request itself was refused
                        raise _relay(err) from None
                    breaker.failure(self.breaker_cfg)
                    last = err
                    if attempt + 1 < retry.attempts:
                        await asyncio.sleep(_backoff(retry, attempt))
                    continue
                except BaseException as exc:  # cancelled (client gone) or a bug: the try is still on record
                    tried.latency_ms = (time.perf_counter() - tried.started_mono) * 1000
                    self.routing.ended(target, None, failed=False)
                    cancelled = isinstance(exc, asyncio.CancelledError)
                    tried.outcome, tried.error = ("cancelled" if cancelled else "error"), type(exc).__name__
                    ex.attempts.append(tried)
                    raise
                breaker.success()
                tried.status = result.status
                tried.latency_ms = (time.perf_counter() - tried.started_mono) * 1000
                ex.attempts.append(tried)
                ex.attrs["target"] = key
                if result.stream is None or model.strategy != "least_busy":
                    # a stream's latency is the time to its first frame; only least_busy needs it counted as busy
                    # until it ends, so only then does every frame pass one more generator
                    self.routing.ended(target, tried.latency_ms, failed=False)
                else:
                    result.stream = then(
                        result.stream, partial(self.routing.ended, target, tried.latency_ms, False)
                    )
                return result
        assert last is not None
        cls = UpstreamTimeout if last.timeout else UpstreamInvalidResponse if last.invalid else UpstreamError
        raise cls(f"All upstream targets failed for model '{model.name}'; last error: {last.message}")


def _backoff(retry: Retry, attempt: int) -> float:
    """Full jitter: uniform in [0, min(max, base·2^attempt)]."""
    cap = min(retry.max_backoff_ms, retry.backoff_ms * (2**attempt))
    return random.uniform(0, cap) / 1000.0


def _relay(err: ProviderError) -> GatewayError:
    status = err.status or 502
    if status in (401, 403):  # our upstream credential was refused: the caller's request is not at fault
        return UpstreamError(
            f"The upstream refused the gateway's credentials ({status}).", code="upstream_auth_failed"
        )
    code = "upstream_rejected"
    if isinstance(err.body, dict) and isinstance(err.body.get("code"), str):
        code = err.body["code"]
    return UpstreamRejected(
        err.message, status=status, code=code, detail=err.body if isinstance(err.body, dict) else None
    )


async def _commit(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Read the first frame before committing: a failure before it is still retryable."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = b""
    except ProviderError:
        await _close(stream)
        raise
    except Exception as exc:
        await _close(stream)
        raise ProviderError(
            f"upstream stream failed before the first frame: {type(exc).__name__}",
            retryable=True,
            timeout=isinstance(exc, TimeoutError),
        ) from None
    return _chain(first, stream)


async def _close(stream: AsyncIterator[bytes]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for frame in rest:
            yield frame
    finally:
        await _close(rest)
