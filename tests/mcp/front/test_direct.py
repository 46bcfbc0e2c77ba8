"""The direct path answers a plain `tools/call` exactly as the SDK server would, in both eras: the same result, the
same error code and HTTP status; a call that asks for progress still goes the SDK's way (a stream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_types import HEADER_MISMATCH

from tests.mcp.support import ACCEPT, INIT, Upstream, mcp_client, modern_request, registry, server_entry
from tests.support import TEST_KEY, gateway, serve

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
MODERN = {
    **ACCEPT,
    **AUTH,
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "x-agentgw-task": "t1",
}


def _message(response: httpx.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [
            line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]
        message: dict[str, Any] = json.loads(data[-1])
        return message
    body: dict[str, Any] = response.json()
    return body


async def _handshake(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    opened = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH})
    session = {**ACCEPT, **AUTH, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
    session["MCP-Protocol-Version"] = "2025-11-25"
    await http.post(
        f"{url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
    )
    return session


def _stripped(message: dict[str, Any]) -> dict[str, Any]:
    """The answer without what differs per request by design: the id."""
    return {k: v for k, v in message.items() if k != "id"}


@pytest.mark.parametrize("upstream_era", ["modern", "handshake"])
@pytest.mark.parametrize("tool", ["docs__echo", "docs__nope"])
async def test_a_handshake_session_call_is_answered_the_same_with_and_without_the_sdk_server(
    tmp_path: Path, upstream_era: str, tool: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with httpx.AsyncClient(timeout=10) as http:
            session = await _handshake(http, url)
            params: dict[str, Any] = {"name": tool, "arguments": {"text": "same"}}
            plain = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}
            with_progress = {**plain, "id": 3, "params": {**params, "_meta": {"progressToken": "p"}}}
            direct = await http.post(f"{url}/mcp", json=plain, headers=session)
            sdk = await http.post(f"{url}/mcp", json=with_progress, headers=session)
    assert direct.headers["content-type"].startswith("application/json")
    assert sdk.headers["content-type"].startswith("text/event-stream")
    assert direct.status_code == sdk.status_code == 200
    assert direct.headers["mcp-session-id"] == session["Mcp-Session-Id"]
    assert _stripped(_message(direct)) == _stripped(_message(sdk))


@pytest.mark.parametrize("upstream_era", ["modern", "handshake"])
@pytest.mark.parametrize(("tool", "status"), [("docs__echo", 200), ("docs__nope", 400)])
async def test_a_stateless_call_is_answered_the_same_with_and_without_the_sdk_server(
    tmp_path: Path, upstream_era: str, tool: str, status: int
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with httpx.AsyncClient(timeout=10) as http:
            plain = modern_request("tools/call", {"name": tool, "arguments": {"text": "same"}}, rid=2)
            with_progress = json.loads(json.dumps(plain))
            with_progress["params"]["_meta"]["progressToken"] = "p"
            headers = {**MODERN, "Mcp-Name": tool}
            direct = await http.post(f"{url}/mcp", json=plain, headers=headers)
            sdk = await http.post(f"{url}/mcp", json=with_progress, headers=headers)
    assert direct.headers["content-type"].startswith("application/json")
    assert direct.status_code == sdk.status_code == status
    assert _stripped(_message(direct)) == _stripped(_message(sdk))


async def test_a_stateless_call_whose_headers_disagree_with_its_body_is_refused_like_the_sdk_refuses_it(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with httpx.AsyncClient(timeout=10) as http:
            call = modern_request("tools/call", {"name": "docs__echo", "arguments": {"text": "x"}})
            answer = await http.post(f"{url}/mcp", json=call, headers={**MODERN, "Mcp-Name": "docs__add"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == HEADER_MISMATCH
    assert not any(h.get("mcp-method") == "tools/call" for h in docs.headers)  # never forwarded


@pytest.mark.parametrize("upstream_era", ["modern", "handshake"])
async def test_a_large_tool_result_streamed_by_the_upstream_arrives_whole(
    tmp_path: Path, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")  # SDK servers answer with SSE
    text = "0123456789abcdef" * 40_000  # 640 kB in one SSE data line
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp") as client:
            result = await client.call_tool("docs__echo", {"text": text})
    assert result.content[0].text == text  # type: ignore[union-attr]


async def test_a_routing_header_sent_twice_is_refused_like_the_sdk_refuses_it(tmp_path: Path) -> None:
    docs = Upstream("docs")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with httpx.AsyncClient(timeout=10) as http:
            call = modern_request("tools/call", {"name": "docs__echo", "arguments": {"text": "x"}})
            headers = [*MODERN.items(), ("Mcp-Name", "docs__echo"), ("Mcp-Name", "docs__echo")]
            answer = await http.post(f"{url}/mcp", json=call, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == HEADER_MISMATCH
    assert not any(h.get("mcp-method") == "tools/call" for h in docs.headers)
