"""What every HTTP request to /mcp passes before the protocol: API key, session ownership, origin checks, body
limits, and spec errors (never a 500) for malformed JSON-RPC, batches and unknown methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.mcp.support import (
    ACCEPT,
    INIT,
    UPSTREAM_TOKEN,
    Upstream,
    mcp_client,
    modern_request,
    registry,
    server_entry,
)
from tests.support import OTHER_KEY, TEST_KEY, audit_records, gateway, serve

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
MODERN = {**ACCEPT, **AUTH, "MCP-Protocol-Version": "2026-07-28"}


def sse_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or single-event SSE response."""
    import json

    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return dict(json.loads(next(d for d in data if d)))
    return dict(response.json())


async def test_requests_without_a_valid_key_get_401_with_a_bearer_challenge(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient() as http:
        missing = await http.post(f"{url}/mcp", json=INIT, headers=ACCEPT)
        wrong = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, "Authorization": "Bearer nope"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert missing.json()["error"]["code"] == -32010
    assert missing.json()["error"]["data"]["code"] == "missing_api_key"
    assert audit_records(tmp_path)[-1]["status"] == "denied"


async def test_a_session_is_usable_only_by_the_principal_that_opened_it(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient() as http:
        opened = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH})
        sid = opened.headers["mcp-session-id"]
        session = {**ACCEPT, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await http.post(f"{url}/mcp", json=ready, headers={**session, **AUTH})
        other = await http.post(
            f"{url}/mcp", json=listing, headers={**session, "Authorization": f"Bearer {OTHER_KEY}"}
        )
        own = await http.post(f"{url}/mcp", json=listing, headers={**session, **AUTH})
        delete = await http.delete(f"{url}/mcp", headers={**session, "Authorization": f"Bearer {OTHER_KEY}"})
        still = await http.post(f"{url}/mcp", json=listing, headers={**session, **AUTH})
    assert opened.status_code == 200
    assert other.status_code == 404
    assert own.status_code == 200 and sse_json(own)["result"]["tools"] == []
    assert delete.status_code == 404 and still.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, -32700),
        (b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]', 400, -32600),
        (b'"just a string"', 400, -32600),
    ],
)
@pytest.mark.parametrize("era", ["handshake", "modern"])
async def test_malformed_bodies_and_batches_get_json_rpc_errors(
    tmp_path: Path, body: bytes, status: int, code: int, era: str
) -> None:
    headers = MODERN if era == "modern" else {**ACCEPT, **AUTH}
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient() as http:
        response = await http.post(f"{url}/mcp", content=body, headers=headers)
    assert response.status_code == status
    assert response.json()["jsonrpc"] == "2.0" and response.json()["id"] is None
    assert response.json()["error"]["code"] == code


async def test_unknown_methods_get_method_not_found_in_both_eras(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient() as http:
        modern = await http.post(
            f"{url}/mcp", json=modern_request("nope/nope"), headers={**MODERN, "Mcp-Method": "nope/nope"}
        )
        opened = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH})
        session = {
            **ACCEPT,
            **AUTH,
            "Mcp-Session-Id": opened.headers["mcp-session-id"],
            "MCP-Protocol-Version": "2025-11-25",
        }
        await http.post(
            f"{url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
        )
        legacy = await http.post(
            f"{url}/mcp", json={"jsonrpc": "2.0", "id": 7, "method": "nope/nope"}, headers=session
        )
    assert modern.status_code == 404 and modern.json()["error"]["code"] == -32601
    assert legacy.status_code == 200 and sse_json(legacy)["error"]["code"] == -32601


async def test_foreign_origins_and_hosts_are_refused_before_anything_else(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient() as http:
        origin = await http.post(
            f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH, "Origin": "http://evil.example"}
        )
        host = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH, "Host": "evil.example:80"})
        local = await http.post(
            f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH, "Origin": "http://localhost:3000"}
        )
    assert origin.status_code == 403 and origin.json()["error"]["message"] == "Invalid Origin header."
    assert host.status_code == 421
    assert local.status_code == 200


