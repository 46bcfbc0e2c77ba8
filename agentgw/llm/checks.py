"""The shape checks of chat completions and embeddings requests, before any stage: a request that fails one gets a
400 with a stable code and reaches no provider."""

from __future__ import annotations

from typing import Any

from agentgw.errors import BadRequest


def check_chat(p: dict[str, Any]) -> None:
    msgs = p.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty array.", code="invalid_messages")
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest("Each message must be an object with a string 'role'.", code="invalid_messages")
    if "stream" in p and not isinstance(p["stream"], bool) and p["stream"] is not None:
        raise BadRequest("'stream' must be a boolean.", code="invalid_type")
    for key in ("max_tokens", "max_completion_tokens"):
        v = p.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise BadRequest(f"'{key}' must be a non-negative integer.", code="invalid_type")
    tools = p.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise BadRequest("'tools' must be an array of objects.", code="invalid_type")
    opts = p.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise BadRequest("'stream_options' must be an object.", code="invalid_type")
    choice = p.get("tool_choice")
    if choice is not None and not isinstance(choice, str | dict):
        raise BadRequest("'tool_choice' must be a string or an object.", code="invalid_type")


def check_embeddings(p: dict[str, Any]) -> None:
    inp = p.get("input")
    ok = isinstance(inp, str) or (
        isinstance(inp, list) and inp and all(isinstance(x, str | int | list) for x in inp)
    )
    if not ok:
        raise BadRequest(
            "'input' must be a string or an array of strings or token arrays.", code="invalid_input"
        )
