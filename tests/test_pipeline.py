"""The pipeline's contract: hook order, short-circuit, fail-closed on unexpected errors, finish hooks for
every outcome, and stream relays that finish exactly once however they end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentgw.errors import Forbidden, GatewayError, UpstreamError
from agentgw.exchange import Exchange, Result
from agentgw.pipeline import Pipeline, Stage, StopStream


class Recorder(Stage):
    def __init__(self, name: str, log: list[str], fail: Exception | None = None) -> None:
        self.name = name
        self.log = log
        self.fail = fail

    async def on_request(self, exchange: Exchange) -> None:
        self.log.append(f"{self.name}.request")
        if self.fail is not None:
            raise self.fail

    async def on_response(self, exchange: Exchange) -> None:
        self.log.append(f"{self.name}.response")

    async def on_finish(self, exchange: Exchange) -> None:
        self.log.append(f"{self.name}.finish:{exchange.status}")


class Cutter(Stage):
    name = "cutter"

    def __init__(self, after: int) -> None:
        self.after = after
        self.seen = 0

    async def on_chunk(self, exchange: Exchange, chunk: bytes) -> bytes | None:
        self.seen += 1
        if self.seen > self.after:
            raise StopStream("budget_exhausted", tail=b"END")
        return chunk.upper()


def ex() -> Exchange:
    return Exchange("llm", "chat", "llm:m", {})


async def ok(exchange: Exchange) -> Result:
    return Result(body=b"{}")


async def frames(n: int, log: list[str]) -> AsyncIterator[bytes]:
    try:
        for i in range(n):
            yield f"f{i}".encode()
    finally:
        log.append("upstream.closed")


async def test_requests_run_forward_responses_in_reverse_and_finish_last() -> None:
    log: list[str] = []
    p = Pipeline([Recorder("a", log), Recorder("b", log)])
    await p.run(ex(), ok)
    assert log == ["a.request", "b.request", "b.response", "a.response", "b.finish:ok", "a.finish:ok"]


async def test_a_denial_stops_the_request_and_still_runs_every_finish_hook() -> None:
    log: list[str] = []
    calls: list[str] = []

    async def forward(exchange: Exchange) -> Result:
        calls.append("forward")
        return Result(body=b"{}")

    p = Pipeline([Recorder("a", log), Recorder("b", log, Forbidden("no")), Recorder("c", log)])
    e = ex()
    with pytest.raises(Forbidden):
        await p.run(e, forward)
    assert calls == []
    assert log == ["a.request", "b.request", "c.finish:denied", "b.finish:denied", "a.finish:denied"]


async def test_an_unexpected_stage_error_fails_closed_with_a_stable_code() -> None:
    log: list[str] = []
    p = Pipeline([Recorder("a", log), Recorder("b", log, KeyError("boom"))])
    e = ex()
    with pytest.raises(GatewayError) as err:
        await p.run(e, ok)
    assert err.value.code == "stage_failed"
    assert err.value.status == 503
    assert e.decisions[-1].stage == "b"
    assert "a.finish:error" in log


async def test_an_unexpected_forward_error_is_an_upstream_error_not_a_500() -> None:
    async def broken(exchange: Exchange) -> Result:
        raise RuntimeError("boom")

    with pytest.raises(UpstreamError) as err:
        await Pipeline([]).run(ex(), broken)
    assert err.value.status == 502


async def test_a_stage_can_answer_without_calling_the_upstream() -> None:
    class Cache(Stage):
        name = "cache"

        async def on_request(self, exchange: Exchange) -> None:
            exchange.result = Result(body=b"cached")

    async def forward(exchange: Exchange) -> Result:
        raise AssertionError("must not be called")

    result = await Pipeline([Cache()]).run(ex(), forward)
    assert result.body == b"cached"


async def test_a_stream_finishes_once_after_its_last_frame_with_response_hooks() -> None:
    log: list[str] = []

    async def forward(exchange: Exchange) -> Result:
        return Result(stream=frames(3, log))

    result = await Pipeline([Recorder("a", log)]).run(ex(), forward)
    assert log == ["a.request"]  # response and finish wait for the stream
    assert result.stream is not None
    out = [f async for f in result.stream]
    assert out == [b"f0", b"f1", b"f2"]
    assert log == ["a.request", "upstream.closed", "a.response", "a.finish:ok"]


async def test_a_chunk_hook_can_end_a_stream_cleanly_with_a_tail() -> None:
    log: list[str] = []
    e = ex()

    async def forward(exchange: Exchange) -> Result:
        return Result(stream=frames(5, log))

    result = await Pipeline([Recorder("a", log), Cutter(after=2)]).run(e, forward)
    assert result.stream is not None
    out = [f async for f in result.stream]
    assert out == [b"F0", b"F1", b"END"]
    assert e.stream_cut == "budget_exhausted"
    assert "upstream.closed" in log
    assert log[-1] == "a.finish:ok"


async def test_a_stream_closed_by_the_client_is_recorded_as_cancelled() -> None:
    log: list[str] = []
    e = ex()

    async def forward(exchange: Exchange) -> Result:
        return Result(stream=frames(5, log))

    result = await Pipeline([Recorder("a", log)]).run(e, forward)
    assert result.stream is not None
    stream = result.stream
    assert await anext(stream) == b"f0"
    await stream.aclose()  # type: ignore[attr-defined]
    assert e.status == "cancelled"
    assert e.stream_cut == "client_disconnect"
    assert log[-2:] == ["a.response", "a.finish:cancelled"]


async def test_rejecting_malformed_input_still_identifies_the_caller_first() -> None:
    log: list[str] = []

    class Ident(Recorder):
        identifies = True

    p = Pipeline([Ident("authn", log, Forbidden("who?")), Recorder("b", log)])
    err = await p.reject(ex(), GatewayError("bad json", status=400, code="invalid_json"))
    assert err.code == "permission_denied"  # identity failure wins over the input error
    assert log == ["authn.request", "b.finish:denied", "authn.finish:denied"]