async def test_bodies_over_the_limit_get_413_and_unknown_endpoints_404(tmp_path: Path) -> None:
    settings = {"limits": {"max_body_bytes": 2048}}
    async with gateway(tmp_path, registry(), settings) as (url, _), httpx.AsyncClient() as http:
        big = modern_request("tools/call", {"name": "x", "arguments": {"pad": "x" * 4096}})
        too_big = await http.post(f"{url}/mcp", json=big, headers=MODERN)
        unknown = await http.post(f"{url}/mcp/nope", json=INIT, headers={**ACCEPT, **AUTH})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == -32014
    assert unknown.status_code == 404 and unknown.json()["error"]["data"]["code"] == "unknown_endpoint"


@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
async def test_the_callers_key_never_reaches_the_upstream_but_its_task_does(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(
            f"{url}/mcp", mode=client_mode, headers={"x-agentgw-task": "task-42"}
        ) as client:
            result = await client.call_tool("docs__task_header", {})
    assert result.structured_content == {"result": "task-42"}
    assert docs.headers, "the upstream saw no request"
    for seen in docs.headers:
        assert seen.get("authorization") == f"Bearer {UPSTREAM_TOKEN}"
        assert TEST_KEY not in " ".join(seen.values())
    call = next(h for h in docs.headers if h.get("x-agentgw-task") == "task-42")
    assert call["traceparent"].startswith("00-")


async def test_every_response_names_its_task(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient() as http:
        chosen = await http.post(
            f"{url}/mcp",
            json=modern_request("tools/list"),
            headers={**MODERN, "Mcp-Method": "tools/list", "x-agentgw-task": "mine"},
        )
        meta = modern_request("tools/list")
        meta["params"]["_meta"]["io.agentgw/task"] = "from-meta"
        via_meta = await http.post(f"{url}/mcp", json=meta, headers={**MODERN, "Mcp-Method": "tools/list"})
        fresh = await http.post(
            f"{url}/mcp", json=modern_request("tools/list"), headers={**MODERN, "Mcp-Method": "tools/list"}
        )
    assert chosen.headers["x-agentgw-task"] == "mine"
    assert via_meta.headers["x-agentgw-task"] == "from-meta"
    assert fresh.headers["x-agentgw-task"].startswith("t-")
    tasks = [r["task_id"] for r in audit_records(tmp_path) if r["operation"] == "tools/list"]
    assert tasks[:2] == ["mine", "from-meta"]


async def test_a_handshake_session_is_one_task_unless_the_caller_names_one(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient() as http:
        opened = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH})
        session = {
            **ACCEPT,
            **AUTH,
            "Mcp-Session-Id": opened.headers["mcp-session-id"],
            "MCP-Protocol-Version": "2025-11-25",
        }
        await http.post(
            f"{url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
        )
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        first = await http.post(f"{url}/mcp", json=listing, headers=session)
        second = await http.post(f"{url}/mcp", json={**listing, "id": 3}, headers=session)
        named = await http.post(
            f"{url}/mcp", json={**listing, "id": 4}, headers={**session, "x-agentgw-task": "named"}
        )
    session_task = opened.headers["x-agentgw-task"]
    assert session_task.startswith("s-")
    assert first.headers["x-agentgw-task"] == second.headers["x-agentgw-task"] == session_task
    assert named.headers["x-agentgw-task"] == "named"
    tasks = [r["task_id"] for r in audit_records(tmp_path) if r["operation"] == "tools/list"]
    assert tasks == [session_task, session_task, "named"]


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        ("Host", "127.0.0.1.evil.example", 421),
        ("Host", "evil.example:127.0.0.1", 421),
        ("Host", "localhost:8080", 200),
        ("Host", "[::1]:8080", 200),
        ("Origin", "http://localhost.evil.example", 403),
        ("Origin", "http://evil.example:http://localhost", 403),
        ("Origin", "null", 403),
        ("Origin", "https://[::1]:8443", 200),
        ("Origin", "http://127.0.0.1", 200),
    ],
)
async def test_dns_rebinding_look_alikes_are_refused_and_loopback_names_pass(
    tmp_path: Path, header: str, value: str, status: int
) -> None:
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient() as http:
        answer = await http.post(f"{url}/mcp", json=INIT, headers={**ACCEPT, **AUTH, header: value})
    assert answer.status_code == status
