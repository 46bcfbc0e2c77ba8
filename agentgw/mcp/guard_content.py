"""The MCP plane's texts for the guard stage: the string arguments of `tools/call` and `prompts/get`, and the text
of what `tools/call`, `resources/read` and `prompts/get` answer; a blocked tool result becomes an MCP error result
(`isError: true`), any other blocked answer a JSON-RPC error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentgw.guardrails.content import Text, json_strings

if TYPE_CHECKING:
    from agentgw.exchange import Exchange, Result
    from agentgw.guardrails.config import SystemPrompt
    from agentgw.guardrails.engine import GuardBlocked

BLOCKED_META = "io.agentgw/blocked"  # `_meta` key of a withheld tool result: the guard's stable code


def _content_item(item: Any, role: str, out: list[Text]) -> None:
    """A content block's text: a `text` block's, or an embedded `resource`'s (never a blob's, nor a link's)."""
    if not isinstance(item, dict):
        return
    kind = item.get("type")
    if kind == "text" and isinstance(item.get("text"), str):
        out.append(Text(item["text"], item, "text", role))
    elif kind == "resource":
        res = item.get("resource")
        if isinstance(res, dict) and isinstance(res.get("text"), str):
            out.append(Text(res["text"], res, "text", role))


class MCPContent:
    """The guard stage's view of the MCP plane (implements Content). Texts are edited in place: the params the
    upstream gets are the exchange's own (`ex.payload` is the request's params on both the SDK's and the direct
    path, and the forward step reads `arguments` from it after the stage ran), and the result the caller gets is
    `result.payload` itself, so neither `*_changed` hook has anything left to do."""

    def request_texts(self, ex: Exchange) -> list[Text]:
        out: list[Text] = []
        payload = ex.payload
        if (
            ex.operation in ("tools/call", "prompts/get")
            and isinstance(payload, dict)
            and isinstance(payload.get("arguments"), dict)
        ):
            json_strings(payload, "arguments", "argument", out)
        return out

    def request_changed(self, ex: Exchange) -> None:
        return None

    def response_texts(self, ex: Exchange, result: Result) -> list[Text]:
        out: list[Text] = []
        answer = result.payload
        if not isinstance(answer, dict) or answer.get("resultType") == "input_required":
            return out  # a question for the caller (an input round), not the answer
        op = ex.operation
        if op == "tools/call":
            for item in _list(answer.get("content")):
                _content_item(item, "tool", out)
            if "structuredContent" in answer:
                json_strings(answer, "structuredContent", "tool", out)
        elif op == "resources/read":
            for item in _list(answer.get("contents")):
                if isinstance(item, dict) and isinstance(item.get("text"), str):
                    out.append(Text(item["text"], item, "text", "resource"))
        elif op == "prompts/get":
            for message in _list(answer.get("messages")):
                if isinstance(message, dict):
                    _content_item(message.get("content"), "prompt", out)
        return out

    def response_changed(self, ex: Exchange, result: Result) -> None:
        return None

    def blocked(self, ex: Exchange, result: Result, err: GuardBlocked) -> bool:
        """A tool result the guards withhold is the tool's error result, as MCP reports a tool that failed: the
        model calling it reads why and goes on. The upstream's `_meta` is dropped with the rest (it could carry
        the withheld content); the gateway's own says which guard code applied. A resource or a prompt has no
        error form: the stage raises, and the caller gets the JSON-RPC error with the code in `data`."""
        if ex.operation != "tools/call" or not isinstance(result.payload, dict):
            return False
        result.payload = {
            "content": [{"type": "text", "text": f"{err.message} [{err.code}]"}],
            "isError": True,
            "_meta": {BLOCKED_META: err.code},
            "resultType": "complete",
        }
        return True

    def add_prompts(self, ex: Exchange, prompts: list[tuple[SystemPrompt, str]]) -> None:
        return None  # system prompts are the LLM plane's


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
