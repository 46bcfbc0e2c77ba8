"""Real a2a-sdk 1.x agents on loopback for the end-to-end tests: `run_agent(kind)` starts one (card, JSON-RPC and
HTTP+JSON routes) on a free port under uvicorn, in the test's own event loop, so a test coordinates with it through
anyio events on the returned `Agent` (never sleeps). What each kind does is in KINDS."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from a2a.helpers import get_message_text, new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryPushNotificationConfigStore, InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Role
from a2a.utils.signing import create_agent_card_signer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette

from tests.support import free_port, serve

KINDS = {
    "echo": "answers 'echo: <text>' as a task that completes at once",
    "multiturn": "asks for input first, completes on the next message of the same task",
    "streamer": "sends `chunks` artifact updates then completes; after the first it waits for `gate` when given",
    "slow": "starts working and works until cancelled (for cancel and subscribe)",
    "signed": "the echo agent with a card signed by its own key (the SDK's signer)",
    "push": "the echo agent with capabilities.pushNotifications and an in-memory push config store",
    "extended": "the echo agent with an extended card (one more skill)",
    "failing": "starts working, sends one artifact, then raises (an error mid-stream)",
    "caller": "calls the gateway's LLM plane with the task it was handed (x-agentgw-task), then completes",
}


@dataclass
class Agent:
    """A running agent and what a test watches or steers it by."""

    kind: str
    name: str
    url: str
    card: AgentCard
    chunks: int = 3
    gate: anyio.Event | None = None  # streamer: held after the first artifact until set
    started: anyio.Event = field(default_factory=anyio.Event)  # slow/streamer: execute() began
    finished: anyio.Event = field(default_factory=anyio.Event)  # execute() returned (any kind)
    cancelled: anyio.Event = field(default_factory=anyio.Event)  # cancel() was called
    requests: list[dict[str, str]] = field(default_factory=list)  # headers of each POST the agent received
    messages: list[dict[str, Any]] = field(default_factory=list)  # metadata of each message it executed
    signing_key: ec.EllipticCurvePrivateKey | None = None  # signed: the key its card was signed with
    gateway: tuple[str, str] | None = None  # caller: (gateway URL, API key), set once the gateway runs
    calls: list[int] = field(default_factory=list)  # caller: HTTP status of each call back to the gateway
    open_requests: int = 0  # requests being answered (a stream stays open until it ends or its client leaves)
    _idle: anyio.Event = field(default_factory=anyio.Event)
    _stops: dict[str, anyio.Event] = field(
        default_factory=dict
    )  # slow: one per task, set when it is cancelled

    def stop(self, task_id: str | None = None) -> None:
        """End a slow agent's task (every one: None), as a cancel does."""
        for tid, ev in self._stops.items():
            if task_id is None or tid == task_id:
                ev.set()

    async def wait_idle(self) -> None:
        """Until no request is being answered (e.g. the gateway closed its stream to this agent)."""
        while self.open_requests:
            self._idle = anyio.Event()
            await self._idle.wait()

    def reset(self) -> None:
        """Fresh events for the next test sharing this agent (a module-wide gateway keeps its agents)."""
        self.started, self.finished, self.cancelled = anyio.Event(), anyio.Event(), anyio.Event()
        self.gate = None


