"""What `llm.tool_policy` costs the LLM plane, in process (no network): the request filter, the check of a complete
answer, and the stream meter with and without the tool-call guard, per request / per chunk; then (`--gateway`) the
whole gateway app, `off` against `filter`, over ASGI with the mock provider, in alternating rounds. Not a test:
`python bench/llm_tools.py [--gateway]` (seconds). With `tool_policy: off` none of this runs (nothing is built)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from report import per_call_us  # noqa: E402

import agentgw.llm.plane  # noqa: E402, F401  (the plane first: its modules import each other)
from agentgw.exchange import Exchange, Principal  # noqa: E402
from agentgw.llm.mediation.tool_policy import ToolPolicy  # noqa: E402
from agentgw.llm.mediation.tool_stream import ToolCallGuard  # noqa: E402
from agentgw.llm.sse import ChatStreamMeter  # noqa: E402
from agentgw.pipeline import Pipeline  # noqa: E402
from agentgw.policy import PolicyStore  # noqa: E402
from agentgw.registry import MCPSection  # noqa: E402
from agentgw.settings import LLMToolSettings  # noqa: E402
from agentgw.stages.authz import AuthzStage  # noqa: E402

POLICY = """\
p, role:agents, llm:*, call, allow
p, role:agents, mcp:web/*, call, allow
p, role:agents, mcp:docs/*, call, allow
p, role:agents, mcp:fs/delete, call, deny
"""
NAMES = ["search_web", "fetch_page", "read_doc", "get_weather", "delete_files"]
MAPPING = {
    "search_web": "mcp:web/search",
    "fetch_page": "mcp:web/fetch",
    "read_doc": "mcp:docs/read",
    "get_weather": "mcp:weather/get",
    "delete_files": "mcp:fs/delete",
}
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
    for n in NAMES
]


def policy(folder: Path) -> ToolPolicy:
    (folder / "policy.csv").write_text(POLICY)
    store = PolicyStore(ROOT / "policies" / "model.conf", folder / "policy.csv")
    store.load()
    cfg = LLMToolSettings(tool_policy="filter", tools=MAPPING)
    return ToolPolicy(cfg, MCPSection(), Pipeline([AuthzStage(store)]))


def exchange() -> Exchange:
    ex = Exchange("llm", "chat", "llm:m", {})
    ex.principal = Principal("bench", ("agents",))
    return ex


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def text_stream(n: int) -> list[bytes]:
    return (
        [chunk({"role": "assistant", "content": ""})]
        + [chunk({"content": " word"}) for _ in range(n)]
        + [
            chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ]
    )


def tool_stream(name: str, pieces: int) -> list[bytes]:
    opening = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}
    args = [{"index": 0, "function": {"arguments": p}} for p in ['{"q": "', *(["ab"] * pieces), '"}']]
    return [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [opening]}),
        *(chunk({"tool_calls": [a]}) for a in args),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]


def run_stream(frames: list[bytes], tools: ToolPolicy | None) -> None:
    ex = exchange()
    meter = ChatStreamMeter(ex, {"model": "m"}, False, ToolCallGuard(tools, ex) if tools else None)
    for f in frames:
        meter.feed(f)


async def gateway_ab(rounds: int, n: int) -> dict[str, float]:
    """µs per request through the whole app (authn, authz, the plane, the mock provider; audit off), for plain and
    streamed chats without tools, `off` and `filter` alternating; medians over the rounds after the first."""
    import httpx
    from harness import API_KEY, write_gateway_config

    from agentgw import create_app, load_settings

    registry = {
        "llm": {
            "providers": [{"name": "mock", "kind": "mock"}],
            "models": [{"name": "bench", "targets": [{"provider": "mock", "model": "bench"}]}],
        }
    }
    clients = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("off", "filter"):
            folder = Path(tmp) / mode
            folder.mkdir()
            extra: dict[str, Any] = {"audit": {"enabled": False}}
            if mode != "off":
                extra["llm"] = {"tool_policy": mode, "tools": MAPPING}
            app = create_app(load_settings(write_gateway_config(folder, 0, {"llm.yaml": registry}, **extra)))
            transport = httpx.ASGITransport(app=app)
            auth = {"Authorization": f"Bearer {API_KEY}"}
            clients[mode] = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=auth)
        body = {"model": "bench", "messages": [{"role": "user", "content": "one two three four five six"}]}
        times: dict[str, list[float]] = {}
        for _ in range(rounds):
            for mode, c in clients.items():
                for kind in ("plain", "stream"):
                    t0 = time.perf_counter()
                    for _ in range(n):
                        r = await c.post("/v1/chat/completions", json={**body, "stream": kind == "stream"})
                        assert r.status_code == 200, r.text
                    key = f"gateway, {kind} chat without tools, tool_policy {mode} (µs per request)"
                    times.setdefault(key, []).append((time.perf_counter() - t0) / n * 1e6)
        for c in clients.values():
            await c.aclose()
    return {k: statistics.median(v[1:] or v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="calls per timing round")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument(
        "--gateway", action="store_true", help="also the whole app, off against filter (~1 minute)"
    )
    ap.add_argument("--rounds", type=int, default=6, help="--gateway: alternating rounds")
    o = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tools = policy(Path(tmp))
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    plain = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    def answer(names: list[str]) -> dict[str, Any]:
        calls = [
            {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": '{"q": "x"}'}}
            for i, n in enumerate(names)
        ]
        message: dict[str, Any] = {"role": "assistant", "content": None if calls else "Hello there."}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        }

    no_calls, allowed, one_bad = (
        answer([]),
        answer(["search_web", "read_doc"]),
        answer(["search_web", "delete_files"]),
    )
    texts, calls = text_stream(200), tool_stream("search_web", 40)
    res: dict[str, float] = {
        "request: no tools declared (µs)": per_call_us(lambda: tools.filter_request(exchange(), plain), o.n),
        "request: 5 tools declared, 2 dropped (µs)": per_call_us(
            lambda: tools.filter_request(exchange(), payload), o.n
        ),
        "answer: no tool calls (µs)": per_call_us(lambda: tools.check_answer(exchange(), no_calls), o.n),
        "answer: 2 allowed tool calls, body untouched (µs)": per_call_us(
            lambda: tools.check_answer(exchange(), allowed), o.n
        ),
        "answer: 1 of 2 tool calls stripped, body rewritten (µs)": per_call_us(
            lambda: tools.check_answer(exchange(), one_bad), o.n
        ),
    }
    off = per_call_us(lambda: run_stream(texts, None), o.n // 20)
    on = per_call_us(lambda: run_stream(texts, tools), o.n // 20)
    res["stream of 200 text chunks: meter alone, per chunk (µs)"] = off / len(texts)
    res["stream of 200 text chunks: meter + guard, per chunk (µs)"] = on / len(texts)
    off = per_call_us(lambda: run_stream(calls, None), o.n // 10)
    on = per_call_us(lambda: run_stream(calls, tools), o.n // 10)
    res[f"stream of one tool call in {len(calls)} chunks: meter alone, whole stream (µs)"] = off
    res[f"stream of one tool call in {len(calls)} chunks: meter + guard, whole stream (µs)"] = on
    if o.gateway:
        import asyncio

        res.update(asyncio.run(gateway_ab(o.rounds, max(50, o.n // 8))))
    width = max(len(k) for k in res)
    for key, value in res.items():
        print(f"{key:<{width}}  {value:8.2f}")
    if o.json:
        Path(o.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
