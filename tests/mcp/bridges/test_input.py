"""Upstream servers that ask the caller for input (elicitation, sampling, roots) through agentgw, in every pairing
of eras: handshake-era server-to-client requests and 2026-07-28 InputRequiredResult rounds are bridged both ways,
and the gateway's own requestState binds each round to its caller and call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

from agentgw.mcp.bridges.state import Binding, Opened, RefusedState, StateSeal
from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import TEST_KEY, audit_records, gateway, serve, sha

CLIENT_MODES = ["legacy", "2026-07-28"]
ERAS = ["handshake", "modern"]
SECOND_KEY = "agw-second-key-0123456789"


class Asked:
    """The caller's side: answers every question and remembers what it was asked."""

    def __init__(self) -> None:
        self.questions: list[str] = []

    async def elicit(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        self.questions.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def sample(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        self.questions.append("sampling")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="hi!"), model="test-llm"
        )

    async def roots(self, context: ClientRequestContext) -> types.ListRootsResult:
        self.questions.append("roots")
        return types.ListRootsResult(roots=[types.Root(uri="file:///work", name="work")])

    def options(self) -> dict[str, Any]:
        return {
            "elicitation_callback": self.elicit,
            "sampling_callback": self.sample,
            "list_roots_callback": self.roots,
        }


@pytest.mark.parametrize("upstream_era", ERAS)
@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_an_upstream_that_asks_for_the_users_name_gets_the_callers_answer_in_every_pairing_of_eras(
    tmp_path: Path, client_mode: str, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    asked = Asked()
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode=client_mode, **asked.options()) as client:
            result = await client.call_tool("docs__greet_user", {})
    assert result.is_error is False
    assert result.content[0].text == "Hello, Ada!"  # type: ignore[union-attr]
    assert asked.questions == ["What is your name?"]
    records = [r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/greet_user"]
    # A 2026-07-28 caller answers in a second round (a retry); a handshake caller is asked within its one call.
    assert len(records) == (2 if client_mode == "2026-07-28" else 1)
    assert all(r["status"] == "ok" for r in records)


@pytest.mark.parametrize(
    ("tool", "question", "answer"),
    [
        ("sample_hi", "sampling", "LLM said: hi!"),
        ("client_roots", "roots", "file:///work"),
    ],
)
@pytest.mark.parametrize(("client_mode", "upstream_era"), [("legacy", "modern"), ("2026-07-28", "handshake")])
async def test_sampling_and_roots_requests_are_bridged_between_eras_in_both_directions(
    tmp_path: Path, client_mode: str, upstream_era: str, tool: str, question: str, answer: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    asked = Asked()
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode=client_mode, **asked.options()) as client:
            result = await client.call_tool(f"docs__{tool}", {})
    assert result.content[0].text == answer  # type: ignore[union-attr]
    assert asked.questions == [question]


async def test_a_modern_caller_gets_the_upstreams_question_with_a_state_sealed_by_the_gateway(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    asked = Asked()
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode="2026-07-28", **asked.options()) as client:
            first = await client.session.call_tool("docs__greet_user", {}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult)
            assert first.input_requests is not None and first.request_state
            (key,) = first.input_requests
            answer = {key: {"action": "accept", "content": {"name": "Grace"}}}
            done = await client.session.call_tool(
                "docs__greet_user",
                {},
                input_responses=answer,  # type: ignore[arg-type]
                request_state=first.request_state,
                allow_input_required=True,
            )
    assert isinstance(done, types.CallToolResult)
    assert done.content[0].text == "Hello, Grace!"  # type: ignore[union-attr]


@pytest.mark.parametrize("upstream_era", ERAS)
async def test_a_tampered_or_misdirected_request_state_is_refused_with_invalid_params(
    tmp_path: Path, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    asked = Asked()
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode="2026-07-28", **asked.options()) as client:
            first = await client.session.call_tool("docs__greet_user", {}, allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult) and first.request_state
            errors = []
            for tool, state in (
                ("docs__greet_user", first.request_state + "x"),  # tampered
                ("docs__sample_hi", first.request_state),  # minted for another tool
            ):
                with pytest.raises(MCPError) as err:
                    await client.session.call_tool(
                        tool, {}, input_responses={}, request_state=state, allow_input_required=True
                    )
                errors.append(err.value)
    assert [(e.code, e.data["code"]) for e in errors] == [(-32602, "invalid_request_state")] * 2


async def test_another_principal_cannot_continue_a_callers_round(tmp_path: Path) -> None:
    docs = Upstream("docs")
    asked = Asked()
    keys = {
        "api_keys": [
            {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
            {"subject": "second", "roles": ["agents"], "sha256": sha(SECOND_KEY)},
        ]
    }
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), {"auth": keys}) as (url, _),
    ):
        async with mcp_client(f"{url}/mcp", mode="2026-07-28", **asked.options()) as client:
            first = await client.session.call_tool("docs__greet_user", {}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult) and first.input_requests
        (key,) = first.input_requests
        answer = {key: {"action": "accept", "content": {"name": "Mallory"}}}
        async with mcp_client(f"{url}/mcp", mode="2026-07-28", key=SECOND_KEY) as thief:
            with pytest.raises(MCPError) as err:
                await thief.session.call_tool(
                    "docs__greet_user",
                    {},
                    input_responses=answer,  # type: ignore[arg-type]
                    request_state=first.request_state,
                    allow_input_required=True,
                )
    assert err.value.code == -32602 and err.value.data["code"] == "invalid_request_state"


async def test_a_modern_caller_that_declared_no_elicitation_is_not_asked(tmp_path: Path) -> None:
    docs = Upstream("docs")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode="2026-07-28") as client:
            with pytest.raises(MCPError) as err:
                await client.call_tool("docs__greet_user", {})
    assert err.value.code == -32021  # the upstream's MissingRequiredClientCapability, relayed


async def test_closing_a_modern_callers_stream_cancels_the_held_upstream_call(tmp_path: Path) -> None:
    docs = Upstream("docs", handshake_only=True)
    asked = Asked()
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode="2026-07-28", **asked.options()) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "docs__block", {})
                with anyio.fail_after(10):
                    await docs.tool_started.wait()
                tg.cancel_scope.cancel()
            with anyio.fail_after(10):
                await docs.tool_cancelled.wait()


def test_the_gateways_request_state_opens_only_for_its_binding_and_within_its_ttl() -> None:
    bind = Binding("p1", "/mcp", "docs", "tools/call", "greet_user")
    seal = StateSeal(b"k" * 32)
    token = seal.seal(bind, upstream="theirs", round=3)
    assert seal.open(token, bind) == Opened("theirs", None, 3)
    for other in (
        Binding("p2", "/mcp", "docs", "tools/call", "greet_user"),  # another principal
        Binding("p1", "/mcp/ro", "docs", "tools/call", "greet_user"),  # another endpoint
        Binding("p1", "/mcp", "docs", "prompts/get", "greet_user"),  # another method
    ):
        with pytest.raises(RefusedState):
            seal.open(token, other)
    with pytest.raises(RefusedState):
        StateSeal(b"x" * 32).open(token, bind)  # another gateway's secret
    with pytest.raises(RefusedState):
        StateSeal(b"k" * 32, ttl=0).open(StateSeal(b"k" * 32, ttl=0).seal(bind), bind)  # expired at once