class Executor(AgentExecutor):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        self.agent.messages.append(
            MessageToDict(context.message.metadata) if context.message.metadata else {}
        )
        try:
            await self.run(context, event_queue)
        finally:
            self.agent.finished.set()

    async def run(self, context: RequestContext, queue: EventQueue) -> None:
        assert context.message is not None
        if self.agent.kind == "caller":  # before any event: the gateway checks a stream's budget at its first
            await self.call_back(get_message_text(context.message))
        task = context.current_task
        first = task is None
        if task is None:
            task = new_task_from_user_message(context.message)
            await queue.enqueue_event(task)
        updater = TaskUpdater(queue, task.id, task.context_id)
        text = get_message_text(context.message)
        kind = self.agent.kind
        if kind == "multiturn" and first:
            await updater.requires_input(updater.new_agent_message([new_text_part("what else?")]))
            return
        if kind == "slow":
            await updater.start_work()
            stop = self.agent._stops.setdefault(task.id, anyio.Event())
            self.agent.started.set()
            await stop.wait()  # cancel() sends the CANCELED status itself
            return
        await updater.start_work()
        if kind == "failing":
            await updater.add_artifact([new_text_part("half")], name="half")
            raise RuntimeError("the failing agent fails")
        if kind == "streamer":
            self.agent.started.set()
            for n in range(self.agent.chunks):
                await updater.add_artifact([new_text_part(f"chunk {n}")], name=f"part-{n}")
                if n == 0 and self.agent.gate is not None:
                    await self.agent.gate.wait()
            await updater.complete()
            return
        await updater.add_artifact([new_text_part(f"echo: {text}")], name="echo")
        await updater.complete()

    async def call_back(self, text: str) -> None:
        """One chat completion through the gateway, charged to the task this delegation was handed."""
        assert self.agent.gateway is not None, "set agent.gateway before sending to a caller agent"
        url, key = self.agent.gateway
        headers = {"Authorization": f"Bearer {key}"}
        handed = self.agent.messages[-1].get("io.agentgw/task")  # the gateway's stamp on this message
        if isinstance(handed, str):
            headers["x-agentgw-task"] = handed
        body = {"model": "mock-fast", "messages": [{"role": "user", "content": text}]}
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=10)
        self.agent.calls.append(r.status_code)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()
        self.agent.stop(context.task_id)
        self.agent.cancelled.set()


def make_card(agent: Agent, *, streaming: bool = True) -> AgentCard:
    base = agent.url
    card = AgentCard(
        name=agent.name,
        description=f"a {agent.kind} agent: {KINDS[agent.kind]}",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=f"{base}/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(
            streaming=streaming,
            push_notifications=agent.kind == "push",
            extended_agent_card=agent.kind == "extended",
        ),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=agent.kind, name=agent.kind, description=KINDS[agent.kind], tags=["test"])],
    )
    if agent.kind == "signed":
        agent.signing_key = ec.generate_private_key(ec.SECP256R1())
        pem = agent.signing_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        signer = create_agent_card_signer(
            pem, {"alg": "ES256", "kid": "agent-key", "typ": "JOSE", "jku": None}
        )
        card = signer(card)
    return card


def extended_card(card: AgentCard) -> AgentCard:
    out = AgentCard()
    out.CopyFrom(card)
    out.skills.append(
        AgentSkill(id="secret", name="secret", description="only for callers who authenticate", tags=["test"])
    )
    return out


def recording(app: Any, agent: Agent) -> Any:
    """The app, with each POST's headers appended to `agent.requests` (what the gateway sent upstream) and its open
    requests counted."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            agent.requests.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        agent.open_requests += 1
        try:
            await app(scope, receive, send)
        finally:
            agent.open_requests -= 1
            if not agent.open_requests:
                agent._idle.set()

    return asgi


@contextlib.asynccontextmanager
async def run_agent(
    kind: str,
    name: str | None = None,
    *,
    chunks: int = 3,
    gate: anyio.Event | None = None,
    streaming: bool = True,
) -> AsyncIterator[Agent]:
    """Start an a2a-sdk agent of `kind` (see KINDS) on 127.0.0.1; ready when this yields (server.started)."""
    if kind not in KINDS:
        raise ValueError(f"unknown agent kind {kind!r}; one of {sorted(KINDS)}")
    port = free_port()
    agent = Agent(kind, name or kind, f"http://127.0.0.1:{port}", AgentCard(), chunks=chunks, gate=gate)
    agent.card = card = make_card(agent, streaming=streaming)
    handler = DefaultRequestHandler(
        agent_executor=Executor(agent),
        task_store=InMemoryTaskStore(),
        agent_card=card,
        push_config_store=InMemoryPushNotificationConfigStore() if kind == "push" else None,
        extended_agent_card=extended_card(card) if kind == "extended" else None,
    )
    routes = [
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, rpc_url="/"),
        *create_rest_routes(handler, path_prefix="/rest"),
    ]
    app = recording(Starlette(routes=routes), agent)
    # graceful_s small: a slow agent's open streams must not hold the test up at shutdown
    async with serve(app, port=port, graceful_s=0.5):
        try:
            yield agent
        finally:
            agent.stop()  # a slow agent's tasks still working stop with its server
            if agent.gate is not None:
                agent.gate.set()
            await handler.aclose()


def user_message(text: str, **ids: str) -> Any:
    """A ROLE_USER text message (task_id/context_id given continue a task or conversation)."""
    msg = new_text_message(text, role=Role.ROLE_USER)
    for key, value in ids.items():
        setattr(msg, key, value)
    return msg
