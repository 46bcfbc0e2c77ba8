"""Real upstream MCP servers for the MCP plane's tests, built with the `mcp` SDK and served on loopback.

`Upstream` records the headers of every HTTP request it receives; `handshake_only=True` makes it refuse the
2026-07-28 era the way a pre-2026 server does, so the gateway falls back to the `initialize` handshake.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import orjson
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import Receive, Scope, Send

from tests.support import TEST_KEY

UPSTREAM_TOKEN = "upstream-secret-token"


@dataclass
class Upstream:
    name: str
    handshake_only: bool = False
    sse: bool = False  # the legacy HTTP+SSE transport (GET /sse + POST /messages/) instead of Streamable HTTP
    headers: list[dict[str, str]] = field(default_factory=list)
    tool_started: anyio.Event = field(default_factory=anyio.Event)
    tool_cancelled: anyio.Event = field(default_factory=anyio.Event)
    task_headers: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = build_server(self)
        self.starlette = (
            self.server.sse_app(host="127.0.0.1")
            if self.sse
            else self.server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.headers.append(headers)
            version = headers.get("mcp-protocol-version")
            if self.handshake_only and version in MODERN_PROTOCOL_VERSIONS:
                # What a pre-2026 server answers a request that carries no session id.
                body = {
                    "jsonrpc": "2.0",
                    "id": "server-error",
                    "error": {"code": -32600, "message": "Bad Request: Missing session ID"},
                }
                data = orjson.dumps(body)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": data})
                return
        await self.starlette(scope, receive, send)


def build_server(up: Upstream) -> MCPServer:
    mcp = MCPServer(name=up.name, version="1.0")

    @mcp.tool(description="Add two integers")
    def add(a: int, b: int) -> int:
        return a + b

    @mcp.tool(description="Echo text back")
    def echo(text: str) -> str:
        return text

    @mcp.tool(description="Search the docs")
    def search_docs(query: str) -> str:
        return f"results for {query}"

    @mcp.tool(description="Count to n, reporting progress")
    async def count(n: int, ctx: Context) -> int:
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"step {i}")
        return n

    @mcp.tool(description="The x-agentgw-task header this call arrived with")
    def task_header(ctx: Context) -> str:
        value = (ctx.headers or {}).get("x-agentgw-task")
        up.task_headers.append(value)
        return value or ""

    @mcp.tool(description="Block until cancelled")
    async def block(ctx: Context) -> str:
        up.tool_started.set()
        try:
            await anyio.sleep_forever()
        finally:
            up.tool_cancelled.set()
        return "never"

    @mcp.tool(description="Add a tool named `fresh` and announce the change")
    async def grow(ctx: Context) -> str:
        mcp.add_tool(lambda: "fresh", name="fresh", description="Added at runtime")
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            await ctx.notify_tools_changed()
        else:
            await ctx.session.send_tool_list_changed()
        return "grown"

    @mcp.prompt(description="Greet someone")
    def greet(name: str) -> str:
        return f"Hello, {name}!"

    @mcp.resource("file:///readme.md", description="The readme")
    def readme() -> str:
        return f"# {up.name} readme"

    @mcp.resource("file:///notes/{topic}", description="A note")
    def note(topic: str) -> str:
        return f"note about {topic}"

    return mcp


def server_entry(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "streamable-http",
        "url": f"{url}/mcp",
        "headers": {"Authorization": f"Bearer {UPSTREAM_TOKEN}"},
        "timeout_s": 10,
        **extra,
    }


@contextlib.asynccontextmanager
async def mcp_client(
    url: str, *, mode: str = "legacy", key: str = TEST_KEY, headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """The unchanged `mcp` SDK client, with the API key as its only credential."""
    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}", **(headers or {})}, timeout=httpx2.Timeout(10, read=30)
    ) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


def registry(*servers: dict[str, Any], virtual: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Without servers, one that is down: the endpoint exists (the gateway serves /mcp only when the registry
    has MCP servers) and a broken server is left out of every listing."""
    entries = list(servers) or [server_entry("down", "http://127.0.0.1:9", timeout_s=1)]
    return {"mcp": {"servers": entries, "virtual_servers": virtual or []}}


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def modern_request(method: str, params: dict[str, Any] | None = None, rid: int = 1) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
    }
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {**(params or {}), "_meta": meta}}
