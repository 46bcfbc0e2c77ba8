"""Asking the calling user to confirm a held call (policy effect `confirm`, stages/hold.py), in the caller's era:
a handshake-era caller gets an `elicitation/create` request on its session, related to the call; a 2026-07-28
caller gets the gateway's own `input_required` round, whose sealed `requestState` binds the answer to this
caller, endpoint, call and its arguments, and carries what the caller's request brought for the upstream (its
`requestState` and `inputResponses`, when it was the retry of an upstream's round) so nothing of it is lost."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from mcp.shared.exceptions import MCPError

from agentgw.exchange import Exchange
from agentgw.mcp.bridges.relay import Caller
from agentgw.mcp.bridges.state import Binding, StateSeal
from agentgw.stages.hold import AskLater, UserUnreachable, call_arguments

CONFIRM_KEY = "io.agentgw/confirm"  # the gateway's own key among a round's inputRequests
_SERVER = (
    "io.agentgw/confirm"  # in the binding's server slot: never an upstream's, so states cannot be swapped
)


def _binding(ex: Exchange, endpoint: str) -> Binding:
    assert ex.principal is not None
    args = orjson.dumps(call_arguments(ex), option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(args).hexdigest()[:32]
    return Binding(
        Binding.principal_of(ex.principal), endpoint, _SERVER, ex.operation, f"{ex.target}#{digest}"
    )


async def ask_caller(
    ex: Exchange,
    caller: Caller,
    params: dict[str, Any],
    seal: StateSeal | None,
    endpoint: str,
    message: str,
    schema: dict[str, Any],
) -> tuple[str, dict[str, Any] | None]:
    """(action, content) of the user's answer; raises UserUnreachable when this caller cannot be asked, AskLater
    with the round to answer (2026-07-28), RefusedState (-32602) for an answer whose state the gateway did not
    mint for this caller, call and arguments. `params` (the caller's request) loses the gateway's round."""
    if not caller.can("elicitation/create"):
        raise UserUnreachable("the MCP client did not declare the elicitation capability")
    if not caller.modern:
        try:
            answer = await caller.ask("elicitation/create", {"message": message, "requestedSchema": schema})
        except MCPError as err:
            raise UserUnreachable(f"the MCP client could not be asked (JSON-RPC error {err.code})") from None
        content = answer.get("content")
        return str(answer.get("action")), content if isinstance(content, dict) else None
    if seal is None:
        raise UserUnreachable(f"this endpoint cannot ask in {caller.version} rounds")
    bind = _binding(ex, endpoint)
    responses = params.get("inputResponses")
    if isinstance(responses, dict) and CONFIRM_KEY in responses:
        opened = seal.open(params.get("requestState"), bind)
        carried = orjson.loads(opened.upstream) if opened.upstream else {}
        params.pop("requestState", None)
        params.pop("inputResponses", None)
        if isinstance(carried, dict):  # what the request that was asked brought for the upstream
            params.update({k: v for k, v in carried.items() if k in ("requestState", "inputResponses")})
        answer = responses[CONFIRM_KEY]
        if not isinstance(answer, dict):
            return "invalid", None
        content = answer.get("content")
        return str(answer.get("action")), content if isinstance(content, dict) else None
    carry = {k: params[k] for k in ("requestState", "inputResponses") if params.get(k) is not None}
    state = seal.seal(bind, upstream=orjson.dumps(carry).decode() if carry else None)
    request = {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}
    raise AskLater(
        {"resultType": "input_required", "inputRequests": {CONFIRM_KEY: request}, "requestState": state}
    )
