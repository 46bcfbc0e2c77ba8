"""The mediation pipeline: one ordered list of stages over one Exchange.

`on_request` runs forward, then the plane's forward step (the upstream call), then `on_response` in reverse;
streams pass each frame through `on_chunk`; `on_finish` runs in reverse in `finally`, for denials, errors and
cancellations too (the audit stage lives there). A stage decides by raising GatewayError or by setting
`exchange.result`; any other exception is a denial with a stable code (fail closed), never a skipped check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from agentgw.errors import GatewayError, UpstreamError
from agentgw.exchange import Exchange, Principal, Result

log = logging.getLogger("agentgw.pipeline")

Forward = Callable[[Exchange], Awaitable[Result]]


class Stage:
    """Base class: override only the hooks you need (the pipeline skips the others at no cost)."""

    name = "stage"
    identifies = False  # runs even for requests refused as malformed, so their record names the caller

    async def on_request(self, exchange: Exchange) -> None:
        return None

    async def on_response(self, exchange: Exchange) -> None:
        return None

    async def on_chunk(self, exchange: Exchange, chunk: bytes) -> bytes | None:
        """Return the chunk to pass on (possibly changed), or None to drop it. Raise StopStream to end."""
        return chunk

    async def on_finish(self, exchange: Exchange) -> None:
        return None

    def allows(self, principal: Principal, target: str, action: str = "call") -> bool:
        """For listings: would this stage let `principal` do `action` on `target`? (Default: no opinion.)"""
        return True


class StopStream(Exception):
    """Raised by `on_chunk` to end a stream cleanly: `tail` is sent to the client, then the stream closes."""

    def __init__(self, reason: str, tail: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.tail = tail


class StageFailed(GatewayError):
    status, code, type = 503, "stage_failed", "api_error"


def _overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)


class Pipeline:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)
        self._request = [s for s in self.stages if _overrides(s, "on_request")]
        self._response = [s for s in reversed(self.stages) if _overrides(s, "on_response")]
        self._chunk = [s for s in self.stages if _overrides(s, "on_chunk")]
        self._finish = [s for s in reversed(self.stages) if _overrides(s, "on_finish")]
        self._identify = [s for s in self.stages if s.identifies]
        self._filters = [s for s in self.stages if _overrides(s, "allows")]

    async def run(self, ex: Exchange, forward: Forward) -> Result:
        """Mediate one Exchange. Returns the result (a stream is returned wrapped, finished when it ends);
        raises the GatewayError the client should see, after the finish hooks have run."""
        try:
            stage_name = "request"
            for stage in self._request:
                stage_name = stage.name
                await stage.on_request(ex)
                if ex.result is not None:
                    break
            if ex.result is None:
                stage_name = "forward"
                ex.result = await forward(ex)
            if ex.result.stream is None:  # a stream's response hooks run when it ends (see _relay)
                for stage in self._response:
                    stage_name = stage.name
                    await stage.on_response(ex)
        except GatewayError as err:
            self._fail(ex, err)
        except asyncio.CancelledError:
            ex.status = "cancelled"
            ex.stream_cut = ex.stream_cut or "cancelled"
            await self._run_finish(ex)
            raise
        except Exception as exc:  # fail closed: an unexpected error is a denial, never a skipped check
            log.exception("unexpected error in %s", stage_name)
            if stage_name == "forward":
                self._fail(ex, UpstreamError("the upstream call failed unexpectedly"))
            else:
                self._fail(ex, StageFailed(f"the {stage_name} stage failed; the request was refused"))
                ex.decide(stage_name, "error", detail=type(exc).__name__)
        if ex.error is not None:
            await self._run_finish(ex)
            raise ex.error.public()  # the record keeps what happened; the caller learns what it may
        result = ex.result
        assert result is not None
        if result.stream is not None:
            result.stream = self._relay(ex, result.stream)
            return result
        if ex.status == "pending":
            ex.status = "ok"
        await self._run_finish(ex)
        return result

    def allows(self, principal: Principal | None, target: str, action: str = "call") -> bool:
        """Whether every filtering stage would let `principal` at `target`: listings show exactly this."""
        if principal is None:
            return False
        return all(s.allows(principal, target, action) for s in self._filters)

    async def reject(self, ex: Exchange, err: GatewayError) -> GatewayError:
        """Record a request refused before mediation (malformed input). Identity stages still run first, so an
        unauthenticated caller learns nothing beyond 401. Returns the error the client should see."""
        try:
            for stage in self._identify:
                await stage.on_request(ex)
        except GatewayError as denied:
            err = denied
        except Exception:
            log.exception("identity stage failed on a rejected request")
        self._fail(ex, err)
        await self._run_finish(ex)
        return err

    @staticmethod
    def _fail(ex: Exchange, err: GatewayError) -> None:
        ex.error = err
        if ex.status == "pending":
            ex.status = (
                "denied" if err.status in (401, 403, 429) or getattr(err, "denial", False) else "error"
            )

    async def _relay(self, ex: Exchange, upstream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Pass frames through the chunk hooks; finish exactly once, however the stream ends."""
        chunk_stages = self._chunk
        try:
            async for frame in upstream:
                out: bytes | None = frame
                for stage in chunk_stages:
                    out = await stage.on_chunk(ex, frame)
                    if out is None:
                        break
                    frame = out
                if out:
                    yield out
            if ex.status == "pending":
                ex.status = "ok"
        except StopStream as stop:
            ex.stream_cut = stop.reason
            ex.status = "ok"
            if stop.tail:
                yield stop.tail
        except GatewayError as err:
            ex.error = err
            ex.status = (
                "denied" if err.status in (401, 403, 429) or getattr(err, "denial", False) else "error"
            )  # as _fail: a refusal mid-stream
            ex.stream_cut = ex.stream_cut or "upstream_error"
        except asyncio.CancelledError:  # the plane marks a client disconnect; otherwise it is a shutdown
            ex.status = "cancelled"
            ex.stream_cut = ex.stream_cut or "cancelled"
            raise
        except GeneratorExit:  # the consumer closed the stream: the client is gone
            ex.status = "cancelled"
            ex.stream_cut = ex.stream_cut or "client_disconnect"
            raise
        except Exception:
            log.exception("stream relay failed")
            ex.error = UpstreamError("the upstream stream failed")
            ex.status = "error"
            ex.stream_cut = ex.stream_cut or "upstream_error"
        finally:
            close = getattr(upstream, "aclose", None)
            if close is not None:
                await close()
            for stage in self._response:
                try:
                    await stage.on_response(ex)
                except Exception:  # the bytes are already sent; record, never re-raise into the client
                    log.exception("on_response after stream failed")
            await self._run_finish(ex)

    async def _run_finish(self, ex: Exchange) -> None:
        for stage in self._finish:
            try:
                await stage.on_finish(ex)
            except Exception:
                log.exception("finish hook of %s failed", stage.name)
