"""A Streamable HTTP MCP server for the agentgw quickstart: searchable project docs as tools, resources and a prompt.

Listens on 127.0.0.1:9001 (`DOCS_PORT` to change). When `DOCS_TOKEN` is set it requires
`Authorization: Bearer <DOCS_TOKEN>`, which the gateway sends from its registry (`headers:`): the upstream
credential is the gateway's, never the caller's. The quickstart registry launches it with `command:`.
"""

from __future__ import annotations

import os

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import Receive, Scope, Send

DOCS = {
    "getting-started": "Start agentgw with `make run`, then point any OpenAI or MCP client at http://127.0.0.1:8080.",
    "budgets": "Every task has one token budget across LLM calls, tool calls and agent calls; streams stop when it runs out.",
    "policies": "Casbin rules decide who may call which model, tool or agent: p, <role>, mcp:<server>/<tool>, call, allow.",
    "audit": "Every call is one audit record; `agentgw trace show TASK_ID` prints a workflow's trace tree.",
}

mcp = MCPServer(name="docs", version="1.0.0", instructions="Search and read the agentgw quickstart docs.")


@mcp.tool(description="Search the docs; returns the slugs of matching pages, best first.")
def search_docs(query: str) -> list[str]:
    words = query.lower().split()
    scored = [
        (sum(text.lower().count(w) + slug.count(w) for w in words), slug) for slug, text in DOCS.items()
    ]
    return [slug for score, slug in sorted(scored, reverse=True) if score > 0]


@mcp.tool(description="Read one docs page by slug.")
def read_doc(slug: str) -> str:
    if slug not in DOCS:
        raise ValueError(f"No page {slug!r}; pages: {', '.join(sorted(DOCS))}")
    return DOCS[slug]


@mcp.resource("docs://index", description="Every page slug", mime_type="text/plain")
def index() -> str:
    return "\n".join(sorted(DOCS))


@mcp.resource("docs://pages/{slug}", description="One docs page", mime_type="text/markdown")
def page(slug: str) -> str:
    return DOCS.get(slug, f"No page {slug!r}.")


@mcp.prompt(description="Ask for an explanation of one agentgw topic, grounded in the docs.")
def explain(topic: str) -> str:
    return f"Using the agentgw docs (search them first), explain {topic} in three sentences."


_inner = mcp.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
TOKEN = os.environ.get("DOCS_TOKEN")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and TOKEN:
        headers = dict(scope["headers"])
        if headers.get(b"authorization", b"").decode() != f"Bearer {TOKEN}":
            body = b'{"error":"missing or wrong bearer token"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
    await _inner(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("DOCS_PORT", "9001")), log_level="warning")
