"""The front door, ahead of every plane: Host/Origin (DNS rebinding), JSON nesting depth, and what anonymous callers
can make the audit store hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentgw import create_app, load_settings
from agentgw.frontdoor import json_depth
from tests.support import MOCK_REGISTRY, TEST_KEY, audit_records, audit_rows, gateway, sha, write_config

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
DEMO_KEY = "agw-demo-key-0123456789"
MCP_JSON = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def chat(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}], **(extra or {})}


def nested_body(depth: int) -> bytes:
    """A chat request whose `metadata` nests `depth` levels below the request object."""
    return (
        b'{"model":"mock-fast","messages":[{"role":"user","content":"hi"}],"metadata":'
        + (b"[" * depth + b"]" * depth)
        + b"}"
    )


# -- Host and Origin ---------------------------------------------------------------------------------------------


async def test_a_foreign_host_is_refused_with_421_on_every_plane_in_its_own_envelope(tmp_path: Path) -> None:
    rebound = {**AUTH, "Host": "attacker.example"}
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _), httpx.AsyncClient(base_url=url) as c:
        llm = await c.post("/v1/chat/completions", json=chat(), headers=rebound)
        models = await c.get("/v1/models", headers=rebound)
        mcp = await c.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={**MCP_JSON, **rebound}
        )
        admin = await c.get("/admin/policy", headers=rebound)
        ready = await c.get("/readyz", headers=rebound)
        health = await c.get("/healthz", headers=rebound)
        fine = await c.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert [r.status_code for r in (llm, models, mcp, admin, ready)] == [421] * 5
    assert llm.json()["error"]["code"] == "misdirected_request"
    assert llm.json()["error"]["type"] == "invalid_request_error"
    assert mcp.json()["jsonrpc"] == "2.0" and mcp.json()["error"]["code"] == -32600
    assert mcp.json()["error"]["data"] == {"code": "misdirected_request", "status": 421}
    assert health.status_code == 200 and fine.status_code == 200


async def test_a_foreign_origin_is_refused_with_403_on_the_llm_plane_too(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _), httpx.AsyncClient(base_url=url) as c:
        evil = await c.post(
            "/v1/chat/completions", json=chat(), headers={**AUTH, "Origin": "http://evil.example"}
        )
        local = await c.post(
            "/v1/chat/completions", json=chat(), headers={**AUTH, "Origin": "http://localhost:3000"}
        )
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "origin_refused"
    assert local.status_code == 200


async def test_the_loopback_only_demo_key_needs_a_loopback_host_not_just_a_loopback_peer(
    tmp_path: Path,
) -> None:
    settings = {
        "auth": {
            "api_keys": [
                {"subject": "demo", "roles": ["agents"], "sha256": sha(DEMO_KEY), "loopback_only": True}
            ]
        },
        "server": {"allowed_hosts": ["gw.example"]},
    }
    demo = {"Authorization": f"Bearer {DEMO_KEY}"}
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient(base_url=url) as c:
        named = await c.post("/v1/chat/completions", json=chat(), headers={**demo, "Host": "gw.example"})
        local = await c.post("/v1/chat/completions", json=chat(), headers=demo)
    assert named.status_code == 401 and named.json()["error"]["code"] == "invalid_api_key"
    assert local.status_code == 200


@pytest.mark.parametrize(
    ("allowed", "host", "status"),
    [
        ([], "anything.example", 200),
        (["gw.example"], "gw.example:443", 200),
        (["gw.example"], "evil.example", 421),
    ],
)
async def test_allowed_hosts_when_configured_bind_every_peer(
    tmp_path: Path, allowed: list[str], host: str, status: int
) -> None:
    app = create_app(
        load_settings(write_config(tmp_path, MOCK_REGISTRY, {"server": {"allowed_hosts": allowed}}))
    )
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 5555))  # a peer on the network
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as c:
        answer = await c.get("/v1/models", headers=AUTH)
    assert answer.status_code == status


# -- JSON depth --------------------------------------------------------------------------------------------------


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    assert json_depth(b'{"a":[{"b":"[[[[{{{{"}],"c":"\\"[["}') == 3
    assert json_depth(b"[]") == 1 and json_depth(b'"x"') == 0


@pytest.mark.parametrize("depth", [65, 300, 2000])
async def test_a_body_nested_deeper_than_the_limit_gets_400_on_v1_and_is_recorded(
    tmp_path: Path, depth: int
) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _), httpx.AsyncClient(base_url=url) as c:
        deep = await c.post(
            "/v1/chat/completions",
            content=nested_body(depth),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        shallow = await c.post(
            "/v1/chat/completions",
            content=nested_body(60),
            headers={**AUTH, "Content-Type": "application/json"},
        )
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "json_too_deep"
    assert shallow.status_code == 200
    codes = [(r["principal"], r["error_code"]) for r in audit_records(tmp_path)]
    assert codes == [("tester", "json_too_deep"), ("tester", None)]


# -- what anonymous callers can store ---------------------------------------------------------------------------


async def test_anonymous_refusals_are_one_record_per_source_with_a_count_and_no_payload(
    tmp_path: Path,
) -> None:
    marker = "PAYLOAD-MARKER-" + "x" * 60_000
    anonymous = chat({"user": marker})
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _), httpx.AsyncClient(base_url=url) as c:
        sem = anyio.Semaphore(8)

        async def one() -> None:
            async with sem:
                answer = await c.post("/v1/chat/completions", json=anonymous)
                assert answer.status_code == 401

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(one)
        wrong = await c.post("/v1/chat/completions", json=anonymous, headers={"Authorization": "Bearer nope"})
        mcp = [
            await c.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": marker}, headers=MCP_JSON)
            for _ in range(3)
        ]
        fine = await c.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert wrong.status_code == 401 and fine.status_code == 200
    assert [m.status_code for m in mcp] == [401] * 3
    records = audit_records(tmp_path)
    refused = {r["plane"]: r for r in records if r.get("refused")}
    assert len(records) == 3 and refused.keys() == {"llm", "mcp"}
    assert refused["mcp"]["refused"]["count"] == 3
    tally = refused["llm"]
    assert tally["refused"]["count"] == 201
    assert tally["refused"]["codes"] == {"missing_api_key": 200, "invalid_api_key": 1}
    assert tally["client"] == "127.0.0.1" and tally["principal"] is None and tally["status"] == "denied"
    stored = b"".join(r.data for r in audit_rows(tmp_path / "audit.db"))
    assert b"PAYLOAD-MARKER" not in stored and len(stored) < 10_000


async def test_host_and_origin_refusals_are_tallied_per_source_and_plane_without_payload(
    tmp_path: Path,
) -> None:
    rebound = {**AUTH, "Host": "attacker.example"}
    marker = "PAYLOAD-MARKER-" + "x" * 1000
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _), httpx.AsyncClient(base_url=url) as c:
        llm = [
            await c.post("/v1/chat/completions", json=chat({"user": marker}), headers=rebound)
            for _ in range(3)
        ]
        origin = await c.post(
            "/v1/chat/completions", json=chat(), headers={**AUTH, "Origin": "http://evil.example"}
        )
        mcp = await c.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": marker}, headers={**MCP_JSON, **rebound}
        )
        admin = await c.get("/admin/policy", headers=rebound)
    assert [r.status_code for r in (*llm, origin, mcp, admin)] == [421, 421, 421, 403, 421, 421]
    records = audit_records(tmp_path)
    refused = {r["plane"]: r for r in records if r.get("refused")}
    assert len(records) == 3 and refused.keys() == {"llm", "mcp", "http"}
    assert refused["llm"]["refused"]["count"] == 4
    assert refused["llm"]["refused"]["codes"] == {"misdirected_request": 3, "origin_refused": 1}
    assert refused["mcp"]["refused"]["codes"] == {"misdirected_request": 1}
    assert refused["http"]["refused"]["codes"] == {"misdirected_request": 1}
    for tally in refused.values():
        assert tally["client"] == "127.0.0.1" and tally["principal"] is None and tally["status"] == "denied"
    stored = b"".join(r.data for r in audit_rows(tmp_path / "audit.db"))
    assert b"PAYLOAD-MARKER" not in stored
