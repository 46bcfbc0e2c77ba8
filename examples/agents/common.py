"""What the quickstart's two demo agents share: an a2a-sdk 1.x server around one `answer` coroutine, the child task
the gateway hands every delegated message, and clients that call back through the gateway (an LLM model, an MCP
tool, another agent) with the agent's own gateway key and that task, so each call lands under it in the trace.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import httpx2
import uvicorn
from a2a.client import ClientConfig, create_client
from a2a.helpers import (
    get_artifact_text,
    get_message_text,
    new_task_from_user_message,
    new_text_message,
    new_text_part,
)
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Role,
    SendMessageRequest,
    TaskState,
)
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent
from starlette.applications import Starlette

# The gateway, as the agent reaches it, and the agent's own key for it (the registry's `env:` sets both).
GATEWAY = os.environ.get("AGENTGW_URL", "http://127.0.0.1:8080").rstrip("/")
KEY = os.environ.get("AGENTGW_KEY", "")
# Where the gateway puts the child task it minted for a delegated message: header and message metadata.
TASK_HEADER = "x-agentgw-task"
TASK_META_KEY = "io.agentgw/task"

# What an agent does with one message: the user's text and the task to charge in, the answer's text out.
# `progress` shows a working status message to whoever follows the task.
Answer = Callable[[str, str | None, Callable[[str], Awaitable[None]]], Awaitable[str]]


def child_task(context: RequestContext) -> str | None:
    """The task the gateway gave this message: its metadata, else the header (None: not called by agentgw)."""
    if context.message is not None and TASK_META_KEY in context.message.metadata:
        return str(context.message.metadata[TASK_META_KEY])
    headers = context.call_context.state.get("headers", {}) if context.call_context else {}
    task = headers.get(TASK_HEADER)
    return str(task) if task else None


def gateway_headers(task: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {KEY}"}
    if task:
        headers[TASK_HEADER] = task
    return headers


class Executor(AgentExecutor):
    """One task per message: working, then the answer as an artifact and completed, or failed with the reason."""

    def __init__(self, name: str, answer: Answer) -> None:
        self.name = name
        self.answer = answer

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()

        async def progress(text: str) -> None:
            await updater.update_status(
                TaskState.TASK_STATE_WORKING, message=updater.new_agent_message([new_text_part(text)])
            )

        try:
            text = await self.answer(get_message_text(context.message), child_task(context), progress)
        except Exception as exc:  # the caller gets why, as a failed task, not a broken connection
            reason = f"{self.name} failed: {type(exc).__name__}: {exc}"
            await updater.failed(message=updater.new_agent_message([new_text_part(reason)]))
            return
        await updater.add_artifact([new_text_part(text)], name="answer", last_chunk=True)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id or "", context.context_id or "").cancel()


def app(name: str, description: str, skill: AgentSkill, answer: Answer, port: int) -> Starlette:
    """The agent's card (both 1.0 bindings, on 127.0.0.1:<port>) and its JSON-RPC and HTTP+JSON routes."""
    base = f"http://127.0.0.1:{port}"
    card = AgentCard(
        name=name,
        description=description,
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=f"{base}/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[skill],
    )
    handler = DefaultRequestHandler(
        agent_executor=Executor(name, answer), task_store=InMemoryTaskStore(), agent_card=card
    )
    return Starlette(
        routes=[
            *create_agent_card_routes(card),
            *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
            *create_rest_routes(handler, path_prefix="/rest"),
        ]
    )


def main(name: str, description: str, skill: AgentSkill, answer: Answer, default_port: int) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=default_port)
    port = parser.parse_args().port
    print(f"{name}: A2A agent on 127.0.0.1:{port}, calling back through {GATEWAY}", flush=True)
    uvicorn.run(app(name, description, skill, answer, port), host="127.0.0.1", port=port, log_level="warning")


# -- calling back through the gateway --------------------------------------------------------------------------


async def ask_model(model: str, prompt: str, task: str | None) -> str:
    """One chat completion from a gateway model (OpenAI API at /v1)."""
    async with httpx.AsyncClient(base_url=GATEWAY, headers=gateway_headers(task), timeout=60) as http:
        r = await http.post(
            "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": prompt}]}
        )
        r.raise_for_status()
        return str(r.json()["choices"][0]["message"]["content"])


async def ask_agent(agent: str, text: str, task: str | None) -> str:
    """Send `text` to another agent through the gateway (/a2a/<agent>) and return its answer's text. The card
    comes from the gateway too, so every call after it goes there as well."""
    async with httpx.AsyncClient(headers=gateway_headers(task), timeout=120) as http:
        client = await create_client(
            f"{GATEWAY}/a2a/{agent}", client_config=ClientConfig(httpx_client=http, streaming=False)
        )
        async with client:
            request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
            async for event in client.send_message(request):
                if event.HasField("task"):
                    t = event.task
                    if t.status.state != TaskState.TASK_STATE_COMPLETED:
                        why = get_message_text(t.status.message) if t.HasField("status") else ""
                        raise RuntimeError(f"{agent} ended {TaskState.Name(t.status.state)}: {why}")
                    return "\n".join(get_artifact_text(a) for a in t.artifacts)
                if event.HasField("message"):
                    return get_message_text(event.message)
    raise RuntimeError(f"{agent} sent no answer")


@contextlib.asynccontextmanager
async def gateway_mcp(task: str | None) -> AsyncIterator[Client]:
    """An MCP client of the gateway's aggregate endpoint (/mcp: every tool the key may use, as <server>__<tool>)."""
    async with (
        httpx2.AsyncClient(headers=gateway_headers(task), timeout=httpx2.Timeout(10, read=60)) as http,
        Client(streamable_http_client(f"{GATEWAY}/mcp", http_client=http)) as client,
    ):
        yield client


async def use_tool(client: Client, tool: str, arguments: dict[str, object]) -> str:
    """One tool call; its text content (a tool error raises)."""
    result = await client.call_tool(tool, arguments)
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    if result.is_error:
        raise RuntimeError(f"{tool}: {text}")
    return text
