"""Holds: a call the policy allows only with a person's agreement (effects `approve` and `confirm`, which authz
leaves in `exchange.attrs["hold"]`). Runs right after authz.

- `approve`: an approval request is created (or the open one of the same call found again), announced, and the
  call waits until an approver decides or the request times out: 403 `approval_denied` / `approval_timeout`
  naming who decided and why. While it waits the plane may report progress: `attrs["notify_progress"]`, an async
  callable taking a message (the MCP plane sets it when the caller sent a progressToken).
- `confirm`: the calling user is asked through the plane's `attrs["ask_user"]` (message, schema) → (action,
  content); only an explicit "accept" lets the call through (403 `confirmation_declined` otherwise). A plane or a
  client with no way to ask (no callable, or it raises UserUnreachable) gets 403 `confirmation_unavailable`. A
  plane that asks in a protocol round raises AskLater: this round is answered with its result, and the retry
  brings the answer.

Every step is a `hold` decision in the call's audit record (in the gateway's own words: decision details are not
redacted, so the question with the caller's arguments stays out of them; an approver's reason is redacted when it
is stored). Fails closed: an unknown effect, or `approve` without
an approvals service, is a denial.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from agentgw.approvals import APPROVED, DENIED, Approvals
from agentgw.errors import Forbidden
from agentgw.exchange import Exchange, Result
from agentgw.pipeline import Stage

AskUser = Callable[[str, dict[str, Any]], Awaitable[tuple[str, dict[str, Any] | None]]]
NotifyProgress = Callable[[str], Awaitable[None]]
CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {},
}  # nothing to fill in: accept is the answer
_ARG_CHARS = 80  # of one argument's value in the question to the user
_QUESTION_CHARS = 500


class UserUnreachable(Exception):
    """Raised by a plane's `ask_user` when this caller cannot be asked (no elicitation capability, no stream)."""


class AskLater(Exception):
    """Raised by a plane's `ask_user` that asks in a round of its protocol (MCP 2026-07-28 `input_required`): the
    call is answered with `result` now, and the caller's retry carries the user's answer to `ask_user` again."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("asked in a round")
        self.result = result


class ApprovalDenied(Forbidden):
    code = "approval_denied"


class ApprovalTimeout(Forbidden):
    code = "approval_timeout"


class ApprovalUnavailable(Forbidden):
    code = "approval_unavailable"


class ConfirmationDeclined(Forbidden):
    code = "confirmation_declined"


class ConfirmationUnavailable(Forbidden):
    code = "confirmation_unavailable"


def call_arguments(ex: Exchange) -> Any:
    """What the call asks to do: an MCP call's `arguments`, else what the plane put in `attrs["arguments"]`, else
    the request's routing view."""
    if "arguments" in ex.attrs:
        return ex.attrs["arguments"]
    payload = ex.payload
    if ex.plane == "mcp" and isinstance(payload, dict):
        return payload.get("arguments") or {}
    return payload


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= _ARG_CHARS else text[:_ARG_CHARS] + "…"


def question(ex: Exchange, arguments: Any) -> str:
    """ "Allow docs__delete with path=/tmp/x?": the tool as the caller named it, its arguments as it sent them."""
    payload = ex.payload if isinstance(ex.payload, dict) else {}
    name = payload.get("name") if ex.plane == "mcp" and isinstance(payload.get("name"), str) else ex.target
    if isinstance(arguments, dict) and arguments:
        text = f"Allow {name} with {', '.join(f'{k}={_shown(v)}' for k, v in arguments.items())}?"
    else:
        text = f"Allow {name}?"
    return text if len(text) <= _QUESTION_CHARS else text[: _QUESTION_CHARS - 2] + "…?"


