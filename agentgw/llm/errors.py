"""OpenAI error envelope: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from typing import Any

from agentgw import jsontext
from agentgw.errors import GatewayError


def error_body(err: GatewayError) -> bytes:
    payload: dict[str, Any] = {"message": err.message, "type": err.type, "param": None, "code": err.code}
    upstream = err.detail
    if isinstance(upstream, dict):  # a relayed upstream 4xx: keep its type/param (already scrubbed)
        if isinstance(upstream.get("type"), str):
            payload["type"] = upstream["type"]
        if isinstance(upstream.get("param"), str):
            payload["param"] = upstream["param"]
    return jsontext.dumps({"error": payload})
