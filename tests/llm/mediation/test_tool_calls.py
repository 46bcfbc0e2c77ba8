"""Tool calls inside LLM traffic (`llm.tool_policy`): the real `openai` client through a real gateway to the mock
provider (told which calls to emit) and to an Anthropic-kind upstream, non-streaming and streaming."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from tests.anthropic_upstream import FakeAnthropic, message, text, tool_use
from tests.support import MOCK_REGISTRY, POLICIES, TEST_KEY, audit_records, gateway, serve

POLICY = """\
p, role:agents, llm:*, call, allow
p, role:agents, mcp:web/search, call, allow
p, role:agents, mcp:docs/*, call, allow
p, role:agents, mcp:docs/delete, call, deny
p, role:agents, mcp:web/fetch, call, allow, url(args.url).host in ["example.com"]
"""
TOOLS = {
    "search_web": "mcp:web/search",
    "get_weather": "mcp:weather/get",
    "delete_files": "mcp:fs/delete",
    "fetch_page": "mcp:web/fetch",
}
REGISTRY: dict[str, Any] = {
    **MOCK_REGISTRY,
    "mcp": {  # never reached: the LLM plane only reads its server names and renames
        "servers": [
            {
                "name": "docs",
                "transport": "streamable-http",
                "url": "http://127.0.0.1:9/mcp",
                "tools": {"rename": {"delete": "purge"}},
            }
        ]
    },
}


def tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }


def settings(tmp: Path, policy: str = "filter", violation: str = "strip") -> dict[str, Any]:
    (tmp / "policy.csv").write_text(POLICY)
    return {
        "policies": {"model": str(POLICIES / "model.conf"), "policy": str(tmp / "policy.csv")},
        "llm": {"tool_policy": policy, "tool_call_violation": violation, "tools": TOOLS},
    }


@contextlib.asynccontextmanager
async def client(
    tmp: Path, registry: dict[str, Any] | None = None, **llm: str
) -> AsyncIterator[openai.AsyncOpenAI]:
    with anyio.fail_after(30):
        async with gateway(tmp, registry or REGISTRY, settings(tmp, **llm)) as (url, _):
            async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0) as c:
                yield c


def tool_decisions(tmp: Path) -> list[dict[str, Any]]:
    return [d for d in audit_records(tmp)[-1]["decisions"] if d["stage"] == "tools"]


def say(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def collect(stream: Any) -> tuple[str, dict[int, dict[str, str]], str | None]:
    """Content, tool calls by index (id, name, arguments concatenated) and the finish reason of a stream."""
    content, calls, finish = "", {}, None
    async for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for tc in choice.delta.tool_calls or ():
                call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += tc.id or ""
                call["name"] += (tc.function.name or "") if tc.function else ""
                call["arguments"] += (tc.function.arguments or "") if tc.function else ""
            finish = choice.finish_reason or finish
    return content, calls, finish


# -- request side -------------------------------------------------------------------------------------------


async def test_filter_drops_the_declared_tools_the_caller_may_not_call_before_the_request_goes_upstream(
    tmp_path: Path,
) -> None:
    async with client(tmp_path) as c:
        # The mock calls the first tool it is offered: get_weather, unless the gateway dropped it.
        answer = await c.chat.completions.create(
            model="mock-fast", messages=say("Paris"), tools=[tool("get_weather"), tool("search_web")]
        )
    calls = answer.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ["search_web"]
    decisions = tool_decisions(tmp_path)
    assert {
        "stage": "tools",
        "outcome": "deny",
        "rule": "default deny",
        "detail": "request tool get_weather (mcp:weather/get): dropped",
    } in decisions
    assert {
        "stage": "tools",
        "outcome": "allow",
        "rule": "policy.csv:2: p, role:agents, mcp:web/search, call, allow",
        "detail": "request tool search_web (mcp:web/search): passed",
    } in decisions


async def test_filter_answers_403_when_tool_choice_forces_a_dropped_tool(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await c.chat.completions.create(
                model="mock-fast",
                messages=say("Paris"),
                tools=[tool("get_weather"), tool("search_web")],
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
            )
    assert caught.value.code == "tool_not_allowed"
    assert "get_weather" in caught.value.message
    assert audit_records(tmp_path)[-1]["status"] == "denied"


async def test_filter_with_no_tool_left_sends_the_request_without_tools(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        answer = await c.chat.completions.create(
            model="mock-fast", messages=say("Paris"), tools=[tool("get_weather")], tool_choice="auto"
        )
    assert answer.choices[0].message.content == "Paris"  # no tool offered: the mock echoes
    assert answer.choices[0].finish_reason == "stop"


async def test_refuse_answers_403_tool_not_allowed_naming_the_tool(tmp_path: Path) -> None:
    async with client(tmp_path, policy="refuse") as c:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await c.chat.completions.create(
                model="mock-fast", messages=say("Paris"), tools=[tool("search_web"), tool("delete_files")]
            )
        ok = await c.chat.completions.create(
            model="mock-fast", messages=say("hi"), tools=[tool("search_web")]
        )
    assert caught.value.code == "tool_not_allowed"
    assert "'delete_files'" in caught.value.message
    assert ok.choices[0].message.tool_calls is not None
    record = audit_records(tmp_path)[-2]
    assert record["status"] == "denied" and record["error_code"] == "tool_not_allowed"


async def test_an_unknown_tool_name_is_denied_and_a_registry_server_name_resolves_with_its_renames(
    tmp_path: Path,
) -> None:
    async with client(tmp_path) as c:
        answer = await c.chat.completions.create(
            model="mock-fast",
            messages=say("x"),
            tools=[tool("my_helper"), tool("docs__purge"), tool("nosuch__thing"), tool("docs__search")],
        )
    calls = answer.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ["docs__search"]
    details = {d["detail"]: d["rule"] for d in tool_decisions(tmp_path)}
    assert details["request tool my_helper (unknown): dropped"].startswith("unknown tool")
    assert details["request tool nosuch__thing (unknown): dropped"].startswith("unknown tool")
    assert details["request tool docs__purge (mcp:docs/delete): dropped"] == (
        "policy.csv:4: p, role:agents, mcp:docs/delete, call, deny"
    )
    assert details["request tool docs__search (mcp:docs/search): passed"] == (
        "policy.csv:3: p, role:agents, mcp:docs/*, call, allow"
    )


async def test_the_deprecated_functions_parameter_is_refused_while_the_policy_is_on(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.chat.completions.create(
                model="mock-fast",
                messages=say("x"),
                functions=[{"name": "delete_files", "parameters": {"type": "object"}}],
            )
    assert caught.value.code == "functions_not_supported"


async def test_with_the_policy_off_tools_and_tool_calls_pass_untouched_and_nothing_is_decided(
    tmp_path: Path,
) -> None:
    async with client(tmp_path, policy="off") as c:
        answer = await c.chat.completions.create(
            model="mock-fast", messages=say('call delete_files {"q": "/"}'), tools=[tool("get_weather")]
        )
    calls = answer.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ["delete_files"]
    assert tool_decisions(tmp_path) == []


# -- answers, non-streaming ---------------------------------------------------------------------------------


async def test_a_disallowed_tool_call_is_stripped_and_the_message_says_so(tmp_path: Path) -> None:
    script = 'call search_web {"q": "agentgw"}\ncall delete_files {"q": "/"}'
    async with client(tmp_path) as c:
        answer = await c.chat.completions.create(model="mock-fast", messages=say(script))
    choice = answer.choices[0]
    assert [(t.function.name, t.function.arguments) for t in choice.message.tool_calls or []] == [
        ("search_web", '{"q": "agentgw"}')
    ]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is not None and "'delete_files' was removed" in choice.message.content
    details = [d["detail"] for d in tool_decisions(tmp_path)]
    assert details == [
        "tool_call search_web (mcp:web/search): passed",
        "tool_call delete_files (mcp:fs/delete): stripped",
    ]


async def test_when_every_tool_call_is_stripped_the_finish_reason_is_stop(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        answer = await c.chat.completions.create(
            model="mock-fast", messages=say('call get_weather {"q": "x"}')
        )
    choice = answer.choices[0]
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert (
        choice.message.content == "[agentgw] The tool call 'get_weather' was removed: not allowed by policy."
    )


async def test_under_refuse_a_disallowed_tool_call_replaces_the_answer_with_a_403(tmp_path: Path) -> None:
    async with client(tmp_path, violation="refuse") as c:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await c.chat.completions.create(
                model="mock-fast", messages=say('call search_web {}\ncall delete_files {"q": "/"}')
            )
    assert caught.value.code == "tool_not_allowed"
    assert "'delete_files'" in caught.value.message
    record = audit_records(tmp_path)[-1]
    assert record["status"] == "denied"
    assert record["usage"]["output_tokens"] > 0  # the answer was produced: it is charged
    assert [d["detail"] for d in tool_decisions(tmp_path)][-1] == (
        "tool_call delete_files (mcp:fs/delete): answer refused"
    )


@pytest.mark.parametrize(
    "arguments",
    [
        '{"q": "a", "q": "b"}',  # a repeated key: parsers disagree on which value wins
        '{"q": ',  # cut short
        '["q"]',  # not an object
        "null",
    ],
)
async def test_allowed_tool_calls_whose_arguments_are_not_one_json_object_are_stripped(
    tmp_path: Path, arguments: str
) -> None:
    async with client(tmp_path) as c:
        answer = await c.chat.completions.create(
            model="mock-fast", messages=say(f"call search_web {arguments}")
        )
    assert answer.choices[0].message.tool_calls is None
    assert tool_decisions(tmp_path)[-1]["rule"] == "arguments are not one JSON object"


async def test_an_allowed_tool_call_passes_byte_identical(tmp_path: Path) -> None:
    created = re.compile(rb'"created":\d+')
    bodies = []
    for policy in ("off", "filter"):
        (tmp_path / policy).mkdir()
        async with gateway(tmp_path / policy, REGISTRY, settings(tmp_path / policy, policy=policy)) as (
            url,
            _,
        ):
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TEST_KEY}"}) as http:
                body = {
                    "model": "mock-fast",
                    "messages": say('call search_web {"q": "x"}'),
                    "tools": [tool("search_web")],
                }
                plain = await http.post(f"{url}/v1/chat/completions", json=body)
                streamed = await http.post(f"{url}/v1/chat/completions", json={**body, "stream": True})
        bodies.append((created.sub(b"", plain.content), created.sub(b"", streamed.content)))
    assert bodies[0] == bodies[1]
    assert b"search_web" in bodies[1][1]


# -- answers, streaming -------------------------------------------------------------------------------------


async def test_a_streamed_disallowed_tool_call_is_stripped_and_the_next_one_moves_up(tmp_path: Path) -> None:
    script = 'call delete_files {"q": "/etc"}\ncall search_web {"q": "agentgw docs"}'
    async with client(tmp_path) as c:
        stream = await c.chat.completions.create(model="mock-fast", messages=say(script), stream=True)
        content, calls, finish = await collect(stream)
    assert list(calls) == [0]
    assert calls[0]["name"] == "search_web"
    assert json.loads(calls[0]["arguments"]) == {"q": "agentgw docs"}
    assert "'delete_files' was removed" in content
    assert finish == "tool_calls"
    assert [d["detail"] for d in tool_decisions(tmp_path)] == [
        "tool_call delete_files (mcp:fs/delete): stripped",
        "tool_call search_web (mcp:web/search): passed",
    ]


async def test_a_stream_whose_only_tool_call_is_stripped_finishes_with_stop(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        stream = await c.chat.completions.create(
            model="mock-fast",
            messages=say('call get_weather {"q": "Lyon"}'),
            stream=True,
            stream_options={"include_usage": True},
        )
        content, calls, finish = await collect(stream)
    assert calls == {}
    assert finish == "stop"
    assert content == "[agentgw] The tool call 'get_weather' was removed: not allowed by policy."
    assert audit_records(tmp_path)[-1]["status"] == "ok"


async def test_under_refuse_a_streamed_disallowed_tool_call_ends_the_stream_with_an_error(
    tmp_path: Path,
) -> None:
    async with client(tmp_path, violation="refuse") as c:
        stream = await c.chat.completions.create(
            model="mock-fast",
            messages=say('call search_web {"q": "a"}\ncall delete_files {"q": "/"}'),
            stream=True,
        )
        seen: list[Any] = []

        async def drain() -> None:
            async for chunk in stream:
                seen.append(chunk)

        with pytest.raises(openai.APIError) as caught:
            await drain()
    assert "'delete_files'" in caught.value.message
    # The allowed call before it was complete, and released, before the refused one was decided.
    names = [
        tc.function.name for ch in seen for c in ch.choices for tc in c.delta.tool_calls or () if tc.function
    ]
    assert "search_web" in names and "delete_files" not in names
    record = audit_records(tmp_path)[-1]
    assert record["status"] == "denied"
    assert record["error_code"] == "tool_not_allowed"
    assert record["stream_cut"] == "tool_not_allowed"


# -- argument rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True])
async def test_an_argument_rule_decides_a_tool_call_in_an_answer(tmp_path: Path, streaming: bool) -> None:
    script = (
        'call fetch_page {"url": "https://example.com/docs"}\n'
        'call fetch_page {"url": "https://user@evil.example.net/"}\n'
        'call fetch_page {"url": 5}'
    )
    async with client(tmp_path) as c:
        if streaming:
            stream = await c.chat.completions.create(
                model="mock-fast", messages=say(script), tools=[tool("fetch_page")], stream=True
            )
            content, calls, finish = await collect(stream)
            kept = [call["arguments"] for call in calls.values()]
        else:
            answer = await c.chat.completions.create(
                model="mock-fast", messages=say(script), tools=[tool("fetch_page")]
            )
            content = answer.choices[0].message.content or ""
            kept = [t.function.arguments for t in answer.choices[0].message.tool_calls or []]
            finish = answer.choices[0].finish_reason
    assert kept == ['{"url": "https://example.com/docs"}']
    assert finish == "tool_calls"
    assert "'fetch_page', 'fetch_page' were removed" in content
    decisions = tool_decisions(tmp_path)
    line = 'policy.csv:5: p, role:agents, mcp:web/fetch, call, allow, url(args.url).host in ["example.com"]'
    # The declared tool is listed (some arguments allow it), so it goes upstream.
    assert decisions[0]["rule"] == line and decisions[0]["detail"].endswith(": passed")
    assert [(d["outcome"], d["rule"]) for d in decisions[1:]] == [
        ("allow", line),
        ("deny", "default deny (condition not met: policy.csv line 5)"),
        ("deny", "default deny (condition not met: policy.csv line 5)"),
    ]
    assert "line 5:" in decisions[-1]["detail"]  # the wrong type failed the condition: closed, and recorded


# -- Anthropic upstream (tool_use blocks) -------------------------------------------------------------------


def claude_registry(url: str) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [{"name": "claude", "kind": "anthropic", "base_url": url, "api_key": "sk-ant-x"}],
            "models": [
                {"name": "claude-fast", "targets": [{"provider": "claude", "model": "claude-sonnet-4-5"}]}
            ],
        }
    }


TWO_CALLS = message(
    text("Let me look."),
    tool_use("toolu_1", "delete_files", {"q": "/"}),
    tool_use("toolu_2", "search_web", {"q": "weather in Lyon"}),
    stop_reason="tool_use",
)


@pytest.mark.parametrize("streaming", [False, True])
async def test_anthropic_tool_use_blocks_are_filtered_and_checked_like_openai_tool_calls(
    tmp_path: Path, streaming: bool
) -> None:
    fake = FakeAnthropic(replies=[TWO_CALLS])
    async with serve(fake.app()) as up, client(tmp_path, claude_registry(up)) as c:
        tools = [tool("get_weather"), tool("search_web"), tool("delete_files")]
        if streaming:
            stream = await c.chat.completions.create(
                model="claude-fast", messages=say("go"), tools=tools, stream=True
            )
            content, calls, finish = await collect(stream)
        else:
            answer = await c.chat.completions.create(model="claude-fast", messages=say("go"), tools=tools)
            msg = answer.choices[0].message
            content, finish = msg.content or "", answer.choices[0].finish_reason
            calls = {
                i: {"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
                for i, t in enumerate(msg.tool_calls or [])
            }
    assert [t["name"] for t in fake.requests[-1]["body"]["tools"]] == ["search_web"]
    assert list(calls) == [0]
    assert calls[0]["id"] == "toolu_2" and calls[0]["name"] == "search_web"
    assert json.loads(calls[0]["arguments"]) == {"q": "weather in Lyon"}
    assert content.startswith("Let me look.") and "'delete_files' was removed" in content
    assert finish == "tool_calls"
    details = [d["detail"] for d in tool_decisions(tmp_path)]
    assert "tool_call delete_files (mcp:fs/delete): stripped" in details
    assert "tool_call search_web (mcp:web/search): passed" in details
