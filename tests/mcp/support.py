"""Real upstream MCP servers for the MCP plane's tests, built with the `mcp` SDK and served on loopback.

`Upstream` records the headers of every HTTP request it receives; `handshake_only=True` makes it refuse the
2026-07-28 era the way a pre-2026 server does, so the gateway falls back to the `initialize` handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import httpx2
import mcp.types as types
import orjson
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Elicit, ListRoots, Resolve, Sample
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel
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
    gate: anyio.Event = field(default_factory=anyio.Event)  # `wait_gate` returns once this is set
    subscribed: list[str] = field(default_factory=list)  # resources/subscribe (handshake era), in order
    unsubscribed: list[str] = field(default_factory=list)
    log_levels: list[str] = field(default_factory=list)  # logging/setLevel (handshake era), in order
    roots_of: dict[str, list[str]] = field(default_factory=dict)  # per-session state: roots by session id
    unasked: list[Any] = field(default_factory=list)  # what a request about no call of the client got back
    unasked_done: anyio.Event = field(default_factory=anyio.Event)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    # Resumable streams: every SSE reply opens with a priming event (an id and empty data), as the TypeScript
    # SDK's servers with an event store do (the Python SDK primes in the handshake era only).
    event_store: bool = False

    def __post_init__(self) -> None:
        self.store = MemoryEventStore()
        self.server = build_server(self)
        self.starlette = (
            self.server.sse_app(host="127.0.0.1")
            if self.sse
            else self.server.streamable_http_app(
                streamable_http_path="/mcp",
                host="127.0.0.1",
                event_store=self.store if self.event_store else None,
                retry_interval=1000 if self.event_store else None,
            )
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


class MemoryEventStore(EventStore):
    """Keeps every event of every stream, for priming and replay."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, types.JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((s for e, s, _ in self.events if e == last_event_id), None)
        if stream is None:
            return None
        after = False
        for event_id, s, message in self.events:
            if after and s == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream


class Name(BaseModel):
    name: str


def ask_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


def ask_llm() -> Sample:
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text="Say hi"))
    return Sample([message], max_tokens=20)


def ask_roots() -> ListRoots:
    return ListRoots()


def build_server(up: Upstream) -> MCPServer:
    mcp = MCPServer(name=up.name, version="1.0")
    low = mcp._lowlevel_server

    # Questions for the caller: in the handshake era a server-to-client request in the middle of the call, in
    # 2026-07-28 an InputRequiredResult round (the SDK's resolvers pick per request).
    @mcp.tool(description="Ask the user's name, then greet them")
    def greet_user(name: Annotated[Name, Resolve(ask_name)]) -> str:
        return f"Hello, {name.name}!"

    @mcp.tool(description="Ask the client's LLM to say hi")
    def sample_hi(reply: Annotated[types.CreateMessageResult, Resolve(ask_llm)]) -> str:
        content = reply.content
        return f"LLM said: {content.text if isinstance(content, types.TextContent) else content}"

    @mcp.tool(description="List the client's roots")
    def client_roots(roots: Annotated[types.ListRootsResult, Resolve(ask_roots)]) -> str:
        return ", ".join(str(r.uri) for r in roots.roots)

    # Per-session state, the way server-everything keeps a client's roots: asked once, stored for the session.
    @mcp.tool(description="Ask the client's roots and remember them for this session")
    def remember_roots(roots: Annotated[types.ListRootsResult, Resolve(ask_roots)], ctx: Context) -> str:
        up.roots_of[(ctx.headers or {}).get("mcp-session-id", "")] = [str(r.uri) for r in roots.roots]
        return "remembered"

    @mcp.tool(description="The roots remembered for this session")
    def stored_roots(ctx: Context) -> str:
        return ", ".join(up.roots_of.get((ctx.headers or {}).get("mcp-session-id", ""), []))

    @mcp.tool(description="The client capabilities this session declared")
    def declared(ctx: Context) -> dict[str, Any]:
        caps = ctx.session.client_capabilities
        return caps.model_dump(by_alias=True, mode="json", exclude_none=True) if caps is not None else {}

    @mcp.tool(description="Once the gate opens (after this call returned), ask the client's roots")
    async def roots_later(ctx: Context) -> str:
        session = ctx.session

        async def later() -> None:
            await up.gate.wait()
            try:
                up.unasked.append(
                    (await session.list_roots()).model_dump(mode="json", exclude_none=True)
                )  # no related request
            except Exception as exc:
                up.unasked.append(repr(exc))
            up.unasked_done.set()

        up.background.append(asyncio.get_running_loop().create_task(later()))
        return "asked later"

    @mcp.tool(description="Log at debug, info and warning, then return")
    async def chatty(ctx: Context) -> str:
        for level in ("debug", "info", "warning"):
            await ctx.log(level, f"{level} from {up.name}", logger_name="chatty")  # type: ignore[arg-type]
        return "said it all"

    @mcp.tool(description="Wait until the test opens the gate")
    async def wait_gate() -> str:
        up.tool_started.set()
        await up.gate.wait()
        return "opened"

    @mcp.tool(description="Announce that the readme changed")
    async def touch(ctx: Context) -> str:
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            await ctx.notify_resource_updated("file:///readme.md")
        else:
            await ctx.session.send_resource_updated("file:///readme.md")
        return "touched"

    async def subscribe(
        ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> dict[str, Any]:
        up.subscribed.append(params.uri)
        return {}

    async def unsubscribe(
        ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> dict[str, Any]:
        up.unsubscribed.append(params.uri)
        return {}

    async def set_level(
        ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> dict[str, Any]:
        up.log_levels.append(params.level)
        return {}

    low.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)

    @mcp.completion()
    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.Completion:
        target = ref.name if isinstance(ref, types.PromptReference) else ref.uri
        names = [f"{argument.value}{suffix} ({target})" for suffix in ("da", "lan")]
        return types.Completion(values=names, total=2, has_more=False)

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
    url: str,
    *,
    mode: str = "legacy",
    key: str = TEST_KEY,
    headers: dict[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[Client]:
    """The unchanged `mcp` SDK client, with the API key as its only credential (`options`: the Client's own,
    e.g. callbacks)."""
    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}", **(headers or {})}, timeout=httpx2.Timeout(10, read=30)
    ) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **options) as client:
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
