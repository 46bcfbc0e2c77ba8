"""The labelled guardrail corpus through real gateways: each guard alone, blocking, on both directions of the LLM,
MCP and A2A planes (streams included), scored per guard and path against the same guard's detector."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp.types as types
import openai
import orjson
import pytest
from a2a.helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCard
from mcp import Client
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentgw.guardrails.config import GuardrailSettings
from agentgw.guardrails.engine import Guardrails
from agentgw.guardrails.findings import Detector
from tests.a2a.agents import Agent, make_card
from tests.a2a.plane import message, rpc, sse_data
from tests.guardrails import corpus, corpus_injection
from tests.mcp.support import Upstream, mcp_client, server_entry
from tests.support import TEST_KEY, free_port, gateway, serve

Rates = Callable[[Detector, Sequence[tuple[str, str]], Sequence[str]], dict[str, float]]


@dataclass(frozen=True)
class Case:
    spec: dict[str, Any]
    positives: Sequence[tuple[str, str]]
    negatives: Sequence[str]
    rates: Rates
    code: str  # the error code a block by this guard carries


GUARDS = {
    "sensitive-data": Case(
        {"action": "block"},
        corpus.SENSITIVE_POSITIVES,
        corpus.SENSITIVE_NEGATIVES,
        corpus.rates,
        "sensitive_data",
    ),
    "secrets": Case(
        {"action": "block"}, corpus.SECRET_POSITIVES, corpus.SECRET_NEGATIVES, corpus.rates, "sensitive_data"
    ),
    "prompt-injection": Case(
        {"action": "block"},
        corpus_injection.INJECTION_POSITIVES,
        corpus_injection.INJECTION_NEGATIVES,
        corpus_injection.rates,
        "prompt_injection",
    ),
    "content": Case(
        {"action": "block", "deny": corpus_injection.CONTENT_DENY},
        corpus_injection.CONTENT_POSITIVES,
        corpus_injection.CONTENT_NEGATIVES,
        corpus_injection.rates,
        "content_blocked",
    ),
}
PATHS = (
    "llm request",
    "llm response",
    "llm stream",
    "mcp request",
    "mcp response",
    "a2a request",
    "a2a stream",
)
LLM_PIECE = (
    4  # characters per streamed LLM delta: about a token, always whole characters as providers send them
)
A2A_PIECE = 16  # characters per streamed A2A artifact chunk
CONCURRENCY = 16


def guardrails(direction: str) -> dict[str, Any]:
    """Every guard blocking, each on its own targets only (its model, MCP server and agent), in one direction."""
    rules = [
        {"guards": [g], "direction": direction, "targets": [f"llm:corpus-{g}", f"mcp:{g}/echo", f"a2a:{g}"]}
        for g in GUARDS
    ]
    return {"guards": {g: c.spec for g, c in GUARDS.items()}, "rules": rules}


# The gateway's own guards, built from the configuration the gateways get: the detector-level baseline.
DETECTORS = Guardrails(GuardrailSettings.model_validate(guardrails("request"))).guards


def registry(llm: str, mcp: str, agent: str) -> dict[str, Any]:
    """Per guard: a model, an MCP server and an agent, all in front of the same three echoing upstreams."""
    return {
        "llm": {
            "providers": [{"name": "echo", "kind": "openai", "base_url": f"{llm}/v1", "api_key": "sk-test"}],
            "models": [
                {"name": f"corpus-{g}", "targets": [{"provider": "echo", "model": "echo"}]} for g in GUARDS
            ],
        },
        "mcp": {"servers": [server_entry(g, mcp) for g in GUARDS]},
        "a2a": {"agents": [{"name": g, "url": agent} for g in GUARDS]},
    }


# -- upstreams that give the text back unchanged -------------------------------------------------------------


async def echo_chat(request: Request) -> Response:
    """An OpenAI-compatible model that answers with the last message's text, unchanged (the mock provider does
    not: its token-wise stream splits multi-byte characters into U+FFFD, and it answers `call …` with a tool
    call); streamed in LLM_PIECE-character deltas."""
    body = orjson.loads(await request.body())
    said: str = body["messages"][-1]["content"]
    base = {"id": "chatcmpl-echo", "created": 1, "model": body["model"]}
    if not body.get("stream"):
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": said}}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        return JSONResponse({**base, "object": "chat.completion", "choices": [choice], "usage": usage})

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return (
            b"data: "
            + orjson.dumps({**base, "object": "chat.completion.chunk", "choices": [choice]})
            + b"\n\n"
        )

    async def frames() -> AsyncIterator[bytes]:
        yield frame({"role": "assistant", "content": ""})
        for i in range(0, len(said), LLM_PIECE):
            yield frame({"content": said[i : i + LLM_PIECE]})
        yield frame({}, "stop")
        yield b"data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream")


class Verbatim(AgentExecutor):
    """Answers a message with its own text as one artifact, streamed in A2A_PIECE-character chunks (the a2a
    tests' echo agents prefix what they heard, so their answer is not the corpus text)."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        text = get_message_text(context.message)
        task = new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        pieces = [text[i : i + A2A_PIECE] for i in range(0, len(text), A2A_PIECE)]
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            await updater.add_artifact(
                [new_text_part(piece)], artifact_id="echo", name="echo", append=n > 0, last_chunk=last
            )
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


@contextlib.asynccontextmanager
async def verbatim_agent() -> AsyncIterator[str]:
    port = free_port()
    agent = Agent("echo", "corpus", f"http://127.0.0.1:{port}", AgentCard())
    card = make_card(agent)
    handler = DefaultRequestHandler(
        agent_executor=Verbatim(), task_store=InMemoryTaskStore(), agent_card=card
    )
    routes = [*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")]
    async with serve(Starlette(routes=routes), port=port, graceful_s=0.5):
        try:
            yield agent.url
        finally:
            await handler.aclose()


# -- one call per path: blocked (in the protocol's block shape) or the text that came back -------------------


@dataclass(frozen=True)
class Outcome:
    blocked: bool
    code: str | None = None  # the guard's code, where the block shape carries one
    text: str | None = None  # what came back when not blocked


@dataclass(frozen=True)
class Clients:
    llm: openai.AsyncOpenAI
    mcp: Client
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def clients(url: str) -> AsyncIterator[Clients]:
    async with (
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as llm,
        mcp_client(f"{url}/mcp") as tools,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield Clients(llm, tools, http)


async def chat(c: Clients, guard: str, text: str, stream: bool) -> Outcome:
    said: list[Any] = [{"role": "user", "content": text}]
    try:
        if stream:
            pieces, finish = [], None
            async for chunk in await c.llm.chat.completions.create(
                model=f"corpus-{guard}", messages=said, stream=True
            ):
                for choice in chunk.choices:
                    pieces.append(choice.delta.content or "")
                    finish = choice.finish_reason or finish
            answer = "".join(pieces)
        else:
            completion = await c.llm.chat.completions.create(model=f"corpus-{guard}", messages=said)
            answer, finish = completion.choices[0].message.content or "", completion.choices[0].finish_reason
    except openai.BadRequestError as refused:
        return Outcome(True, refused.code)
    if finish == "content_filter":
        return Outcome(True)
    assert finish == "stop", (finish, answer)
    return Outcome(False, text=answer)


async def tool(c: Clients, guard: str, text: str) -> Outcome:
    for attempt in range(2):
        try:
            result = await c.mcp.call_tool(f"{guard}__echo", {"text": text})
            break
        except MCPError as refused:
            lost = isinstance(refused.data, dict) and refused.data.get("code") == "mcp_server_unavailable"
            if lost and attempt == 0:
                # the gateway lost its connection to the upstream under load (seen once in ~3,000 calls; it says
                # so, as it should, with 503 mcp_server_unavailable): a caller tries again, and so does this one
                continue
            if refused.code != -32602:  # not a refusal of the arguments
                raise
            return Outcome(True, refused.data["code"])
    [item] = result.content
    assert isinstance(item, types.TextContent)
    if result.is_error:  # a blocked result: an error result naming the code
        code = next((c.code for c in GUARDS.values() if c.code in item.text), None)
        assert code is not None, item.text
        return Outcome(True, code)
    return Outcome(False, text=item.text)


A2A_HEADERS = {"Authorization": f"Bearer {TEST_KEY}", "A2A-Version": "1.0"}


async def send(c: Clients, guard: str, text: str) -> Outcome:
    body = rpc("SendMessage", {"message": message(text, mid=uuid.uuid4().hex)})
    reply = (await c.http.post(f"/a2a/{guard}", json=body, headers=A2A_HEADERS)).json()
    if "error" in reply:
        assert reply["error"]["code"] == -32602, reply
        return Outcome(True, reply["error"]["data"][0]["metadata"]["code"])
    task = reply["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
    return Outcome(False, text="".join(p["text"] for a in task["artifacts"] for p in a["parts"]))


async def send_streaming(c: Clients, guard: str, text: str) -> Outcome:
    body = rpc("SendStreamingMessage", {"message": message(text, mid=uuid.uuid4().hex)}, rid="s1")
    async with c.http.stream("POST", f"/a2a/{guard}", json=body, headers=A2A_HEADERS) as r:
        assert r.status_code == 200
        raw = await r.aread()
    events = [f["result"] for f in sse_data(raw.decode())]
    last = events[-1]["statusUpdate"]
    if last["status"]["state"] == "TASK_STATE_FAILED":  # a blocked stream: a final failed status, marked
        return Outcome(True, last["metadata"]["io.agentgw/cut"])
    assert last["status"]["state"] == "TASK_STATE_COMPLETED", events
    chunks = [e["artifactUpdate"]["artifact"]["parts"] for e in events if "artifactUpdate" in e]
    return Outcome(False, text="".join(p["text"] for parts in chunks for p in parts))


# -- the run: every corpus text on every path, once per module -----------------------------------------------

Run = dict[tuple[str, str], tuple[list[Outcome], list[Outcome]]]  # (guard, path) → (positives, negatives)


async def run_corpus(tmp: Path) -> Run:
    (tmp / "request").mkdir()
    (tmp / "response").mkdir()
    chat_app = Starlette(routes=[Route("/v1/chat/completions", echo_chat, methods=["POST"])])
    async with serve(chat_app) as llm_url, serve(Upstream("docs")) as mcp_url, verbatim_agent() as agent_url:
        reg = registry(llm_url, mcp_url, agent_url)
        async with (
            gateway(tmp / "request", reg, {"guardrails": guardrails("request")}) as (req_url, _),
            gateway(tmp / "response", reg, {"guardrails": guardrails("response")}) as (resp_url, _),
            clients(req_url) as req,
            clients(resp_url) as resp,
        ):
            calls: dict[str, Callable[[str, str], Awaitable[Outcome]]] = {
                "llm request": lambda g, t: chat(req, g, t, stream=False),
                "llm response": lambda g, t: chat(resp, g, t, stream=False),
                "llm stream": lambda g, t: chat(resp, g, t, stream=True),
                "mcp request": lambda g, t: tool(req, g, t),
                "mcp response": lambda g, t: tool(resp, g, t),
                "a2a request": lambda g, t: send(req, g, t),
                "a2a stream": lambda g, t: send_streaming(resp, g, t),
            }
            out: dict[tuple[str, str, int], Outcome] = {}
            limiter = anyio.CapacityLimiter(CONCURRENCY)

            async def one(path: str, guard: str, i: int, text: str) -> None:
                async with limiter:
                    try:
                        out[path, guard, i] = await calls[path](guard, text)
                    except Exception as exc:
                        raise AssertionError(f"{path} / {guard}: {text!r}") from exc

            with anyio.fail_after(240):
                async with anyio.create_task_group() as tg:
                    for path in PATHS:
                        for guard, case in GUARDS.items():
                            for i, text in enumerate(texts(case)):
                                tg.start_soon(one, path, guard, i, text)
    run: Run = {}
    for guard, case in GUARDS.items():
        n = len(case.positives)
        for path in PATHS:
            got = [out[path, guard, i] for i in range(len(texts(case)))]
            run[guard, path] = (got[:n], got[n:])
    return run


def texts(case: Case) -> list[str]:
    return [t for t, _ in case.positives] + list(case.negatives)


def share(outcomes: Sequence[Outcome]) -> float:
    return sum(o.blocked for o in outcomes) / len(outcomes)


def pct(hit: int, of: int) -> str:
    return f"{hit}/{of} ({100 * hit / of:.1f}%)"


def table(run: Run) -> str:
    """The rates as a Markdown table: per guard the detector alone, then each path through the gateway."""
    lines = ["| guard | path | detection | false positives |", "|---|---|---|---|"]
    for guard, case in GUARDS.items():
        base = case.rates(DETECTORS[guard], case.positives, case.negatives)
        p, n = len(case.positives), len(case.negatives)
        lines.append(
            f"| {guard} | detector | {pct(round(base['detection'] * p), p)} "
            f"| {pct(round(base['false_positive'] * n), n)} |"
        )
        for path in PATHS:
            pos, neg = run[guard, path]
            hit, false = sum(o.blocked for o in pos), sum(o.blocked for o in neg)
            lines.append(f"| {guard} | {path} | {pct(hit, p)} | {pct(false, n)} |")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    started = time.perf_counter()
    result = anyio.run(run_corpus, tmp_path_factory.mktemp("corpus"), backend="asyncio")
    calls = sum(len(texts(c)) for c in GUARDS.values()) * len(PATHS)
    print(f"\n{table(result)}\n\n{calls} calls through the gateways in {time.perf_counter() - started:.1f} s")
    return result


# Benign texts a stream blocked though the detector passes them whole, because a finding reaching the end of
# what had arrived so far was acted on before the rest of the text undid it (`icon@2x.pn` before its `g`). The
# StreamGuard now decides a finding only once 16 characters follow it (or the text ends): the list stays empty.
STREAM_PREFIX_BLOCKS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {}

CASES = [(g, p) for g in GUARDS for p in PATHS]
IDS = [f"{g}-{p.replace(' ', '-')}" for g, p in CASES]


# -- the assertions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("guard", "path"), CASES, ids=IDS)
def test_a_path_detects_at_least_as_many_positives_as_its_guards_detector(
    run: Run, guard: str, path: str
) -> None:
    case = GUARDS[guard]
    positives, _ = run[guard, path]
    missed = [
        t
        for (t, _), o in zip(case.positives, positives, strict=True)
        if not o.blocked and DETECTORS[guard].find(t)
    ]
    assert missed == []  # a plane that lost text would let through what the detector finds in it
    assert share(positives) >= case.rates(DETECTORS[guard], case.positives, case.negatives)["detection"]


@pytest.mark.parametrize(("guard", "path"), CASES, ids=IDS)
def test_a_path_blocks_no_benign_text_its_guards_detector_leaves_alone_but_the_known_stream_prefixes(
    run: Run, guard: str, path: str
) -> None:
    """Every path passes the text unchanged (the next test), so it meets exactly what the detector scored: no
    tolerance beyond the streams' listed prefix blocks (STREAM_PREFIX_BLOCKS), which stay listed only while
    they still happen."""
    case = GUARDS[guard]
    _, negatives = run[guard, path]
    extra = [
        t
        for t, o in zip(case.negatives, negatives, strict=True)
        if o.blocked and not DETECTORS[guard].find(t)
    ]
    known = [t for (g, t), (paths, _) in STREAM_PREFIX_BLOCKS.items() if g == guard and path in paths]
    assert sorted(extra) == sorted(known)
    base = case.rates(DETECTORS[guard], case.positives, case.negatives)["false_positive"]
    assert share(negatives) <= base + len(known) / len(case.negatives)


@pytest.mark.parametrize(("guard", "path"), CASES, ids=IDS)
def test_a_text_a_path_lets_through_comes_back_exactly_as_it_was_sent(
    run: Run, guard: str, path: str
) -> None:
    positives, negatives = run[guard, path]
    sent = texts(GUARDS[guard])
    changed = [t for t, o in zip(sent, positives + negatives, strict=True) if not o.blocked and o.text != t]
    assert changed == []


@pytest.mark.parametrize(("guard", "path"), CASES, ids=IDS)
def test_a_block_carries_the_code_of_the_one_guard_on_its_target(run: Run, guard: str, path: str) -> None:
    positives, negatives = run[guard, path]
    codes = {o.code for o in positives + negatives if o.blocked}
    # a withheld LLM answer is a content-filtered completion: the shape carries no code
    assert codes == ({None} if path in ("llm response", "llm stream") else {GUARDS[guard].code})
