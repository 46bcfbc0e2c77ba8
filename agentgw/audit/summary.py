"""Request and response summaries for audit records: the shape of a call (model, tool, counts, finish reason)
plus short, redacted previews of its text. Knows the OpenAI and MCP JSON shapes; imports no plane."""

from __future__ import annotations

from typing import Any

import orjson

from agentgw.audit.redact import Limits, Redactor


class Summarizer:
    def __init__(self, redactor: Redactor, max_chars: int, max_items: int) -> None:
        self.r = redactor
        self.limits = Limits(max_chars, max_items, depth=5)
        self.max_items = max_items

    def text(self, value: str) -> str | None:
        return self.limits.cut(self.r.text(value))

    def preview(self, obj: Any) -> Any:
        """A redacted, bounded copy (see Redactor.value)."""
        return self.r.value(obj, "", self.limits)

    # -- requests -----------------------------------------------------------------------------------------------

    def request(self, plane: str, operation: str, payload: dict[str, Any] | None) -> dict[str, Any] | None:
        if not payload:
            return None
        if plane == "llm" and operation == "chat":
            msgs = payload.get("messages")
            msgs = msgs if isinstance(msgs, list) else []
            last = msgs[-1] if msgs and isinstance(msgs[-1], dict) else {}
            tools = _list(payload.get("tools"))
            out: dict[str, Any] = {
                "model": payload.get("model"),
                "stream": bool(payload.get("stream")),
                "max_tokens": payload.get("max_completion_tokens") or payload.get("max_tokens"),
                "messages": len(msgs),
                "tools": [_tool_name(t) for t in tools[: self.max_items]],
                "last_message": {"role": last.get("role"), "content": self._content(last.get("content"))},
            }
            return out
        if plane == "llm" and operation == "embeddings":
            inp = payload.get("input")
            return {"model": payload.get("model"), "inputs": len(inp) if isinstance(inp, list) else 1}
        if plane == "mcp":
            shown = {k: v for k, v in payload.items() if k != "_meta"}
            out = self.preview(shown)
            return out if isinstance(out, dict) else None
        if plane == "a2a" and isinstance(payload.get("message"), dict):
            msg = payload["message"]
            parts = _list(msg.get("parts"))
            return {
                "message_id": msg.get("messageId"),
                "context_id": msg.get("contextId"),
                "task_id": msg.get("taskId"),
                "parts": len(parts),
                "text": self._content(parts),
            }
        out = self.preview(payload)
        return out if isinstance(out, dict) else None

    def _content(self, content: Any) -> Any:
        if isinstance(content, str):
            return self.text(content)
        if isinstance(content, list):  # content parts: keep the text ones
            texts = [
                str(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            ]
            return self.text(" ".join(texts)) if texts else f"[{len(content)} parts]"
        return None

    # -- responses ----------------------------------------------------------------------------------------------

    def response(self, plane: str, operation: str, body: Any) -> dict[str, Any] | None:
        """`body`: the parsed response (or None). LLM chat: finish reasons, text preview, tool calls."""
        if not isinstance(body, dict):
            return None
        if plane == "llm" and operation == "chat":
            choices = _list(body.get("choices"))
            first = _dict(choices[0] if choices else None)
            msg = _dict(first.get("message"))
            calls = _list(msg.get("tool_calls"))
            return {
                "id": body.get("id"),
                "finish_reason": first.get("finish_reason"),
                "content": self._content(msg.get("content")),
                "tool_calls": [_tool_name(c) for c in calls[: self.max_items]],
            }
        if plane == "llm" and operation == "embeddings":
            data = body.get("data")
            return {"embeddings": len(data) if isinstance(data, list) else 0}
        if plane == "mcp":
            shown = {k: v for k, v in body.items() if k not in ("_meta", "resultType")}
            out = self.preview(shown)
            return out if isinstance(out, dict) else None
        if plane == "a2a":
            a2a = self._a2a(body)
            if a2a is not None:
                return a2a
        out = self.preview(body)
        return out if isinstance(out, dict) else None

    def _a2a(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """An A2A Task or Message (bare, or as a SendMessage result): ids, state, artifact count, text preview."""
        inner = body.get("task") or body.get("message") or body
        if not isinstance(inner, dict) or not ("status" in inner or "parts" in inner):
            return None
        status = _dict(inner.get("status"))
        arts = _list(inner.get("artifacts"))
        texts = [p for a in arts[: self.max_items] for p in _list(_dict(a).get("parts"))]
        return {
            "task_id": inner.get("id") if "status" in inner else inner.get("taskId"),
            "context_id": inner.get("contextId"),
            "state": status.get("state"),
            "artifacts": len(arts),
            "text": self._content(texts or _list(inner.get("parts"))),
        }


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tool_name(item: Any) -> Any:
    if isinstance(item, dict):
        fn = item.get("function")
        if isinstance(fn, dict):
            return fn.get("name")
        return item.get("name")
    return None


def parse_json(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
