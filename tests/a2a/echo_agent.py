"""Real a2a-sdk agents for the A2A tests: an echo executor (text "hold" leaves its task working, to be cancelled)
and `legacy_echo_app`, an agent whose card offers only A2A 0.3 JSON-RPC and whose endpoint refuses anything else
(a 1.0 method name or an `A2A-Version` header), so a test proves the gateway spoke 0.3 to it."""

from __future__ import annotations

from typing import Any

import orjson
from a2a.helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryPushNotificationConfigStore, InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from starlette.applications import Starlette

V03_METHODS = frozenset(
    {
        "message/send",
        "message/stream",
        "tasks/get",
        "tasks/cancel",
        "tasks/resubscribe",
        "tasks/pushNotificationConfig/set",
        "tasks/pushNotificationConfig/get",
        "tasks/pushNotificationConfig/list",
        "tasks/pushNotificationConfig/delete",
        "agent/getAuthenticatedExtendedCard",
    }
)


class Echo(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        text = get_message_text(context.message)
        if text == "hold":  # left working: the test cancels it
            return
        await updater.add_artifact([new_text_part(f"echo: {text}")], name="echo")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


class Only03:
    """ASGI wrapper: the JSON-RPC endpoint answers only 0.3 requests sent without `A2A-Version` (what a 0.3-only
    agent accepts); records the methods it served."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = {}
        method = doc.get("method") if isinstance(doc, dict) else None
        if method not in V03_METHODS or "a2a-version" in headers:
            rid = doc.get("id") if isinstance(doc, dict) else None
            err = {"code": -32601, "message": f"0.3-only agent: refused {method} (A2A-Version present: "}
            err["message"] += f"{'a2a-version' in headers})"
            out = orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": err})
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": out})
            return
        self.seen.append(str(method))
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def card(base: str, version: str = "0.3", push: bool = True, binding: str = "JSONRPC") -> AgentCard:
    url = f"{base}/" if binding == "JSONRPC" else f"{base}/rest"
    return AgentCard(
        name="legacy",
        description="Echoes text, speaks A2A 0.3 only",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=url, protocol_binding=binding, protocol_version=version)],
        capabilities=AgentCapabilities(streaming=True, push_notifications=push),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="echo text", tags=["demo"])],
    )


def legacy_echo_app(base: str) -> Only03:
    """A 0.3-only echo agent at `base` (its card lists one interface: JSON-RPC, protocolVersion 0.3), with push
    notification configs kept in memory."""
    c = card(base)
    handler = DefaultRequestHandler(
        agent_executor=Echo(),
        task_store=InMemoryTaskStore(),
        agent_card=c,
        push_config_store=InMemoryPushNotificationConfigStore(),
    )
    routes = [
        *create_agent_card_routes(c),
        *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
    ]
    return Only03(Starlette(routes=routes))


class Rest03:
    """ASGI wrapper: under `/rest` only the 0.3 HTTP+JSON paths (`/rest/v1/...`) are served, and never to a request
    carrying `A2A-Version`; records the paths it served."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/rest"):
            headers = {k.decode().lower() for k, _ in scope["headers"]}
            if not scope["path"].startswith("/rest/v1/") or "a2a-version" in headers:
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            self.seen.append(f"{scope['method']} {scope['path'][len('/rest') :]}")
        await self.app(scope, receive, send)


def legacy_rest_app(base: str) -> Rest03:
    """A 0.3-only echo agent whose card offers one interface, HTTP+JSON 0.3 at `base/rest` (paths `/rest/v1/...`)."""
    c = card(base, binding="HTTP+JSON")
    handler = DefaultRequestHandler(
        agent_executor=Echo(),
        task_store=InMemoryTaskStore(),
        agent_card=c,
        push_config_store=InMemoryPushNotificationConfigStore(),
    )
    routes = [
        *create_agent_card_routes(c),
        *create_rest_routes(handler, path_prefix="/rest", enable_v0_3_compat=True),
    ]
    return Rest03(Starlette(routes=routes))


def modern_echo_app(base: str) -> Starlette:
    """A 1.0 echo agent (JSON-RPC 1.0 only in its card) with push configs in memory and an extended card."""
    c = card(base, version="1.0")
    c.name = "modern"
    c.capabilities.extended_agent_card = True
    extended = AgentCard()
    extended.CopyFrom(c)
    extended.skills.add(id="secret", name="secret", description="for callers who authenticated", tags=["x"])
    handler = DefaultRequestHandler(
        agent_executor=Echo(),
        task_store=InMemoryTaskStore(),
        agent_card=c,
        push_config_store=InMemoryPushNotificationConfigStore(),
        extended_agent_card=extended,
    )
    routes = [*create_agent_card_routes(c), *create_jsonrpc_routes(handler, rpc_url="/")]
    return Starlette(routes=routes)
