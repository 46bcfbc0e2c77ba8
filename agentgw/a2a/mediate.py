"""The A2A plane's forward step, between the pipeline and the agent: task ownership (a task or context another
principal created does not exist for the caller), the delegation stamp (the child task in the message metadata),
the call, the ids the answer binds, and the stream relay (event by event, keep-alive comments, the budget cut)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agentgw.a2a.errors import (
    INVALID_PARAMS,
    PUSH_NOT_SUPPORTED,
    TASK_NOT_FOUND,
    A2AError,
    task_not_found,
)
from agentgw.a2a.guard_stream import EventGuard
from agentgw.a2a.methods import CANCEL, PUSH_METHODS, TASK_META_KEY, Method
from agentgw.a2a.ownership import Ownership
from agentgw.a2a.upstream.agent import AgentUpstream
from agentgw.errors import GatewayError, UpstreamError
from agentgw.exchange import Exchange, Result
from agentgw.guardrails.engine import GuardBlocked
from agentgw.stages.guard import stream_guard

log = logging.getLogger("agentgw.a2a")

TERMINAL = frozenset(
    {"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"}
)
KEEPALIVE = b": keep-alive\n\n"


class Budget(Protocol):
    """What the relay asks of the budget stage: whether the task a stream charges has run out (why, else None)."""

    async def exhausted(self, ex: Exchange) -> str | None: ...


class CardRewriter(Protocol):
    def __call__(self, agent: str, card: dict[str, Any], base: str) -> dict[str, Any]: ...


@dataclass(slots=True)
class Call:
    """One A2A operation as the front door read it: the agent, the method, its 1.0 params, and how to speak back
    to this client (its JSON-RPC id, A2A version and binding; `frame` encodes one event, `error_frame` an error)."""

    agent: str
    method: Method
    params: dict[str, Any]
    rpc_id: Any
    version: str
    binding: str
    frame: Callable[[dict[str, Any]], bytes]
    error_frame: Callable[[GatewayError], bytes]
    base: str = ""  # the gateway's URL as this client reached it (extended cards point there)


def ids_of(obj: Any) -> tuple[str | None, str | None, str | None]:
    """(task id, context id, state) of a Task, Message, StreamResponse or SendMessage result (1.0 JSON)."""
    if not isinstance(obj, dict):
        return None, None, None
    for key in ("task", "message", "statusUpdate", "artifactUpdate"):
        inner = obj.get(key)
        if isinstance(inner, dict):
            obj = inner
            break
    task = obj.get("taskId") if "taskId" in obj else obj.get("id") if "status" in obj else None
    if isinstance(obj.get("role"), str):  # a Message: its id is a message id, not a task's
        task = obj.get("taskId")
    status = obj.get("status")
    state = status.get("state") if isinstance(status, dict) else None
    ctx = obj.get("contextId")
    return (
        task if isinstance(task, str) and task else None,
        ctx if isinstance(ctx, str) and ctx else None,
        state if isinstance(state, str) else None,
    )


class Mediator:
    def __init__(
        self,
        agents: Callable[[], dict[str, AgentUpstream]],
        ownership: Ownership,
        budget: Budget | None,
        rewrite: CardRewriter,
        keepalive_s: float,
        push_allow: Sequence[str] = (),
        budget_every_s: float = 1.0,
    ) -> None:
        self.agents = agents
        self.ownership = ownership
        self.budget = budget
        self.rewrite = rewrite
        self.keepalive_s = keepalive_s
        self.push_allow = push_allow
        self.budget_every_s = budget_every_s

    async def forward(self, ex: Exchange, call: Call) -> Result:
        assert ex.principal is not None
        owner, agent, m = ex.principal.subject, call.agent, call.method
        up = self.agents()[agent]
        params = call.params
        if m.name in PUSH_METHODS:
            # Before ownership, as an a2a-sdk agent checks it: an agent without push answers every push
            # operation so, whoever owns the task.
            caps = (await up.card()).get("capabilities")
            if not (isinstance(caps, dict) and caps.get("pushNotifications") is True):
                raise A2AError(PUSH_NOT_SUPPORTED, "Push Notification is not supported")
        if m.task_param:
            tid = params.get(m.task_param)
            if not isinstance(tid, str) or not tid:
                raise A2AError(INVALID_PARAMS, f"'{m.task_param}' must name a task.")
            if await self.ownership.owner(agent, task_id=tid) != owner:
                raise task_not_found(tid)
        if m.sends:
            params = await self._stamp(ex, owner, agent, params)
        if m.name == "ListTasks":
            ctx = params.get("contextId")
            if isinstance(ctx, str) and ctx and await self.ownership.owner(agent, context_id=ctx) != owner:
                return Result(payload={"tasks": [], "nextPageToken": "", "pageSize": 0, "totalSize": 0})
        if m.name == "CreateTaskPushNotificationConfig":
            await self._check_push(params)
        route = await up.route()
        if m.streams:
            events = await up.stream(ex, route, m, params, call.rpc_id)
            return Result(stream=self.relay(ex, call, events, owner), media_type="text/event-stream")
        result = await up.unary(ex, route, m, params, call.rpc_id)
        return Result(payload=await self._after(ex, call, owner, result))

    async def _stamp(self, ex: Exchange, owner: str, agent: str, params: dict[str, Any]) -> dict[str, Any]:
        msg = params.get("message")
        if not isinstance(msg, dict):
            raise A2AError(INVALID_PARAMS, "'message' must be an object.")
        tid, ctx = msg.get("taskId"), msg.get("contextId")
        if isinstance(tid, str) and tid and await self.ownership.owner(agent, task_id=tid) != owner:
            raise task_not_found(tid)
        if isinstance(ctx, str) and ctx:
            held = await self.ownership.owner(agent, context_id=ctx)
            if held is not None and held != owner:
                raise A2AError(TASK_NOT_FOUND, "Context not found")
        # Referenced tasks are loaded into the agent's context (a2a-sdk's related_tasks): only the caller's own.
        refs = msg.get("referenceTaskIds")
        if refs is not None:
            if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
                raise A2AError(INVALID_PARAMS, "'message.referenceTaskIds' must be a list of task ids.")
            for ref in refs:
                if await self.ownership.owner(agent, task_id=ref) != owner:
                    raise task_not_found(ref)
        config = params.get("configuration")
        push = config.get("taskPushNotificationConfig") if isinstance(config, dict) else None
        if push is not None:  # a callback set with the send: the same egress check as a created config
            await self._check_push(push if isinstance(push, dict) else {})
        task = ex.outbound_task
        if task is None:
            return params
        meta = msg.get("metadata")
        meta = {**meta, TASK_META_KEY: task} if isinstance(meta, dict) else {TASK_META_KEY: task}
        return {**params, "message": {**msg, "metadata": meta}}

    async def _check_push(self, params: dict[str, Any]) -> None:
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise A2AError(INVALID_PARAMS, "'url' must name the callback.")
        from agentgw.a2a.push import check_callback

        await check_callback(url, self.push_allow)

    async def _bind(self, owner: str, agent: str, task: str | None, ctx: str | None) -> None:
        if (task or ctx) and not await self.ownership.bind(owner, agent, task_id=task, context_id=ctx):
            # The agent handed this caller an id another principal holds: never relay it.
            log.warning("agent %s returned a task or context id bound to another principal", agent)
            raise UpstreamError(f"The agent {agent} answered with a task the caller cannot be given.")

    async def _after(self, ex: Exchange, call: Call, owner: str, result: Any) -> Any:
        m, agent = call.method, call.agent
        if m.sends:
            task, ctx, state = ids_of(result)
            await self._bind(owner, agent, task, ctx)
            ex.attrs["a2a"] = {"task_id": task, "context_id": ctx, "state": state}
        elif m.name == "ListTasks" and isinstance(result, dict):
            tasks = [
                t for t in result.get("tasks") or [] if isinstance(t, dict) and isinstance(t.get("id"), str)
            ]
            owners = await self.ownership.owners(agent, [t["id"] for t in tasks])
            mine = [t for t in tasks if owners.get(t["id"]) == owner]
            result = {**result, "tasks": mine}
            if "totalSize" in result:
                result["totalSize"] = len(mine) if not result.get("nextPageToken") else result["totalSize"]
        elif m.name == "GetExtendedAgentCard" and isinstance(result, dict):
            result = self.rewrite(agent, result, call.base)
        elif m is CANCEL or m.name == "GetTask":
            _, _, state = ids_of(result)
            ex.attrs["a2a"] = {"task_id": call.params.get("id"), "state": state}
        return result

    async def relay(
        self, ex: Exchange, call: Call, events: AsyncIterator[dict[str, Any]], owner: str
    ) -> AsyncIterator[bytes]:
        """The agent's events to the client one by one, in order, never buffered; a keep-alive comment when idle;
        ended with a final status update when the task's budget runs out or a guard blocks what the agent sent
        (the agent's task is cancelled). With guards on the answer, an artifact's streamed text is held back by
        up to the guards' window (guard_stream.py)."""
        info: dict[str, Any] = {"events": 0, "state": None, "task_id": None, "context_id": None}
        ex.attrs["a2a"] = info
        checked = time.monotonic()
        sg = stream_guard(ex)
        guard = EventGuard(sg) if sg is not None else None
        try:
            async for ev in ticks(events, self.keepalive_s):
                if ev is None:
                    yield KEEPALIVE
                    continue
                task, ctx, state = ids_of(ev)
                if (task and task != info["task_id"]) or (ctx and ctx != info["context_id"]):
                    await self._bind(owner, call.agent, task, ctx)
                    info["task_id"] = task or info["task_id"]
                    info["context_id"] = ctx or info["context_id"]
                if state:
                    info["state"] = state
                if guard is not None:
                    try:
                        held = guard.event(ev)
                    except GuardBlocked as err:
                        yield call.frame(await self._blocked(ex, call, info, err))
                        return
                    for out in held:  # the held-back ends of artifacts this event closes
                        yield call.frame(out)
                info["events"] += 1
                yield call.frame(ev)
                if self.budget is not None and state not in TERMINAL and ex.attrs.get("budget") is not None:
                    now = time.monotonic()
                    if now - checked >= self.budget_every_s or info["events"] == 1:
                        checked = now
                        why = await self.budget.exhausted(ex)
                        if why is not None:
                            yield call.frame(await self._cut(ex, call, info, why))
                            return
            if guard is not None:  # the agent ended without closing its artifacts: their held-back ends
                try:
                    held = guard.flush()
                except GuardBlocked as err:
                    yield call.frame(await self._blocked(ex, call, info, err))
                    return
                for out in held:
                    yield call.frame(out)
        except GatewayError as err:
            ex.error, ex.status = err, "error"
            ex.stream_cut = ex.stream_cut or "upstream_error"
            yield call.error_frame(err)

    async def _cut(self, ex: Exchange, call: Call, info: dict[str, Any], why: str) -> dict[str, Any]:
        """The budget ran out mid-stream: cancel the agent's task (it would go on spending) and tell the client
        with a final status update."""
        ex.stream_cut = "budget_exhausted"
        ex.decide("budget", "deny", rule=f"stream cut: {why}", detail=f"after {info['events']} events")
        text = "The task's budget is exhausted; the gateway ended the stream."
        return await self._end(ex, call, info, "budget_exhausted", text)

    async def _blocked(
        self, ex: Exchange, call: Call, info: dict[str, Any], err: GuardBlocked
    ) -> dict[str, Any]:
        """A guard blocked what the agent sent: nothing of it went out. The agent's task is cancelled (its answer
        cannot reach the caller) and the client told with a final status update naming the guard's code."""
        ex.stream_cut = "content_filter"
        return await self._end(ex, call, info, err.code, f"{err.message} [{err.code}]")

    async def _end(
        self, ex: Exchange, call: Call, info: dict[str, Any], mark: str, text: str
    ) -> dict[str, Any]:
        """Cancel the agent's task and build the final TASK_STATE_FAILED status update, marked `io.agentgw/cut`."""
        task, ctx = info["task_id"], info["context_id"]
        if task:
            up = self.agents()[call.agent]
            with contextlib.suppress(GatewayError, OSError):
                route = await up.route()
                cancel = Exchange("a2a", CANCEL.name, ex.target, {}, principal=ex.principal, task=ex.task)
                await up.unary(cancel, route, CANCEL, {"id": task}, "agentgw-cut")
        info["state"] = "TASK_STATE_FAILED"
        status = {
            "state": "TASK_STATE_FAILED",
            "message": {
                "messageId": f"agentgw-cut-{task or 'stream'}",
                "role": "ROLE_AGENT",
                "parts": [{"text": text}],
            },
        }
        update = {
            "taskId": task or "",
            "contextId": ctx or "",
            "status": status,
            "metadata": {"io.agentgw/cut": mark},
        }
        return {"statusUpdate": update}


async def ticks(events: AsyncIterator[dict[str, Any]], every: float) -> AsyncIterator[dict[str, Any] | None]:
    """`events`, with None whenever `every` seconds pass without one (the caller sends a keep-alive). The pending
    read is kept across ticks (never cancelled and restarted, which would lose data)."""
    it = aiter(events)
    pending: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait((pending,), timeout=every)
            if not done:
                yield None
                continue
            fut, pending = pending, None
            try:
                ev = fut.result()
            except StopAsyncIteration:
                return
            yield ev
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        close = getattr(it, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
