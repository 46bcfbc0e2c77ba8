"""How one `tools/call`, `prompts/get` or `resources/read` reaches its upstream across input rounds, in every
pairing of eras: the caller's input capabilities and log level go upstream; a 2026-07-28 upstream's
`input_required` goes back to a 2026-07-28 caller under the gateway's sealed `requestState` (or is answered by
asking a handshake-era caller); a handshake-era upstream's server-to-client requests reach a handshake-era caller
directly, or a 2026-07-28 caller as `input_required` rounds of a call held open here."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import anyio
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types.methods import is_input_required

from agentgw.errors import UpstreamError
from agentgw.mcp.bridges.relay import MAX_ROUNDS, Caller, HeldCall, HeldCalls, answer_inputs
from agentgw.mcp.bridges.state import Binding, RefusedState, StateSeal
from agentgw.mcp.errors import UpstreamRPCError
from agentgw.mcp.upstream.inflight import Relay
from agentgw.mcp.upstream.upstream import Upstream


class Send(Protocol):
    """Send the request upstream with `extra` params added (inputResponses, requestState)."""

    def __call__(
        self, extra: dict[str, Any], *, caller: Caller, relay: Relay, progress: ProgressFnT | None = None
    ) -> Awaitable[dict[str, Any]]: ...


class Remote(Protocol):
    """Play one round of a call held by another replica (shared sessions): its result, or None if no replica
    holds the call."""

    def __call__(
        self, held: str, round: int, bind: Binding, responses: object, caller: Caller
    ) -> Awaitable[dict[str, Any] | None]: ...


class RoundTrips:
    """The plane's multi-round-trip machinery: the state seal and the held calls. Fails with RefusedState (-32602)
    for a `requestState` the gateway did not mint for this caller and call (or that expired), and relays a
    caller's refusal to answer as the JSON-RPC error it gave."""

    def __init__(self, seal: StateSeal, held: HeldCalls) -> None:
        self.seal = seal
        self.held = held

    async def forward(
        self,
        raw: Mapping[str, Any],
        caller: Caller,
        bind: Binding,
        up: Upstream,
        send: Send,
        remote: Remote | None = None,
    ) -> dict[str, Any]:
        """`raw` is the caller's request params (its `requestState` and `inputResponses`); `remote` plays a round
        of a call another replica holds."""
        try:
            return await self._forward(raw, caller, bind, up, send, remote)
        except MCPError as err:  # the caller declined, or could not be asked
            raise UpstreamRPCError(err.code, err.message, err.data) from None

    async def _forward(
        self,
        raw: Mapping[str, Any],
        caller: Caller,
        bind: Binding,
        up: Upstream,
        send: Send,
        remote: Remote | None,
    ) -> dict[str, Any]:
        opened = self.seal.open(raw["requestState"], bind) if raw.get("requestState") is not None else None
        if opened is not None and opened.held is not None:
            call = self.held.get(opened.held, bind)
            if call is None and remote is not None:
                there = await remote(opened.held, opened.round, bind, raw.get("inputResponses"), caller)
                if there is not None:
                    return there
            return await self.play(opened.held, opened.round, bind, raw.get("inputResponses"), caller)
        extra: dict[str, Any] = {}
        if raw.get("inputResponses") is not None:
            extra["inputResponses"] = raw["inputResponses"]
        if opened is not None and opened.upstream is not None:
            extra["requestState"] = opened.upstream
        conn = await up.connection()
        if not conn.modern and caller.modern and caller.caps:
            # A handshake-era server asks in the middle of the call: hold the call open across rounds.
            call = HeldCall(bind, caller, self.seal.ttl)

            async def run(call: HeldCall) -> dict[str, Any]:
                return await send(extra, caller=caller, relay=call, progress=call.progress)

            self.held.begin(call, run)
            return await self._round(call, caller)
        result = await send(extra, caller=caller, relay=caller)
        for _ in range(MAX_ROUNDS):
            if not is_input_required(result):
                return result
            if caller.modern:  # the retry must come back to this upstream, from this caller, for this call
                result["requestState"] = self.seal.seal(bind, upstream=result.get("requestState"))
                return result
            retry: dict[str, Any] = {"inputResponses": await answer_inputs(caller, result)}
            if result.get("requestState") is not None:
                retry["requestState"] = result["requestState"]
            result = await send(retry, caller=caller, relay=caller)
        raise UpstreamError(f"MCP server '{bind.server}' asked for input more than {MAX_ROUNDS} times.")

    async def play(
        self, held: str, round: int, bind: Binding, responses: object, caller: Caller
    ) -> dict[str, Any]:
        """One round of a call held here: deliver the caller's answers, wait for the next questions or the end."""
        call = self.held.get(held, bind)
        if call is None or call.round != round:
            raise StateSeal.refuse("the held call is gone or the round is stale")
        call.answer(responses)
        return await self._round(call, caller)

    def holds(self, held: str) -> bool:
        return self.held.has(held)

    async def _round(self, call: HeldCall, caller: Caller) -> dict[str, Any]:
        try:
            asks = await call.next(caller)
        except anyio.get_cancelled_exc_class():
            # The caller closed this round's stream: in 2026-07-28 that is the call's cancellation.
            call.scope.cancel()
            self.held.collected(call)
            raise
        if asks is None:
            self.held.collected(call)
            return call.outcome()
        state = self.seal.seal(call.bind, held=call.id, round=call.round)
        return {"resultType": "input_required", "inputRequests": asks, "requestState": state}


__all__ = ["RefusedState", "Remote", "RoundTrips", "Send"]
