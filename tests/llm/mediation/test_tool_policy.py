"""The tool policy on its own: requests and complete answers no provider we test against sends (legacy function
calls, malformed tool_calls, allowed_tools choices), decided by the real policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agentgw.errors import GatewayError
from agentgw.exchange import Exchange, Principal
from agentgw.llm.mediation.tool_policy import ToolNotAllowed, ToolPolicy, parse_arguments
from agentgw.pipeline import Pipeline
from agentgw.policy import PolicyStore
from agentgw.registry import MCPSection, MCPServer
from agentgw.settings import LLMToolSettings
from agentgw.stages.authz import AuthzStage
from tests.support import POLICIES

POLICY = "p, role:agents, mcp:web/*, call, allow\n"


def policy(tmp: Path, mode: str = "filter", violation: str = "strip") -> tuple[ToolPolicy, Exchange]:
    (tmp / "policy.csv").write_text(POLICY)
    store = PolicyStore(POLICIES / "model.conf", tmp / "policy.csv")
    store.load()
    cfg = LLMToolSettings(
        tool_policy=mode,  # type: ignore[arg-type]
        tool_call_violation=violation,  # type: ignore[arg-type]
        tools={"search": "mcp:web/search", "delete": "mcp:fs/delete"},
    )
    web = MCPServer(name="web", url="http://127.0.0.1:9/mcp")  # type: ignore[arg-type]
    tools = ToolPolicy(cfg, MCPSection(servers=[web]), Pipeline([AuthzStage(store)]))
    ex = Exchange("llm", "chat", "llm:m", {})
    ex.principal = Principal("tester", ("agents",))
    return tools, ex


def fn(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def answer(message: dict[str, Any], finish: str = "tool_calls") -> dict[str, Any]:
    return {"id": "x", "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", {}),
        (None, {}),
        ('{"a": {"b": 1}}', {"a": {"b": 1}}),
        ('{"a": {"b": 1, "b": 2}}', None),  # a repeated key, nested too
        ("[]", None),
        ('"{}"', None),
        ({"a": 1}, None),  # arguments are a JSON text, never an object already
        ("{" * 5000 + "}" * 5000, None),
    ],
)
def test_arguments_are_one_json_object_without_repeated_keys(raw: Any, parsed: Any) -> None:
    assert parse_arguments(raw) == parsed


def test_a_request_keeps_only_the_allowed_tools_in_an_allowed_tools_choice(tmp_path: Path) -> None:
    tools, ex = policy(tmp_path)
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "auto", "tools": [fn("search"), fn("delete")]},
    }
    out = tools.filter_request(ex, {"tools": [fn("search"), fn("delete")], "tool_choice": choice})
    assert out is not None
    assert out["tools"] == [fn("search")]
    assert out["tool_choice"]["allowed_tools"]["tools"] == [fn("search")]


def test_a_request_with_required_tool_choice_and_no_allowed_tool_is_refused(tmp_path: Path) -> None:
    tools, ex = policy(tmp_path)
    with pytest.raises(ToolNotAllowed):
        tools.filter_request(ex, {"tools": [fn("delete")], "tool_choice": "required"})


def test_a_request_with_no_tool_left_loses_tool_choice_and_parallel_tool_calls(tmp_path: Path) -> None:
    tools, ex = policy(tmp_path)
    out = tools.filter_request(
        ex, {"model": "m", "tools": [fn("delete")], "tool_choice": "auto", "parallel_tool_calls": False}
    )
    assert out == {"model": "m"}


def test_a_registry_server_name_resolves_and_an_unknown_server_does_not(tmp_path: Path) -> None:
    tools, _ = policy(tmp_path)
    assert tools.target("web__fetch") == "mcp:web/fetch"
    assert tools.target("docs__fetch") is None
    assert tools.target("web__") is None


def test_the_legacy_functions_parameter_is_refused(tmp_path: Path) -> None:
    tools, ex = policy(tmp_path)
    with pytest.raises(GatewayError) as caught:
        tools.filter_request(ex, {"functions": [{"name": "search"}]})
    assert caught.value.code == "functions_not_supported"


def test_a_legacy_function_call_in_an_answer_is_checked_and_stripped(tmp_path: Path) -> None:
    tools, ex = policy(tmp_path)
    out = tools.check_answer(
        ex,
        answer(
            {"role": "assistant", "content": None, "function_call": {"name": "delete", "arguments": "{}"}}
        ),
    )
    assert out is not None
    choice = orjson.loads(out)["choices"][0]
    assert "function_call" not in choice["message"] and choice["finish_reason"] == "stop"


def test_tool_calls_that_are_not_an_array_are_removed(tmp_path: Path) -> None:
    tools, ex = policy(tmp_path)
    out = tools.check_answer(
        ex, answer({"role": "assistant", "tool_calls": {"function": {"name": "search"}}})
    )
    assert out is not None
    assert "tool_calls" not in orjson.loads(out)["choices"][0]["message"]


def test_a_custom_tool_call_without_a_function_is_denied(tmp_path: Path) -> None:
    tools, ex = policy(tmp_path, violation="refuse")
    call = {"id": "c", "type": "custom", "custom": {"name": "search", "input": "x"}}
    with pytest.raises(ToolNotAllowed):
        tools.check_answer(ex, answer({"role": "assistant", "tool_calls": [call]}))


def test_an_answer_whose_calls_are_all_allowed_is_sent_as_it_came(tmp_path: Path) -> None:
    tools, ex = policy(tmp_path)
    call = {"id": "c", "type": "function", "function": {"name": "web__search", "arguments": '{"q": 1}'}}
    assert tools.check_answer(ex, answer({"role": "assistant", "tool_calls": [call]})) is None
    assert [d.outcome for d in ex.decisions] == ["allow"]


def test_a_tool_call_under_an_approve_line_passes_and_the_record_says_where_it_is_held(
    tmp_path: Path,
) -> None:
    tools, ex = policy(tmp_path)
    (tmp_path / "policy.csv").write_text(POLICY + "p, role:agents, mcp:fs/delete, call, approve\n")
    assert tools.authz is not None and tools.authz.store.load()
    call = {"id": "c", "type": "function", "function": {"name": "delete", "arguments": "{}"}}
    assert tools.check_answer(ex, answer({"role": "assistant", "tool_calls": [call]})) is None
    assert ex.decisions[-1].outcome == "allow", ex.decisions
    assert ex.decisions[-1].detail == (
        "tool_call delete (mcp:fs/delete): passed [effect approve: held where the tool runs]"
    ), ex.decisions
