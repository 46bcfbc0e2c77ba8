"""The Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) in terms of chat completions: a
request becomes a chat request (system, text and image blocks, tool_use and tool_result, tools, tool_choice), and
the chat answer, whole or streamed, becomes a Message or the Messages stream events; errors take Anthropic's
envelope. So the Anthropic SDK (and what is built on it) works through every provider and every stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from agentgw import jsontext
from agentgw.errors import BadRequest, GatewayError
from agentgw.exchange import Result
from agentgw.llm.apis import translate_stream

MESSAGES = "messages_api"  # Exchange.attrs key of a chat call that answers the Messages API
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def error_body(err: GatewayError) -> bytes:
    """Anthropic's error envelope; the gateway's stable code rides along in `error.code`."""
    kind = _ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")
    return jsontext.dumps(
        {"type": "error", "error": {"type": kind, "message": err.message, "code": err.code}}
    )


def relayed_error(status: int, body: bytes) -> bytes:
    """An upstream's OpenAI-shaped 4xx, relayed in Anthropic's envelope."""
    try:
        parsed = orjson.loads(body)
        message = str(parsed["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = "The upstream refused the request."
    return error_body(GatewayError(message, status=status, code="upstream_error"))


# -- request --------------------------------------------------------------------------------------------------


def _text(block: dict[str, Any], where: str) -> str:
    if not isinstance(block.get("text"), str):
        raise BadRequest(f"{where}: a text block needs text.")
    return str(block["text"])


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise BadRequest(f"{where}.content must be a string or a list of content blocks.")
    return content


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64" and isinstance(src.get("data"), str):
        url = f"data:{src.get('media_type', 'image/png')};base64,{src['data']}"
    elif src.get("type") == "url" and isinstance(src.get("url"), str):
        url = src["url"]
    else:
        raise BadRequest(f"{where}: an image block needs a base64 or url source.")
    return {"type": "image_url", "image_url": {"url": url}}


def _result_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    return "".join(_text(b, where) for b in _blocks(content, where) if b.get("type") == "text")


def chat_messages(body: dict[str, Any], skipped: list[BadRequest] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        out.append({"role": "system", "content": system})
    elif isinstance(system, list):
        out.append(
            {"role": "system", "content": "\n".join(_text(b, "system") for b in _blocks(system, "system"))}
        )
    elif system is not None:
        raise BadRequest("system must be a string or a list of text blocks.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required.", code="missing_messages")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise BadRequest(f"{where}: role must be user or assistant.")
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for j, b in enumerate(_blocks(m.get("content"), where)):
            kind, at = b.get("type"), f"{where}.content[{j}]"
            if kind == "text":
                parts.append({"type": "text", "text": _text(b, at)})
            elif kind == "image" and m["role"] == "user":
                parts.append(_image(b, at))
            elif kind == "tool_use" and m["role"] == "assistant":
                args = jsontext.dumps(b.get("input") or {}).decode()
                calls.append({"id": str(b.get("id")), "type": "function",
                              "function": {"name": str(b.get("name")), "arguments": args}})  # fmt: skip
            elif kind == "tool_result" and m["role"] == "user":
                text = _result_text(b.get("content"), at)
                if b.get("is_error"):
                    text = f"Error: {text}"
                out.append({"role": "tool", "tool_call_id": str(b.get("tool_use_id")), "content": text})
            elif kind in ("thinking", "redacted_thinking"):
                continue  # a model's own reasoning, handed back: not something a chat request carries
            elif skipped is not None:  # may still be passed through to a provider that serves it
                skipped.append(BadRequest(f"{at}: content blocks of type {kind!r} are not supported here."))
            else:
                raise BadRequest(f"{at}: content blocks of type {kind!r} are not supported here.")
        if not parts and not calls:
            continue
        content: Any = "".join(p["text"] for p in parts) if all(p["type"] == "text" for p in parts) else parts
        msg: dict[str, Any] = {"role": m["role"], "content": content if parts else None}
        if calls:
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def chat_request(body: dict[str, Any], skipped: list[BadRequest] | None = None) -> dict[str, Any]:
    """The chat completions request answering Messages request `body`. With `skipped`, what only the Messages
    API itself can serve (server tools, other block types) is left out and its refusal added there instead."""
    if not isinstance(body.get("max_tokens"), int):
        raise BadRequest("max_tokens: an integer is required.", code="missing_max_tokens")
    chat: dict[str, Any] = {
        "model": body.get("model"),
        "messages": chat_messages(body, skipped),
        "max_tokens": body["max_tokens"],
    }
    for key in ("temperature", "top_p", "stream"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    user = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    if isinstance(user, str):
        chat["user"] = user
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise BadRequest("tools must be a list.")
        out = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or "input_schema" not in t:
                refused = BadRequest(
                    f"tools[{i}]: only custom tools (name, input_schema) are served here.",
                    code="unsupported_tool",
                )
                if skipped is None or not isinstance(t, dict):
                    raise refused
                skipped.append(refused)  # a server tool: served only by passthrough to Anthropic
                continue
            fn = {"name": t["name"], "parameters": t["input_schema"]}
            if t.get("description"):
                fn["description"] = t["description"]
            out.append({"type": "function", "function": fn})
        chat["tools"] = out
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "none"):
            chat["tool_choice"] = kind
        elif kind == "any":
            chat["tool_choice"] = "required"
        if choice.get("disable_parallel_tool_use") is True:
            chat["parallel_tool_calls"] = False
    if chat.get("stream") is True:
        chat["stream_options"] = {"include_usage": True}
    return chat


# -- answer ---------------------------------------------------------------------------------------------------


def _usage(u: Any) -> dict[str, Any]:
    u = u if isinstance(u, dict) else {}
    cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": int(u.get("prompt_tokens") or 0) - cached,
        "output_tokens": int(u.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _stop(finish: Any) -> str:
    return _STOP.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def _input(arguments: Any) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"value": value}


def message_of(message_id: str, model: str, chat: Any) -> dict[str, Any]:
    """The Message for a whole chat completion."""
    choice = (chat.get("choices") or [{}])[0] if isinstance(chat, dict) else {}
    m = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if isinstance(m.get("content"), str) and m["content"]:
        content.append({"type": "text", "text": m["content"]})
    for c in m.get("tool_calls") or []:
        fn = c.get("function") or {}
        content.append({"type": "tool_use", "id": str(c.get("id")), "name": str(fn.get("name")),
                        "input": _input(fn.get("arguments"))})  # fmt: skip
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": _usage(chat.get("usage") if isinstance(chat, dict) else None),
    }


@dataclass(slots=True)
class StreamTranslator:
    """Chat chunks in, Messages events out: message_start, a content block per text run or tool call (start,
    deltas, stop), message_delta with the stop reason and usage, message_stop."""

    message_id: str
    model: str
    index: int = -1
    open_kind: str | None = None
    tools: dict[int, int] = field(default_factory=dict)  # chat tool-call index → content block index
    finish: Any = None
    usage: dict[str, Any] = field(default_factory=lambda: _usage(None))

    @staticmethod
    def _event(kind: str, **data: Any) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + jsontext.dumps({"type": kind, **data}) + b"\n\n"

    def start(self) -> bytes:
        message: dict[str, Any] = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": _usage(None)}  # fmt: skip
        return self._event("message_start", message=message)

    def _close(self) -> bytes:
        if self.open_kind is None:
            return b""
        self.open_kind = None
        return self._event("content_block_stop", index=self.index)

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b""
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open_kind != "text":
                    out += self._close()
                    self.index += 1
                    self.open_kind = "text"
                    out += self._event(
                        "content_block_start", index=self.index, content_block={"type": "text", "text": ""}
                    )
                out += self._event(
                    "content_block_delta", index=self.index, delta={"type": "text_delta", "text": text}
                )
            for call in delta.get("tool_calls") or []:
                i, fn = call.get("index", 0), call.get("function") or {}
                if i not in self.tools:
                    out += self._close()
                    self.index += 1
                    self.tools[i] = self.index
                    self.open_kind = "tool_use"
                    block = {
                        "type": "tool_use",
                        "id": str(call.get("id") or ""),
                        "name": str(fn.get("name") or ""),
                        "input": {},
                    }
                    out += self._event("content_block_start", index=self.index, content_block=block)
                piece = fn.get("arguments")
                if isinstance(piece, str) and piece:
                    out += self._event("content_block_delta", index=self.tools[i],
                                       delta={"type": "input_json_delta", "partial_json": piece})  # fmt: skip
            if choice.get("finish_reason") is not None:
                self.finish = choice["finish_reason"]
        return out

    def end(self) -> bytes:
        out = self._close()
        stop = {"stop_reason": _stop(self.finish), "stop_sequence": None}
        out += self._event("message_delta", delta=stop, usage=self.usage)
        return out + self._event("message_stop")

    def failed(self, error: dict[str, Any]) -> bytes:
        err = {"type": "api_error", "message": str(error.get("message") or "The upstream failed.")}
        return self._close() + self._event("error", error=err)


def as_message(message: tuple[str, str], result: Result) -> None:
    """A chat answer made into the Messages API's (an upstream's refusal into its error envelope); `message`:
    the Message's id and model."""
    message_id, model = message
    if result.status != 200:
        if result.stream is None:
            result.body, result.payload = relayed_error(result.status, result.body or b""), None
        return
    if result.stream is not None:
        result.stream = translate_stream(result.stream, StreamTranslator(message_id, model))
        return
    try:
        chat = orjson.loads(result.body or b"")
    except orjson.JSONDecodeError:
        return
    result.body, result.payload = jsontext.dumps(message_of(message_id, model, chat)), None