class HoldStage(Stage):
    name = "hold"

    def __init__(self, approvals: Approvals | None) -> None:
        self.approvals = approvals

    async def on_request(self, exchange: Exchange) -> None:
        hold = exchange.attrs.get("hold")
        if not hold:
            return
        effect = hold.get("effect") if isinstance(hold, dict) else None
        rule = hold.get("rule") if isinstance(hold, dict) else None
        if effect == "approve":
            await self._approve(exchange, rule)
        elif effect == "confirm":
            await self._confirm(exchange, rule)
        else:
            exchange.decide(self.name, "deny", rule=rule, detail=f"unknown hold effect {effect!r}")
            raise Forbidden(f"{exchange.target} is held by a rule this gateway cannot apply.")

    async def _approve(self, ex: Exchange, rule: str | None) -> None:
        approvals = self.approvals
        if approvals is None:
            ex.decide(self.name, "deny", rule=rule, detail="no approvals service")
            raise ApprovalUnavailable(f"{ex.target} needs an approval, and approvals are not available.")
        arguments = call_arguments(ex)
        a, created = await approvals.request(ex, rule, arguments)
        if created:
            ex.decide(self.name, "info", rule=rule, detail=f"approval {a.id} requested")
            announced = await approvals.announce(a)
            if announced:
                ex.decide(self.name, "info", rule=rule, detail=f"approval {a.id}: {announced}")
        else:
            ex.decide(self.name, "info", rule=rule, detail=f"approval {a.id} ({a.state}) found for this call")
        ex.attrs["approval"] = a.id
        notify: NotifyProgress | None = ex.attrs.get("notify_progress")
        tick = None
        if notify is not None:

            async def tick(waited: float) -> None:
                await notify(f"Waiting for approval {a.id} ({int(waited)} s)")

            await notify(f"Waiting for approval {a.id} of {ex.target}")
        decided = (
            a if a.state == APPROVED else await approvals.wait(a.id, max(0.0, a.expires - time.time()), tick)
        )
        if decided is None or decided.state not in (APPROVED, DENIED):
            ex.decide(self.name, "deny", rule=rule, detail=f"approval {a.id} timed out")
            raise ApprovalTimeout(f"{ex.target} needs an approval; request {a.id} was not decided in time.")
        by = f"{decided.approver}" + (f": {decided.reason}" if decided.reason else "")
        if decided.state != APPROVED:
            ex.decide(self.name, "deny", rule=rule, detail=f"approval {a.id} denied by {by}")
            raise ApprovalDenied(f"{ex.target} was denied by {by}.")
        if not await approvals.use(a.id):  # another call of the same request went ahead on it first
            ex.decide(self.name, "deny", rule=rule, detail=f"approval {a.id} was already used")
            raise ApprovalDenied(f"Approval {a.id} was already used by another call; call again to ask anew.")
        ex.decide(self.name, "allow", rule=rule, detail=f"approval {a.id} approved by {by}")

    async def _confirm(self, ex: Exchange, rule: str | None) -> None:
        ask: AskUser | None = ex.attrs.get("ask_user")
        if ask is None:
            ex.decide(self.name, "deny", rule=rule, detail=f"confirmation: no user channel on {ex.plane}")
            raise ConfirmationUnavailable(
                f"{ex.target} needs the calling user's confirmation, and {ex.plane.upper()} calls have no way to "
                "ask the user (only MCP clients with the elicitation capability can confirm)."
            )
        text = question(ex, call_arguments(ex))
        try:
            action, _ = await ask(text, CONFIRM_SCHEMA)
        except AskLater as later:
            ex.decide(self.name, "info", rule=rule, detail="confirmation asked (input_required round)")
            ex.result = Result(payload=later.result)  # the call goes no further in this round
            return
        except UserUnreachable as why:
            ex.decide(self.name, "deny", rule=rule, detail=f"confirmation unavailable: {why}")
            raise ConfirmationUnavailable(
                f"{ex.target} needs the calling user's confirmation: {why}"
            ) from None
        if action != "accept":
            ex.decide(self.name, "deny", rule=rule, detail=f"confirmation answered {action!r}")
            raise ConfirmationDeclined(f"The user did not confirm {ex.target} ({action}).")
        ex.decide(self.name, "allow", rule=rule, detail="confirmed by the user")
