"""The stream guard on its own: chunk streams no provider we test against sends (interleaved calls, several
choices, a missing index, a stream without [DONE]) fed through the real policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agentgw.errors import GatewayError
from agentgw.exchange import Exchange, Principal
from agentgw.llm.mediation.tool_policy import ToolNotAllowed, ToolPolicy
from agentgw.llm.mediation.tool_stream import ToolCallGuard
from agentgw.pipeline import Pipeline
from agentgw.policy import PolicyStore
from agentgw.registry import MCPSection
from agentgw.settings import LLMToolSettings
from agentgw.stages.authz import AuthzStage
from tests.support import POLICIES

POLICY = "p, role:agents, mcp:web/*, call, allow\n"


def guard(tmp: Path, violation: str = "strip") -> tuple[ToolCallGuard, Exchange]:
    (tmp / "policy.csv").write_text(POLICY)
    store = PolicyStore(POLICIES / "model.conf", tmp / "policy.csv")
    store.load()
    cfg = LLMToolSettings(
        tool_policy="filter",
        tool_call_violation=violation,  # type: ignore[arg-type]
        tools={"search": "mcp:web/search", "delete": "mcp:fs/delete"},
    )
    policy = ToolPolicy(cfg, MCPSection(), Pipeline([AuthzStage(store)]))
    ex = Exchange("llm", "chat", "llm:m", {})
    ex.principal = Principal("tester", ("agents",))
    return ToolCallGuard(policy, ex), ex


def chunk(*choices: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    obj = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": list(choices),
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n", obj


def call(i: int, name: str | None = None, args: str = "", c: int = 0) -> dict[str, Any]:
    fn: dict[str, Any] = {"arguments": args}
    entry: dict[str, Any] = {"index": i, "function": fn}
    if name is not None:
        fn["name"] = name
        entry["id"] = f"call_{name}"
    return {"index": c, "delta": {"tool_calls": [entry]}, "finish_reason": None}


def finish(c: int = 0, reason: str = "tool_calls") -> dict[str, Any]:
    return {"index": c, "delta": {}, "finish_reason": reason}


def run(g: ToolCallGuard, *frames: tuple[bytes, dict[str, Any]], done: bool = True) -> list[dict[str, Any]]:
    """Feed the frames; the chunks that came out, parsed."""
    out = b""
    for frame, obj in frames:
        out += g.feed(frame, obj) or b""
    if done:
        out += g.finish() or b""
    return [orjson.loads(part[6:]) for part in out.split(b"\n\n") if part]


def calls_of(chunks: list[dict[str, Any]], c: int = 0) -> dict[int, str]:
    """name + arguments per index, as a client would assemble them for choice `c`."""
    got: dict[int, str] = {}
    for ch in chunks:
        for choice in ch["choices"]:
            if choice["index"] != c:
                continue
            for tc in choice["delta"].get("tool_calls", ()):
                fn = tc["function"]
                got[tc["index"]] = got.get(tc["index"], "") + fn.get("name", "") + fn["arguments"]
    return got


def test_a_call_is_held_until_the_next_index_starts_and_then_released_as_it_came(tmp_path: Path) -> None:
    g, _ = guard(tmp_path)
    first = chunk(call(0, "search", '{"q":'))
    assert g.feed(*first) is None
    assert g.feed(*chunk(call(0, None, ' "x"}'))) is None
    released = g.feed(*chunk(call(1, "search", "")))
    assert released is not None and released.startswith(first[0])


def test_calls_of_several_choices_are_decided_per_choice(tmp_path: Path) -> None:
    g, _ = guard(tmp_path)
    chunks = run(
        g,
        chunk(call(0, "delete", "{}", c=0), call(0, "search", "{}", c=1)),
        chunk(finish(0), finish(1)),
    )
    assert calls_of(chunks, 0) == {}
    assert calls_of(chunks, 1) == {0: "search{}"}
    finishes = {
        ch["index"]: ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]
    }
    assert finishes == {0: "stop", 1: "tool_calls"}


def test_a_delta_for_a_call_already_decided_ends_the_stream(tmp_path: Path) -> None:
    g, _ = guard(tmp_path)
    run(g, chunk(call(0, "search", "{}")), chunk(call(1, "search", "{}")), done=False)
    with pytest.raises(GatewayError) as caught:
        g.feed(*chunk(call(0, None, ', "more": 1}')))
    assert caught.value.code == "upstream_invalid_response"


@pytest.mark.parametrize("index", [None, -1, "0", True])
def test_a_tool_call_delta_without_a_valid_index_ends_the_stream(tmp_path: Path, index: Any) -> None:
    g, _ = guard(tmp_path)
    bad = {"index": 0, "delta": {"tool_calls": [{"index": index, "function": {"name": "search"}}]}}
    with pytest.raises(GatewayError):
        g.feed(*chunk(bad))


def test_tool_calls_that_are_not_an_array_end_the_stream(tmp_path: Path) -> None:
    g, _ = guard(tmp_path)
    bad = {"index": 0, "delta": {"tool_calls": {"index": 0, "function": {"name": "delete"}}}}
    with pytest.raises(GatewayError):
        g.feed(*chunk(bad))


def test_a_stream_that_ends_mid_call_releases_nothing_of_a_call_that_does_not_parse(tmp_path: Path) -> None:
    g, ex = guard(tmp_path)
    chunks = run(g, chunk(call(0, "search", '{"q": "unfinish')))
    assert calls_of(chunks) == {}
    assert ex.decisions[-1].rule == "arguments are not one JSON object"


def test_content_after_a_held_call_keeps_its_place_behind_it(tmp_path: Path) -> None:
    g, _ = guard(tmp_path)
    text = {"index": 0, "delta": {"content": "after"}, "finish_reason": None}
    chunks = run(g, chunk(call(0, "search", "{}")), chunk(text), chunk(finish()))
    kinds = ["tool" if c["choices"][0]["delta"].get("tool_calls") else "other" for c in chunks]
    assert kinds[0] == "tool" and chunks[1]["choices"][0]["delta"] == {"content": "after"}


def test_the_legacy_function_call_delta_is_checked_like_a_tool_call(tmp_path: Path) -> None:
    g, ex = guard(tmp_path)
    legacy = {
        "index": 0,
        "delta": {"function_call": {"name": "delete", "arguments": "{}"}},
        "finish_reason": None,
    }
    chunks = run(g, chunk(legacy), chunk(finish(0, "function_call")))
    assert all("function_call" not in ch["delta"] for c in chunks for ch in c["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert ex.decisions[-1].detail == "tool_call delete (mcp:fs/delete): stripped"


def test_under_refuse_the_first_disallowed_call_raises_tool_not_allowed(tmp_path: Path) -> None:
    g, ex = guard(tmp_path, "refuse")
    with pytest.raises(ToolNotAllowed):
        run(g, chunk(call(0, "search", "{}")), chunk(call(1, "delete", "{}")), chunk(finish()))
    assert [d.outcome for d in ex.decisions] == ["allow", "deny"]
