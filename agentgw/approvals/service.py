"""The approvals service: requests are created (or found again, for a retry of the same call), announced, decided
by an approver, waited for, and used by exactly one call. Core: never imports a plane.

Waiting: a decision made in this process wakes its waiters at once (an event); a decision made by another worker or
replica is seen by re-reading the store every `poll_interval_s` (the store is the only shared state)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anyio
import orjson

from agentgw.approvals.store import (
    APPROVED,
    DENIED,
    PENDING,
    STATES,
    Approval,
    ApprovalStore,
    MemoryStore,
    SQLiteStore,
)
from agentgw.audit.redact import Limits, Redactor
from agentgw.egress import EgressForbidden, check_url
from agentgw.errors import BadRequest, Forbidden, GatewayError, NotFound
from agentgw.exchange import Exchange, Principal, TaskContext
from agentgw.settings import ApprovalsSettings, Settings

log = logging.getLogger("agentgw.approvals")

Record = Callable[[Exchange], Awaitable[None]]  # hands an Exchange to the audit writer
Tick = Callable[[float], Awaitable[None]]  # called while a call waits, with the seconds waited so far
_LIMITS = Limits(chars=500, items=20, depth=6)


class NotAnApprover(Forbidden):
    code = "not_an_approver"


class OwnRequest(Forbidden):
    code = "own_request"


class ApprovalNotFound(NotFound):
    code = "approval_not_found"


class AlreadyDecided(GatewayError):
    status, code, type = 409, "approval_decided", "invalid_request_error"


def open_store(settings: Settings) -> ApprovalStore:
    """`approvals.store: audit` → the audit store's database (its SQLite file or its PostgreSQL database)."""
    if settings.approvals.store == "memory":
        return MemoryStore()
    audit = settings.audit
    if audit.store == "postgres":
        from agentgw.approvals.postgres import PostgresStore  # only PostgreSQL deployments import asyncpg

        return PostgresStore(audit.postgres)
    return SQLiteStore(settings.resolve(audit.sqlite.path), audit.sqlite.busy_timeout_s)


