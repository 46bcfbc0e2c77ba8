"""HttpGuard against a real moderation service on 127.0.0.1 (aiohttp.web, port 0), including slow, broken and
absent services."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web

from agentgw.guardrails.external import HttpGuard, Verdict

# Which words the fake classifier reacts to, with (category, score, flagged by the service itself).
WORDS = {
    "kill": ("violence", 0.9, True),
    "idiot": ("harassment", 0.7, True),
    "mild": ("harassment", 0.4, False),
}
CATEGORIES = ("harassment", "harassment/threatening", "violence", "self-harm")


def moderate(text: str) -> dict[str, Any]:
    """One result in the OpenAI moderation shape for `text`."""
    scores = dict.fromkeys(CATEGORIES, 0.01)
    flags = dict.fromkeys(CATEGORIES, False)
    for word, (category, score, flagged) in WORDS.items():
        if word in text:
            scores[category] = max(scores[category], score)
            flags[category] = flags[category] or flagged
    return {"flagged": any(flags.values()), "categories": flags, "category_scores": scores}


Reply = Callable[[dict[str, Any]], "web.StreamResponse"]


def moderation(body: dict[str, Any]) -> web.StreamResponse:
    results = [moderate(text) for text in body["input"]]
    return web.json_response({"id": "modr-1", "model": "omni-moderation-latest", "results": results})


@dataclass
class Service:
    url: str
    reply: Reply
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    slow: bool = False
    arrived: anyio.Event = field(default_factory=anyio.Event)


@contextlib.asynccontextmanager
async def service(reply: Reply = moderation, *, slow: bool = False) -> AsyncIterator[Service]:
    """A classifier on 127.0.0.1; a slow one waits on an event nobody sets (cancelled when the client leaves)."""
    never = anyio.Event()
    svc = Service("", reply, slow=slow)

    async def handle(request: web.Request) -> web.StreamResponse:
        svc.requests.append((dict(request.headers), orjson.loads(await request.read())))
        svc.arrived.set()
        if svc.slow:
            await never.wait()
        return svc.reply(svc.requests[-1][1])

    app = web.Application()
    app.router.add_post("/v1/moderations", handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    svc.url = f"http://{host}:{port}/v1/moderations"
    try:
        yield svc
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def guard_for(url: str, **options: Any) -> AsyncIterator[HttpGuard]:
    guard = HttpGuard("moderation", url, **options)
    try:
        yield guard
    finally:
        await guard.aclose()


async def check(texts: list[str], reply: Reply = moderation, **options: Any) -> tuple[Verdict, Service]:
    async with service(reply) as svc, guard_for(svc.url, **options) as guard:
        with anyio.fail_after(5):
            return await guard.check(texts), svc


async def test_flagged_text_is_reported_with_its_categories() -> None:
    verdict, _ = await check(["hello", "you idiot, I will kill you"])
    assert verdict == Verdict(True, ("harassment", "violence"), 0.9, None)


async def test_clean_text_passes() -> None:
    verdict, _ = await check(["hello", "what is the weather like?"])
    assert verdict == Verdict(False, (), 0.01, None)


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        (None, {"input": ["hello"]}),
        ("omni-moderation-latest", {"input": ["hello"], "model": "omni-moderation-latest"}),
    ],
)
async def test_the_request_has_the_moderation_shape_with_the_model_only_when_set(
    model: str | None, sent: dict[str, Any]
) -> None:
    _, svc = await check(["hello"], model=model)
    headers, body = svc.requests[0]
    assert body == sent
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("text", "threshold", "flagged", "kinds"),
    [
        ("a mild insult", 0.3, True, ("harassment",)),  # below the service's own flag, above ours
        ("a mild insult", 0.5, False, ()),
        ("I will kill", 0.95, False, ()),  # flagged by the service, under our threshold
        ("I will kill", 0.9, True, ("violence",)),  # score ≥ threshold counts
    ],
)
async def test_a_threshold_makes_the_scores_decide(
    text: str, threshold: float, flagged: bool, kinds: tuple[str, ...]
) -> None:
    verdict, _ = await check([text], threshold=threshold)
    assert (verdict.flagged, verdict.kinds, verdict.error) == (flagged, kinds, None)


@pytest.mark.parametrize(
    ("text", "threshold", "flagged", "kinds", "score"),
    [
        ("you idiot", None, False, (), 0.01),
        ("you idiot, I will kill you", None, True, ("violence",), 0.9),
        ("a mild insult", 0.3, False, (), 0.01),
    ],
)
async def test_a_categories_filter_counts_only_those_categories(
    text: str, threshold: float | None, flagged: bool, kinds: tuple[str, ...], score: float
) -> None:
    verdict, _ = await check([text], categories=["violence"], threshold=threshold)
    assert verdict == Verdict(flagged, kinds, score, None)


async def test_null_categories_from_newer_models_count_as_not_fired() -> None:
    def reply(body: dict[str, Any]) -> web.StreamResponse:
        result = {"flagged": False, "categories": {"illicit": None}, "category_scores": {"illicit": 0.2}}
        return web.json_response({"results": [result]})

    verdict, _ = await check(["hello"], reply)
    assert verdict == Verdict(False, (), 0.2, None)


@pytest.mark.parametrize(("fail", "flagged"), [("closed", True), ("open", False)])
async def test_a_slow_service_times_out_and_the_fail_policy_decides(fail: str, flagged: bool) -> None:
    async with service(slow=True) as svc, guard_for(svc.url, timeout_s=0.2, fail=fail) as guard:
        with anyio.fail_after(5):
            verdict = await guard.check(["hello"])
    assert (verdict.flagged, verdict.kinds, verdict.error) == (flagged, (), "timeout")


def status(code: int) -> Reply:
    return lambda body: web.Response(status=code, text="unavailable")


def raw(text: str, content_type: str = "application/json") -> Reply:
    return lambda body: web.Response(text=text, content_type=content_type)


def shaped(data: Any) -> Reply:
    return lambda body: web.json_response(data)


BROKEN = [
    pytest.param(status(500), "http_500", id="500"),
    pytest.param(status(503), "http_503", id="503"),
    pytest.param(status(401), "http_401", id="401"),
    pytest.param(raw("<html>oops</html>", "text/html"), "bad_response", id="html"),
    pytest.param(raw('{"results": ['), "bad_response", id="truncated-json"),
    pytest.param(raw("x" * (2 << 20)), "bad_response", id="over-size-limit"),
    pytest.param(shaped({"results": "none"}), "bad_response", id="results-not-a-list"),
    pytest.param(shaped([]), "bad_response", id="not-an-object"),
    pytest.param(shaped({"results": []}), "bad_response", id="one-input-no-result"),
    pytest.param(shaped({"results": [{"flagged": "yes"}]}), "bad_response", id="flagged-not-bool"),
    pytest.param(
        shaped({"results": [{"flagged": False, "categories": ["violence"]}]}),
        "bad_response",
        id="categories-list",
    ),
    pytest.param(
        shaped({"results": [{"flagged": False, "category_scores": {"violence": "high"}}]}),
        "bad_response",
        id="score-not-number",
    ),
    pytest.param(
        shaped({"results": [{"flagged": False, "categories": {"violence": "yes"}}]}),
        "bad_response",
        id="category-not-bool",
    ),
]


@pytest.mark.parametrize(("fail", "flagged"), [("closed", True), ("open", False)])
@pytest.mark.parametrize(("reply", "error"), BROKEN)
async def test_a_broken_answer_is_an_error_and_the_fail_policy_decides(
    reply: Reply, error: str, fail: str, flagged: bool
) -> None:
    verdict, _ = await check(["hello"], reply, fail=fail)
    assert (verdict.flagged, verdict.kinds, verdict.error) == (flagged, (), error)


@pytest.mark.parametrize(("fail", "flagged"), [("closed", True), ("open", False)])
async def test_a_refused_connection_is_an_error_and_the_fail_policy_decides(fail: str, flagged: bool) -> None:
    # bound but not listening: connections to it are refused, and no other test can take the port meanwhile
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        async with guard_for(f"http://127.0.0.1:{port}/v1/moderations", fail=fail) as guard:
            with anyio.fail_after(5):
                verdict = await guard.check(["hello"])
    assert (verdict.flagged, verdict.error) == (flagged, "unreachable")


async def test_the_authorization_header_reaches_the_service_and_is_not_in_the_repr() -> None:
    headers = {"Authorization": "Bearer sk-mod-secret"}
    async with service() as svc, guard_for(svc.url, headers=headers) as guard:
        await guard.check(["hello"])
        assert "sk-mod-secret" not in repr(guard)
    assert svc.requests[0][0]["Authorization"] == "Bearer sk-mod-secret"


def custom(body: dict[str, Any]) -> web.StreamResponse:
    texts = body["texts"]
    hits = sorted({WORDS[w][0] for t in texts for w in WORDS if w in t})
    score = max([WORDS[w][1] for t in texts for w in WORDS if w in t], default=0.0)
    return web.json_response({"flagged": score >= 0.5, "categories": hits, "score": score})


@pytest.mark.parametrize(
    ("texts", "options", "verdict"),
    [
        (["hello"], {}, Verdict(False, (), 0.0)),
        (["you idiot", "kill"], {}, Verdict(True, ("harassment", "violence"), 0.9)),
        (["a mild insult"], {"threshold": 0.3}, Verdict(True, ("harassment",), 0.4)),
        (["you idiot"], {"categories": ["violence"]}, Verdict(False, (), 0.7)),
        (["you idiot", "kill"], {"categories": ["violence"]}, Verdict(True, ("violence",), 0.9)),
    ],
)
async def test_a_custom_service_gets_the_texts_and_its_verdict_is_used(
    texts: list[str], options: dict[str, Any], verdict: Verdict
) -> None:
    got, svc = await check(texts, custom, kind="custom", **options)
    assert got == verdict
    assert svc.requests[0][1] == {"texts": texts}


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ({"flagged": True}, Verdict(True, (), 1.0)),  # categories and score are optional
        ({"flagged": False}, Verdict(False, (), 0.0)),
        ({"flagged": "no"}, Verdict(True, (), 1.0, "bad_response")),
        ({"flagged": True, "categories": "violence"}, Verdict(True, (), 1.0, "bad_response")),
        ({"flagged": True, "score": True}, Verdict(True, (), 1.0, "bad_response")),
    ],
)
async def test_a_custom_answer_is_checked_against_the_contract(
    answer: dict[str, Any], verdict: Verdict
) -> None:
    got, _ = await check(["hello"], shaped(answer), kind="custom")
    assert got == verdict


@pytest.mark.parametrize(("ttl", "sent"), [(60.0, 1), (0.0, 2)])
async def test_identical_texts_within_the_ttl_are_answered_from_the_cache(ttl: float, sent: int) -> None:
    async with service() as svc, guard_for(svc.url, cache_ttl_s=ttl) as guard:
        first = await guard.check(["you idiot"])
        second = await guard.check(["you idiot"])
        await guard.check(["you", "idiot"])  # different list, same characters: not a cache hit
    assert first == second
    assert first.flagged
    assert len(svc.requests) == sent + 1


async def test_a_failed_answer_is_not_cached() -> None:
    async with service(status(503)) as svc, guard_for(svc.url, cache_ttl_s=60.0) as guard:
        assert (await guard.check(["hello"])).error == "http_503"
        svc.reply = moderation
        assert await guard.check(["hello"]) == Verdict(False, (), 0.01)


async def test_no_texts_is_clean_without_asking_the_service() -> None:
    verdict, svc = await check([])
    assert verdict == Verdict(False)
    assert svc.requests == []


async def test_a_shared_session_is_used_and_left_open() -> None:
    async with aiohttp.ClientSession() as session, service() as svc:
        guard = HttpGuard("moderation", svc.url, session_factory=lambda: session)
        assert (await guard.check(["kill"])).flagged
        await guard.aclose()
        assert not session.closed


async def test_cancelling_a_check_cancels_it_rather_than_returning_a_verdict() -> None:
    results: list[Verdict] = []
    async with service(slow=True) as svc, guard_for(svc.url, timeout_s=30) as guard:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    results.append(await guard.check(["hello"]))

                tg.start_soon(run)
                await svc.arrived.wait()
                tg.cancel_scope.cancel()
    assert results == []


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("ftp://mod.example/v1", {}),
        ("/v1/moderations", {}),
        ("http://mod.example/v1", {"kind": "llamaguard"}),
        ("http://mod.example/v1", {"fail": "maybe"}),
        ("http://mod.example/v1", {"timeout_s": 0}),
    ],
)
def test_a_bad_configuration_is_refused_when_the_guard_is_built(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="guard 'moderation'"):
        HttpGuard("moderation", url, **options)
