"""Argument rules end to end, through a real gateway on loopback: a conditional line decides an MCP tools/call by
its arguments (real `mcp` SDK client and server, both eras), an LLM request by its body fields (the real `openai`
client) and an A2A message by its metadata (JSON-RPC and HTTP+JSON). The tool stays listed; a refused call gets
the plane's permission error naming the policy line, and the audit record's decision names it too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from mcp.shared.exceptions import MCPError
from openai.types.chat import ChatCompletionMessageParam

from agentgw.a2a.errors import PERMISSION_DENIED as A2A_PERMISSION_DENIED
from agentgw.mcp.errors import PERMISSION_DENIED as MCP_PERMISSION_DENIED
from tests.a2a.agents import run_agent
from tests.a2a.plane import rpc, run_plane
from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import MOCK_REGISTRY, POLICIES, TEST_KEY, audit_records, gateway, serve, sha

MCP_POLICY = """\
p, role:agents, mcp:*, *, allow
p, role:agents, mcp:docs/echo, call, deny, args.text.matches("(?i)secret")
p, role:agents, mcp:docs/add, call, deny, !(args.a <= 10)
"""


def policy_settings(tmp_path: Path, text: str) -> dict[str, Any]:
    folder = tmp_path / "pol"
    folder.mkdir()
    (folder / "policy.csv").write_text(text)
    return {"policies": {"model": str(POLICIES / "model.conf"), "policy": str(folder / "policy.csv")}}


def authz_decision(records: list[dict[str, Any]], target: str, status: str) -> dict[str, Any]:
    record = next(r for r in records if r["target"] == target and r["status"] == status)
    return next(d for d in record["decisions"] if d["stage"] == "authz")


@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
async def test_an_mcp_call_whose_arguments_fail_a_rule_is_refused_naming_the_line(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs")
    entry = server_entry("docs", "")
    async with serve(docs) as up:
        entry["url"] = f"{up}/mcp"
        async with gateway(tmp_path, registry(entry), policy_settings(tmp_path, MCP_POLICY)) as (url, _):
            async with mcp_client(f"{url}/mcp", mode=client_mode) as agent:
                with anyio.fail_after(30):
                    tools = [t.name for t in (await agent.list_tools()).tools]
                    echoed = await agent.call_tool("docs__echo", {"text": "hello"})
                    added = await agent.call_tool("docs__add", {"a": 2, "b": 3})
                    with pytest.raises(MCPError) as secret:
                        await agent.call_tool("docs__echo", {"text": "my SeCrEt plan"})
                    with pytest.raises(MCPError) as big:
                        await agent.call_tool("docs__add", {"a": 11, "b": 1})
                    with pytest.raises(MCPError) as confused:
                        await agent.call_tool(
                            "docs__add", {"a": "1", "b": 1}
                        )  # a string where a number belongs
    assert "docs__echo" in tools and "docs__add" in tools  # listed: callable with some arguments
    assert echoed.is_error is not True and added.structured_content == {"result": 5}
    assert secret.value.code == MCP_PERMISSION_DENIED and secret.value.data["code"] == "permission_denied"
    assert "policy.csv line 2" in secret.value.message
    assert big.value.code == MCP_PERMISSION_DENIED and "policy.csv line 3" in big.value.message
    assert confused.value.code == MCP_PERMISSION_DENIED and "policy.csv line 3" in confused.value.message
    records = audit_records(tmp_path)
    echo = authz_decision(records, "mcp:docs/echo", "denied")
    assert echo["outcome"] == "deny" and echo["rule"].startswith(
        "policy.csv:2: p, role:agents, mcp:docs/echo"
    )
    add = [r for r in records if r["target"] == "mcp:docs/add" and r["status"] == "denied"]
    assert len(add) == 2
    assert all(
        next(d for d in r["decisions"] if d["stage"] == "authz")["rule"].startswith("policy.csv:3:")
        for r in add
    )


INTERN_KEY = "agw-intern-key-0123456789"


def intern_settings(tmp_path: Path) -> dict[str, Any]:
    shipped = (POLICIES / "policy.csv").read_text()
    example = next(line[2:] for line in shipped.splitlines() if line.startswith("# p, role:interns, llm:*"))
    settings = policy_settings(tmp_path, shipped + example + "\n")
    keys = [
        {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
        {"subject": "ivy", "roles": ["interns"], "sha256": sha(INTERN_KEY)},
    ]
    return {**settings, "auth": {"api_keys": keys}}


async def test_an_interns_llm_call_over_1000_max_tokens_is_refused_by_the_openai_client(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, intern_settings(tmp_path)) as (url, _):
        ivy = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=INTERN_KEY, max_retries=0)
        tester = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0)
        hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
        with anyio.fail_after(30):
            ok = await ivy.chat.completions.create(model="mock-fast", messages=hi, max_tokens=1000)
            with pytest.raises(openai.PermissionDeniedError) as refused:
                await ivy.chat.completions.create(model="mock-fast", messages=hi, max_tokens=1001)
            with pytest.raises(openai.PermissionDeniedError):
                await ivy.chat.completions.create(model="mock-fast", messages=hi)
            agent = await tester.chat.completions.create(model="mock-fast", messages=hi, max_tokens=5000)
            listed = [m.id async for m in ivy.models.list()]
        await ivy.close()
        await tester.close()
    assert ok.choices[0].message.content and agent.choices[0].message.content
    assert "mock-fast" in listed
    line = 1 + (POLICIES / "policy.csv").read_text().count(
        "\n"
    )  # the example, appended after the shipped file
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "permission_denied"
    assert f"policy.csv line {line}" in refused.value.message
    decision = authz_decision(audit_records(tmp_path), "llm:mock-fast", "denied")
    assert decision["rule"].startswith(f"policy.csv:{line}: p, role:interns, llm:*, call, deny")


A2A_POLICY = """\
p, role:agents, a2a:*, *, allow
p, role:agents, a2a:echo, call, deny, "classification" in args && args.classification != "public"
"""


def a2a_message(text: str, mid: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"messageId": mid, "role": "ROLE_USER", "parts": [{"text": text}]}
    if metadata is not None:
        out["metadata"] = metadata
    return out


async def test_an_a2a_message_is_decided_by_its_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "pol"
    folder.mkdir()
    (folder / "policy.csv").write_text(A2A_POLICY)
    settings = {"policies": {"model": str(POLICIES / "model.conf"), "policy": str(folder / "policy.csv")}}
    answers = []
    async with run_agent("echo") as echo, run_plane(tmp_path, echo, settings=settings) as plane:
        with anyio.fail_after(30):
            for i, meta in enumerate([None, {"classification": "public"}, {"classification": "secret"}]):
                body = rpc("SendMessage", {"message": a2a_message("hi", f"m{i}", meta)})
                r = await plane.http.post("/a2a/echo", json=body, headers=plane.headers())
                answers.append(r.json())
            rest = await plane.http.post(  # the HTTP+JSON binding: the same rule, its own error envelope
                "/a2a/echo/rest/message:send",
                json={"message": a2a_message("hi", "m9", {"classification": "internal"})},
                headers=plane.headers(),
            )
    assert "result" in answers[0] and "result" in answers[1]
    error = answers[2]["error"]
    assert "policy.csv line 2" in error["message"]
    assert error["code"] == A2A_PERMISSION_DENIED
    assert rest.status_code == 403 and rest.json()["error"]["status"] == "PERMISSION_DENIED"
    assert "policy.csv line 2" in rest.json()["error"]["message"]
    denied = [r for r in audit_records(tmp_path) if r["target"] == "a2a:echo" and r["status"] == "denied"]
    assert len(denied) == 2
    for record in denied:
        decision = next(d for d in record["decisions"] if d["stage"] == "authz")
        assert decision["rule"].startswith("policy.csv:2:")