class Approvals:
    def __init__(
        self,
        cfg: ApprovalsSettings,
        store: ApprovalStore,
        redactor: Redactor,
        key: bytes,
        session: Callable[[], aiohttp.ClientSession] | None = None,
        record: Record | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.redactor = redactor
        self.key = key  # keys the call digest, so stored digests do not let anyone test guesses of arguments
        self.session = session
        self.record = record
        self.approver_roles = frozenset(cfg.approver_roles)
        self._events: dict[str, anyio.Event] = {}

    async def start(self) -> None:
        await self.store.open()

    async def aclose(self) -> None:
        await self.store.aclose()

    def digest(self, principal: str, target: str, action: str, arguments: Any) -> str:
        text = orjson.dumps([principal, target, action, arguments], option=orjson.OPT_SORT_KEYS)
        return hmac.new(self.key, text, hashlib.sha256).hexdigest()

    async def request(self, ex: Exchange, rule: str | None, arguments: Any) -> tuple[Approval, bool]:
        """The request this call waits on: one still open for the same call (a retry, also after a restart), else
        a new one. (approval, created)."""
        assert ex.principal is not None
        subject, action = ex.principal.subject, str(ex.attrs.get("action", "call"))
        digest = self.digest(subject, ex.target, action, arguments)
        now = time.time()
        found = await self.store.find(subject, ex.target, digest, now)
        if found is not None:
            return found, False
        task = ex.task
        extra: dict[str, Any] = {"plane": ex.plane}
        if ex.attrs.get("endpoint"):
            extra["endpoint"] = ex.attrs["endpoint"]
        a = Approval(
            id="apr_" + secrets.token_urlsafe(18),
            principal=subject,
            target=ex.target,
            action=action,
            digest=digest,
            rule=rule,
            created=now,
            expires=now + self.cfg.timeout_s,
            task_id=task.task_id if task else None,
            trace_id=task.trace_id if task else None,
            span_id=ex.span_id,
            arguments=self.redactor.value({"arguments": arguments}, "", _LIMITS)["arguments"],
            extra=extra,
        )
        await self.store.insert(a)
        return a, True

    async def announce(self, a: Approval) -> str | None:
        """POST the new request to the webhook, if one is configured; what happened, for the audit record."""
        hook = self.cfg.webhook
        if hook.url is None or self.session is None:
            return None
        try:
            await check_url(hook.url, hook.allow, what="The approvals webhook URL")
        except EgressForbidden as refused:
            log.warning("approvals webhook refused by the egress rule: %s", refused.reason)
            return f"webhook refused by the egress rule: {refused.reason}"
        body = orjson.dumps({"type": "approval.requested", "approval": a.as_dict()})
        try:
            async with self.session().post(
                hook.url,
                data=body,
                headers={"content-type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=hook.timeout_s),
                allow_redirects=False,  # a redirect would leave the checked host
            ) as r:
                return f"webhook answered {r.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("approvals webhook failed: %s", type(exc).__name__)
            return f"webhook failed: {type(exc).__name__}"

    async def wait(self, approval_id: str, timeout_s: float, tick: Tick | None = None) -> Approval | None:
        """Until the request is decided, expires, or `timeout_s` passes: the request as it then reads (None if it is
        gone). `tick` is called every `progress_interval_s` while it waits."""
        started = anyio.current_time()
        deadline = started + timeout_s
        next_tick = started + self.cfg.progress_interval_s
        while True:
            event = self._events.setdefault(approval_id, anyio.Event())
            a = await self.store.get(approval_id)
            if a is None:
                self._events.pop(approval_id, None)
                return None
            a = a.shown(time.time())
            now = anyio.current_time()
            if a.state != PENDING or now >= deadline:
                self._events.pop(approval_id, None)  # a waiter still on it is woken by its next poll
                return a
            pause = min(self.cfg.poll_interval_s, deadline - now, a.expires - time.time())
            if tick is not None:
                pause = min(pause, next_tick - now)
            with anyio.move_on_after(max(pause, 0.0)):
                await event.wait()
            if tick is not None and anyio.current_time() >= next_tick:
                next_tick += self.cfg.progress_interval_s
                await tick(anyio.current_time() - started)

    async def use(self, approval_id: str) -> bool:
        return await self.store.use(approval_id, time.time())

    async def get(self, approval_id: str) -> Approval:
        a = await self.store.get(approval_id)
        if a is None:
            raise ApprovalNotFound(f"No approval request {approval_id}.")
        return a.shown(time.time())

    async def list(self, state: str | None = PENDING, limit: int = 100) -> list[Approval]:
        if state is not None and state not in STATES:
            raise BadRequest(f"state must be one of {', '.join(STATES)}.")
        return await self.store.list(state, limit, time.time())

    def is_approver(self, principal: Principal) -> bool:
        return bool(self.approver_roles.intersection(principal.roles))

    async def decide(
        self, approval_id: str, decision: str, approver: Principal, reason: str | None
    ) -> Approval:
        """An approver's decision. 403 when `approver` has no approver role or made the request itself, 404 for an
        unknown id, 409 when it is no longer pending (decided or expired)."""
        if decision not in ("approve", "deny"):
            raise BadRequest('decision must be "approve" or "deny".')
        if not self.is_approver(approver):
            raise NotAnApprover(
                f"Deciding approval requests needs one of the roles {', '.join(sorted(self.approver_roles))}."
            )
        if reason is not None:  # it reaches the audit record and the caller: no credential pasted by mistake
            reason = self.redactor.text(reason)
        current = await self.get(approval_id)
        if current.principal == approver.subject:
            raise OwnRequest("An approver may not decide a request of its own.")
        now = time.time()
        state = APPROVED if decision == "approve" else DENIED
        # An approval lets the call through until as long after the decision as a request may wait (the caller may
        # be retrying after a restart); a denial closes the request.
        decided = await self.store.decide(
            approval_id,
            state,
            approver.subject,
            reason,
            now,
            now + self.cfg.timeout_s if state == APPROVED else now,
        )
        if decided is None:
            latest = await self.get(approval_id)
            raise AlreadyDecided(f"Approval request {approval_id} is already {latest.state}.")
        event = self._events.pop(approval_id, None)
        if event is not None:
            event.set()
        await self._recorded(decided, approver)
        return decided

    async def _recorded(self, a: Approval, approver: Principal) -> None:
        """The decision as an audit record of its own, in the held call's trace (its task and trace ids)."""
        if self.record is None:
            return
        ex = Exchange("admin", "approvals/decide", a.target, {})
        ex.principal = approver
        ex.task = TaskContext(a.task_id or f"approval-{a.id}", trace_id=a.trace_id or ex.span_id * 2)
        ex.task.parent_span_id = a.span_id
        outcome = "allow" if a.state == APPROVED else "deny"
        detail = f"approval {a.id} of {a.target} for {a.principal}: {a.state} by {approver.subject}"
        if a.reason:
            detail += f" ({a.reason})"
        ex.decide("hold", outcome, rule=a.rule, detail=detail)
        ex.payload = {"approval": a.id, "decision": a.state, "reason": a.reason}
        ex.status = "ok"
        try:
            await self.record(ex)
        except (
            Exception
        ):  # the decision stands (it is in the store); the record is best effort like every other
            log.exception("audit record of an approval decision lost")
