"""What every HTTP request to /mcp passes before the protocol: API key, session ownership, origin checks, body
limits, and spec errors (never a 500) for malformed JSON-RPC, batches and unknown methods."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
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
from tests.support import OTHER_KEY, TEST_KEY, audit_records, gateway, serve, sha

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
MODERN = {**ACCEPT, **AUTH, "MCP-Protocol-Version": "2026-07-28"}


def sse_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or single-event SSE response."""
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


STDIO_SERVER = Path(__file__).parent / "stdio_server.py"
SECOND_AGENT = "agw-second-agent-0123456789"


def deep_call(depth: int, rid: int = 1) -> bytes:
    """A tools/call whose argument `pad` nests `depth` arrays (as bytes: json.dumps cannot go that deep)."""
    call = modern_request("tools/call", {"name": "local__zone", "arguments": {"pad": "PAD"}}, rid)
    return json.dumps(call).encode().replace(b'"PAD"', b"[" * depth + b"]" * depth)


@pytest.mark.parametrize("depth", [65, 300, 2000])
async def test_a_body_nested_deeper_than_the_limit_gets_32600_and_is_recorded(
    tmp_path: Path, depth: int
) -> None:
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient() as http:
        body = (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"x":'
            + b"[" * depth
            + b"]" * depth
            + b"}}"
        )
        deep = await http.post(f"{url}/mcp", content=body, headers=MODERN)
    assert deep.status_code == 400
    assert deep.json()["error"]["code"] == -32600
    assert deep.json()["error"]["data"] == {"code": "json_too_deep", "status": 400}
    (record,) = audit_records(tmp_path)
    assert record["principal"] == "tester" and record["error_code"] == "json_too_deep"


@pytest.mark.parametrize("max_depth", [None, 128])
async def test_one_callers_deeply_nested_call_leaves_the_stdio_server_others_share_working(
    tmp_path: Path, max_depth: int | None
) -> None:
    entry = {
        "name": "local",
        "transport": "stdio",
        "command": [sys.executable, str(STDIO_SERVER)],
        "timeout_s": 30,
    }
    keys = [
        {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
        {"subject": "second", "roles": ["agents"], "sha256": sha(SECOND_AGENT)},
    ]
    settings: dict[str, Any] = {"auth": {"api_keys": keys}}
    if max_depth is not None:
        settings["limits"] = {"max_json_depth": max_depth}
    calling = {**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "local__zone"}
    second = {**calling, "Authorization": f"Bearer {SECOND_AGENT}"}
    async with (
        gateway(tmp_path, registry(entry), settings) as (url, gw),
        httpx.AsyncClient(timeout=30) as http,
    ):
        with anyio.fail_after(60):
            attacks = [
                await http.post(f"{url}/mcp", content=deep_call(depth, i), headers=calling)
                for i, depth in enumerate((124, 125, 300, 2000))  # 124: 128 with the envelope's own levels
            ]
            others = [
                await http.post(
                    f"{url}/mcp",
                    json=modern_request("tools/call", {"name": "local__zone"}, i),
                    headers=second,
                )
                for i in range(20)
            ]
        status = gw.mcp.status()["local"]
    assert all(a.status_code in (200, 400) for a in attacks)
    assert [sse_json(o).get("error") for o in others] == [None] * 20
    assert status["restarts"] == 0 and status["state"] == "ready"


@pytest.mark.parametrize("writer", ["process", "inline"])
async def test_a_call_whose_record_cannot_be_serialised_is_recorded_as_incomplete(
    tmp_path: Path, writer: str
) -> None:
    """The stdio server answers a number orjson cannot write (2**70): the caller gets it, and the call's record
    says it is incomplete instead of being skipped (whichever writer builds it)."""
    entry = {
        "name": "local",
        "transport": "stdio",
        "command": [sys.executable, str(STDIO_SERVER)],
        "timeout_s": 30,
    }
    settings = {"audit": {"writer": writer}}
    async with gateway(tmp_path, registry(entry), settings) as (url, _), mcp_client(f"{url}/mcp") as client:
        answer = await client.call_tool("local__big", {})
    assert answer.structured_content == {"result": 2**70}
    (record,) = [r for r in audit_records(tmp_path) if r["operation"] == "tools/call"]
    assert (
        record["principal"] == "tester" and record["status"] == "ok" and record["target"] == "mcp:local/big"
    )
    assert record["incomplete"].startswith("the full record could not be built")


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_an_integer_beyond_64_bits_in_a_result_is_relayed_intact_and_recorded(
    tmp_path: Path, mode: str
) -> None:
    """JSON allows any integer; orjson writes at most 64 bits. The gateway relays the upstream's 2**70 as it is
    (in both eras, on the direct path and the SDK's), never a 500."""
    entry = {
        "name": "local",
        "transport": "stdio",
        "command": [sys.executable, str(STDIO_SERVER)],
        "timeout_s": 30,
    }
    async with (
        gateway(tmp_path, registry(entry)) as (url, _),
        mcp_client(f"{url}/mcp", mode=mode) as client,
    ):
        answer = await client.call_tool("local__big", {})
        again = await client.call_tool("local__big", {})
    assert answer.structured_content == again.structured_content == {"result": 2**70}
    assert not answer.is_error
    records = [r for r in audit_records(tmp_path) if r["operation"] == "tools/call"]
    assert [(r["status"], r["target"], r["principal"]) for r in records] == [
        ("ok", "mcp:local/big", "tester")
    ] * 2


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_integers_beyond_64_bits_cross_an_http_upstream_both_ways_intact(
    tmp_path: Path, mode: str
) -> None:
    """The caller's 2**70 reaches the upstream as an integer (not a float), and its sum comes back as one."""
    docs = Upstream("docs")
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up))) as (url, _),
        mcp_client(f"{url}/mcp", mode=mode) as client,
    ):
        answer = await client.call_tool("docs__add", {"a": 2**70, "b": 1})
    assert not answer.is_error, answer
    assert answer.structured_content == {"result": 2**70 + 1}
    (record,) = [r for r in audit_records(tmp_path) if r["operation"] == "tools/call"]
    assert record["status"] == "ok" and record["target"] == "mcp:docs/add"


async def test_an_authenticated_callers_malformed_requests_are_each_recorded(tmp_path: Path) -> None:
    """Refused before the protocol (not JSON, a batch, an unknown endpoint, too large), yet each is on the record
    with its caller and error code: no request finishes without a trace."""
    docs = Upstream("docs")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with httpx.AsyncClient() as http:
            broken = await http.post(f"{url}/mcp", content=b"{not json", headers=MODERN)
            batch = await http.post(f"{url}/mcp", json=[modern_request("tools/list", {})], headers=MODERN)
            lost = await http.post(f"{url}/mcp/nope", json=modern_request("tools/list", {}), headers=MODERN)
            scalar = await http.post(f"{url}/mcp", json=3, headers=MODERN)
    assert [r.status_code for r in (broken, batch, lost, scalar)] == [400, 400, 404, 400]
    records = audit_records(tmp_path)
    assert [(r["principal"], r["plane"], r["error_code"]) for r in records] == [
        ("tester", "mcp", "invalid_json"),
        ("tester", "mcp", "batch"),
        ("tester", "mcp", "unknown_endpoint"),
        ("tester", "mcp", "invalid"),
    ]
