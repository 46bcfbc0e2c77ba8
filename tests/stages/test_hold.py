"""Policy effect `confirm` end to end: the gateway asks the calling user through MCP elicitation (handshake era)
and proceeds only on an explicit accept; a client that cannot be asked, and the LLM plane (no user channel), are
denied with a clear message."""

from __future__ import annotations

from pathlib import Path

import anyio
import mcp.types as types
import openai
import pytest
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

from tests.approvals.support import Hook, decide, hold_settings, with_llm
from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import TEST_KEY, audit_records, gateway, serve

PERMISSION_DENIED = -32011
CLIENT_MODES = ["legacy", "2026-07-28"]


class User:
    """The person behind the MCP client: answers each confirmation with `action`, remembering the question."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.asked: list[types.ElicitRequestParams] = []

    async def __call__(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.asked.append(params)
        return types.ElicitResult(action=self.action)  # type: ignore[arg-type]


@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_a_confirmed_call_goes_ahead_after_the_user_accepts_the_question(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs")
    user = User("accept")
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp", mode=client_mode, elicitation_callback=user) as client:
            result = await client.call_tool("docs__add", {"a": 2, "b": 3})
    assert result.structured_content == {"result": 5}
    [asked] = user.asked
    assert asked.message == "Allow docs__add with a=2, b=3?"
    calls = [r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/add"]
    if (
        client_mode == "2026-07-28"
    ):  # the question is the gateway's own input_required round; the retry answers
        first, call = calls
        assert [(d["stage"], d["outcome"]) for d in first["decisions"]][-1] == ("hold", "info")
        assert first["decisions"][-1]["detail"] == "confirmation asked (input_required round)"
    else:
        [call] = calls
    assert call["status"] == "ok"
    [hold] = [d for d in call["decisions"] if d["stage"] == "hold"]
    assert hold["outcome"] == "allow" and hold["detail"] == "confirmed by the user"
    assert hold["rule"] == "policy.csv:3: p, role:agents, mcp:docs/add, call, confirm"


@pytest.mark.parametrize("client_mode", CLIENT_MODES)
@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_a_declined_or_cancelled_confirmation_is_permission_denied(
    tmp_path: Path, action: str, client_mode: str
) -> None:
    docs = Upstream("docs")
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp", mode=client_mode, elicitation_callback=User(action)) as client:
            with pytest.raises(MCPError) as err:
                await client.call_tool("docs__add", {"a": 2, "b": 3})
    assert (err.value.code, err.value.data["code"]) == (PERMISSION_DENIED, "confirmation_declined")
    assert action in err.value.message
    call = [r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/add"][-1]
    assert call["status"] == "denied" and call["decisions"][-1]["outcome"] == "deny"


@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_a_client_without_the_elicitation_capability_is_denied_with_a_clear_message(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs")
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client:
            with pytest.raises(MCPError) as err:
                await client.call_tool("docs__add", {"a": 2, "b": 3})
    assert (err.value.code, err.value.data["code"]) == (PERMISSION_DENIED, "confirmation_unavailable")
    assert "did not declare the elicitation capability" in err.value.message


async def test_a_2026_07_28_answer_is_bound_to_the_caller_the_call_and_its_arguments(tmp_path: Path) -> None:
    docs = Upstream("docs")
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp", mode="2026-07-28", elicitation_callback=User("accept")) as client:
            session = client.session
            first = await session.call_tool("docs__add", {"a": 2, "b": 3}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult) and first.input_requests is not None
            [key] = first.input_requests
            yes = {key: {"action": "accept"}}
            # the answer to one call does not let other arguments through
            with pytest.raises(MCPError) as swapped:
                await session.call_tool(
                    "docs__add",
                    {"a": 2, "b": 30},
                    input_responses=yes,  # type: ignore[arg-type]
                    request_state=first.request_state,
                    allow_input_required=True,
                )
            done = await session.call_tool(
                "docs__add",
                {"a": 2, "b": 3},
                input_responses=yes,  # type: ignore[arg-type]
                request_state=first.request_state,
                allow_input_required=True,
            )
    assert key == "io.agentgw/confirm"
    assert (swapped.value.code, swapped.value.data["code"]) == (-32602, "invalid_request_state")
    assert isinstance(done, types.CallToolResult) and done.structured_content == {"result": 5}


class Person(User):
    """Confirms, and tells the upstream its name when asked."""

    async def __call__(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.asked.append(params)
        if params.message.startswith("Allow "):
            return types.ElicitResult(action="accept")
        return types.ElicitResult(action="accept", content={"name": "Ada"})


@pytest.mark.parametrize("upstream_era", ["handshake", "modern"])
async def test_a_confirmed_2026_07_28_call_whose_upstream_asks_questions_keeps_the_upstreams_rounds(
    tmp_path: Path, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    person = Person("accept")
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp", mode="2026-07-28", elicitation_callback=person) as client:
            result = await client.call_tool("docs__greet_user", {})
    assert result.content[0].text == "Hello, Ada!"  # type: ignore[union-attr]
    # Each retry is a call of its own through the pipeline: the confirmation is asked again on the retry that
    # answers the upstream (docs/mediation.md, Limits), and that retry's answers reach the upstream intact.
    assert [p.message for p in person.asked] == [
        "Allow docs__greet_user?",
        "What is your name?",
        "Allow docs__greet_user?",
    ]


async def test_an_llm_call_under_confirm_is_denied_because_the_llm_plane_cannot_ask_the_user(
    tmp_path: Path,
) -> None:
    settings = hold_settings(tmp_path)
    async with gateway(tmp_path, with_llm(registry()), settings) as (url, _):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as err:
            await client.chat.completions.create(
                model="mock-fast", messages=[{"role": "user", "content": "hi"}]
            )
        await client.close()
    assert err.value.status_code == 403
    assert err.value.code == "confirmation_unavailable"
    assert "only MCP clients with the elicitation capability" in err.value.message


async def test_an_llm_call_under_approve_waits_for_the_approver_too(tmp_path: Path) -> None:
    hook = Hook()
    out: dict[str, object] = {}
    async with serve(hook) as hook_url:
        settings = hold_settings(tmp_path, webhook={"url": f"{hook_url}/hook", "allow": ["127.0.0.1"]})
        async with gateway(tmp_path, with_llm(registry()), settings) as (url, _):
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TEST_KEY, max_retries=0)

            async def embed() -> None:
                out["result"] = await client.embeddings.create(model="mock-embed", input="hello")

            async with anyio.create_task_group() as tg:
                tg.start_soon(embed)
                with anyio.fail_after(10):
                    await hook.received.wait()  # the LLM plane has no progress channel: the webhook says when
                answer = await decide(url, hook.bodies[0]["approval"]["id"], "approve")
            await client.close()
    assert answer.status_code == 200
    assert out["result"].data  # type: ignore[attr-defined]
    assert hook.bodies[0]["approval"]["target"] == "llm:mock-embed"
