"""Upstream MCP servers that answer in unusual or broken ways: SSE replies that open with a priming event,
servers without completions in the 2026-07-28 era, and HTTP 200s that carry no JSON-RPC at all."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import mcp.types as types
import orjson
import pytest
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import audit_records, gateway, serve


@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
async def test_a_streamable_http_server_that_primes_its_streams_is_listed_and_called(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs", handshake_only=True, event_store=True)
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, gw):
        with anyio.fail_after(10):
            await gw.mcp.upstreams.by_name["docs"].wait_connected()
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            added = await client.call_tool("docs__add", {"a": 2, "b": 3})
            steps: list[float] = []

            async def progress(value: float, total: float | None, message: str | None) -> None:
                steps.append(value)

            counted = await client.call_tool("docs__count", {"n": 3}, progress_callback=progress)
    assert "docs__add" in names
    assert added.structured_content == {"result": 5}
    assert counted.structured_content == {"result": 3} and steps == [1, 2, 3]
    # the upstream really primed: its event store holds a priming event (no message) for each stream
    assert any(m is None for _, _, m in docs.store.events)
    records = [r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/add"]
    assert records and records[0]["status"] == "ok"


class Garbling:
    """An MCP server that answers a request carrying the text "break" (a `tools/call`, or `completion/complete`
    with `method`) with HTTP 200 and `body` (`{id}` replaced by the request's id)."""

    def __init__(
        self,
        inner: Upstream,
        content_type: bytes,
        body: bytes,
        method: bytes = b"tools/call",
        trigger: bytes = b'"break',
    ) -> None:
        self.inner, self.content_type, self.body, self.method = inner, content_type, body, method
        self.trigger = trigger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.inner(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        if self.trigger in raw and self.method in raw:
            rid = orjson.dumps(orjson.loads(raw)["id"])
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", self.content_type)],
            }
            await send(start)
            await send({"type": "http.response.body", "body": self.body.replace(b"{id}", rid)})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.inner(scope, replay, send)


GARBAGE = {
    "html": (b"text/html", b"<html>502 Bad Gateway</html>"),
    "bad json": (b"application/json", b'{"jsonrpc": "2.0", "id": '),
    "json answering nothing": (
        b"application/json",
        b'{"jsonrpc": "2.0", "id": "someone-else", "result": {}}',
    ),
    "stream of garbage": (b"text/event-stream", b"id: 1\ndata:\n\ndata: <html>oops</html>\n\n"),
}


@pytest.mark.parametrize("era", ["handshake", "modern"])
@pytest.mark.parametrize("case", list(GARBAGE))
async def test_an_mcp_server_answering_200_with_garbage_is_a_502_error_on_the_record(
    tmp_path: Path, case: str, era: str
) -> None:
    content_type, body = GARBAGE[case]
    docs = Upstream("docs", handshake_only=era == "handshake")
    settings = {"budgets": {"rules": [{"match": {"roles": ["agents"]}, "task": {"tool_calls": 5}}]}}
    async with serve(Garbling(docs, content_type, body)) as up:
        async with gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, gw):
            async with mcp_client(f"{url}/mcp", headers={"x-agentgw-task": "job"}) as client:
                with pytest.raises(MCPError) as err:
                    await client.call_tool("docs__echo", {"text": "break"})
                fine = await client.call_tool("docs__echo", {"text": "fine"})
            assert gw.ledger is not None
            state = await gw.ledger.state("tester/job")
    assert err.value.code == -32013
    assert err.value.data["code"] == "upstream_invalid_response"
    assert fine.structured_content == {"result": "fine"}
    assert state is not None and state.spent.get("tool_calls") == 1 and not any(state.reserved.values())
    failed = [r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/echo"]
    assert [r["status"] for r in failed] == ["error", "ok"]
    assert failed[0]["error_code"] == "upstream_invalid_response"


def plain_server() -> Starlette:
    """A server with a prompt and no completions capability."""
    server = MCPServer(name="plain", version="1.0")

    @server.prompt(description="Greet someone")
    def greet(name: str) -> str:
        return f"Hello, {name}!"

    return server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")


@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
async def test_completion_on_a_server_without_completions_is_empty_in_both_eras(
    tmp_path: Path, client_mode: str
) -> None:
    async with (
        serve(plain_server()) as up,
        gateway(tmp_path, registry(server_entry("plain", up))) as (url, _),
    ):
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client:
            result = await client.complete(
                types.PromptReference(type="ref/prompt", name="plain__greet"), {"name": "name", "value": "A"}
            )
    assert result.completion.values == [] and not result.completion.has_more
    record = next(r for r in audit_records(tmp_path) if r["operation"] == "completion/complete")
    assert record["status"] == "ok" and record["target"] == "mcp:plain/prompt/greet"


@pytest.mark.parametrize("era", ["handshake", "modern"])
@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
async def test_an_upstream_result_the_caller_cannot_be_sent_is_an_error_on_the_record(
    tmp_path: Path, era: str, client_mode: str
) -> None:
    bad = b'{"jsonrpc": "2.0", "id": {id}, "result": {"completion": {"values": "not a list"}}}'
    docs = Upstream("docs", handshake_only=era == "handshake")
    async with serve(Garbling(docs, b"application/json", bad, b"completion/complete")) as up:
        async with gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
            async with mcp_client(f"{url}/mcp", mode=client_mode) as client:
                ref = types.PromptReference(type="ref/prompt", name="docs__greet")
                with pytest.raises(MCPError) as err:
                    await client.complete(ref, {"name": "name", "value": "break"})
                fine = await client.complete(ref, {"name": "name", "value": "Al"})
    assert err.value.code == -32013 and err.value.data["code"] == "upstream_invalid_response"
    assert fine.completion.values
    records = [r for r in audit_records(tmp_path) if r["operation"] == "completion/complete"]
    assert [r["status"] for r in records] == ["error", "ok"]
    assert records[0]["error_code"] == "upstream_invalid_response"


async def test_readyz_names_each_upstream_left_out_and_why(tmp_path: Path) -> None:
    docs = Upstream("docs", handshake_only=True, event_store=True)  # primes its streams: must still be ready
    html = Garbling(Upstream("odd"), b"text/html", b"<html>oops</html>", b"tools/list", trigger=b"")
    async with serve(docs) as good, serve(html) as bad:
        reg = registry(server_entry("docs", good), server_entry("odd", bad))
        async with gateway(tmp_path, reg) as (url, gw), httpx.AsyncClient() as c:
            with anyio.fail_after(10):
                await gw.mcp.warmed("docs")
                await gw.mcp.warmed("odd")
            ready = await c.get(f"{url}/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False and body["checks"]["mcp_servers"] is False
    assert [e["upstream"] for e in body["left_out"]] == ["mcp:odd"]
    assert "left out of listings" in body["left_out"][0]["reason"]
    assert "invalid response" in body["left_out"][0]["reason"]
    assert body["mcp"]["docs"]["ready"] is True and body["mcp"]["docs"]["reason"] is None


async def test_readyz_is_ready_when_every_upstream_is_connected_and_listed(tmp_path: Path) -> None:
    docs = Upstream("docs", handshake_only=True, event_store=True)
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, gw):
        async with httpx.AsyncClient() as c:
            with anyio.fail_after(10):
                await gw.mcp.warmed("docs")
            ready = await c.get(f"{url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["left_out"] == [] and ready.json()["mcp"]["docs"]["ready"] is True
