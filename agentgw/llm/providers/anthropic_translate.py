"""OpenAI chat completions ⇄ Anthropic Messages as pure functions: the request (`request_to_messages`), the
complete answer (`message_to_completion`), and `StreamTranslator` (Anthropic stream events → OpenAI chunks).
"""

from __future__ import annotations

from typing import Any

import orjson

from agentgw import jsontext
from agentgw.llm.providers import chat_shapes as chat
from agentgw.llm.providers.base import ProviderError, invalid_response, upstream_error

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often leave it out

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error types → the HTTP status they come with (for errors delivered inside a stream).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

TOOL_CHOICE_TYPES = {"auto": "auto", "none": "none", "required": "any"}


# -- request ---------------------------------------------------------------------------------------------


def _image(part: dict[str, Any]) -> dict[str, Any]:
    url = chat.image_url(part)
    if not isinstance(url, str):
        raise chat.unsupported("An image_url part needs a url.", "messages")
    inline = chat.data_url(url)
    if inline:
        source = {"type": "base64", "media_type": inline[0], "data": inline[1]}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise chat.unsupported("Image URLs must be base64 data URLs or http(s) URLs.", "messages")
    return {"type": "image", "source": source}


def _text_part(part: dict[str, Any]) -> dict[str, Any]:
    block = {"type": "text", "text": str(part.get("text") or "")}
    if isinstance(part.get("cache_control"), dict):  # Anthropic prompt caching, passed through
        block["cache_control"] = part["cache_control"]
    return block


PARTS: dict[str, chat.PartReader] = {"text": _text_part, "image_url": _image}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Anthropic content blocks from OpenAI user-side content (string or parts)."""
    return chat.user_content(content, "Anthropic", PARTS)


def _tool_use(call: Any) -> dict[str, Any]:
    name, args = chat.assistant_call(call, "Anthropic")
    return {"type": "tool_use", "id": call.get("id"), "name": name, "input": args}


def _turns(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """System texts and alternating user/assistant turns (consecutive same-role messages merged)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def push(role: str, content: str | list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            prev = turns[-1]["content"]
            before = [{"type": "text", "text": prev}] if isinstance(prev, str) else prev
            after = [{"type": "text", "text": content}] if isinstance(content, str) else content
            turns[-1]["content"] = before + after
        else:
            turns.append({"role": role, "content": content})

    for m in messages:
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            text = chat.text_only(content, "A system")
            if text:
                system.append(text)
        elif role == "user":
            push("user", content if isinstance(content, str) else _blocks(content))
        elif role == "assistant":
            text = chat.text_only(content, "An assistant")
            raw_calls = m.get("tool_calls") or []
            if not isinstance(raw_calls, list):
                raise chat.unsupported("An assistant message's tool_calls must be an array.", "messages")
            calls = [_tool_use(c) for c in raw_calls]
            if calls:
                push("assistant", [{"type": "text", "text": text}, *calls] if text else calls)
            elif text:
                push("assistant", text)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise chat.unsupported("A tool message needs a tool_call_id.", "messages")
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
            result["content"] = content if isinstance(content, str) else _blocks(content)
            push("user", [result])
        else:
            raise chat.unsupported(
                f"Messages with role {role!r} are not supported for Anthropic.", "messages"
            )
    return system, turns


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn = chat.function_tool(tool, "Anthropic")
        schema = fn.get("parameters") or {"type": "object", "properties": {}}
        entry: dict[str, Any] = {"name": fn["name"], "input_schema": schema}
        if isinstance(fn.get("description"), str):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    mode, name = chat.tool_choice_mode(choice)
    return {"type": "tool", "name": name} if name is not None else {"type": TOOL_CHOICE_TYPES[mode]}


def request_to_messages(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The Anthropic Messages request for an OpenAI chat completions request, sent to upstream `model`."""
    chat.one_choice(payload, "Anthropic")
    system, turns = _turns(payload.get("messages") or [])
    out: dict[str, Any] = {"model": model}
    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = turns
    limit = chat.max_tokens(payload)
    out["max_tokens"] = limit if isinstance(limit, int) else DEFAULT_MAX_TOKENS
    for key in ("temperature", "top_p"):
        if payload.get(key) is not None:
            out[key] = payload[key]
    stops = chat.stop_sequences(payload)
    if stops:
        out["stop_sequences"] = stops
    tools = payload.get("tools")
    if tools:
        out["tools"] = _tools(tools)
        choice = _tool_choice(payload.get("tool_choice"))
        if payload.get("parallel_tool_calls") is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        if "tool_choice" in payload or "disable_parallel_tool_use" in choice:
            out["tool_choice"] = choice
    if isinstance(payload.get("user"), str):
        out["metadata"] = {"user_id": payload["user"]}
    if payload.get("stream") is True:
        out["stream"] = True
    return out


# -- response --------------------------------------------------------------------------------------------


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage: cache reads and writes are prompt tokens too; cache reads are the cached ones."""
    cache_read = chat.count(usage.get("cache_read_input_tokens"))
    prompt = (
        chat.count(usage.get("input_tokens"))
        + cache_read
        + chat.count(usage.get("cache_creation_input_tokens"))
    )
    return chat.usage(prompt, chat.count(usage.get("output_tokens")), cache_read)


def _tool_call(block: dict[str, Any], arguments: str) -> dict[str, Any]:
    """An OpenAI tool call (or the first fragment of a streamed one) for a `tool_use` block."""
    return chat.tool_call(block.get("id"), block.get("name"), arguments)


def message_to_completion(msg: dict[str, Any], model: str, created: int | None = None) -> dict[str, Any]:
    """The OpenAI `chat.completion` for a complete Anthropic Messages answer."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    content = msg.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            calls.append(_tool_call(block, chat.arguments_json(block.get("input"))))
    answer = chat.choice(0, chat.assistant_message(texts, calls), finish_reason(msg.get("stop_reason")))
    usage = usage_to_openai(msg["usage"]) if isinstance(msg.get("usage"), dict) else None
    completion_id = msg.get("id") or "chatcmpl-anthropic"
    return chat.completion(completion_id, msg.get("model") or model, [answer], created, usage)


# -- stream ----------------------------------------------------------------------------------------------


def stream_error(data: bytes, error: Any, secrets: list[str] | None = None) -> ProviderError:
    """An Anthropic `error` event as a ProviderError, with the status its error type comes with."""
    kind = error.get("type") if isinstance(error, dict) else None
    status = ERROR_STATUS.get(kind, 502) if isinstance(kind, str) else 502
    return upstream_error(status, data, secrets or [])


class StreamTranslator(chat.ChunkWriter):
    """Feed it the `data` of each Anthropic stream event; it returns the OpenAI SSE frames to send.

    Tool calls are numbered in the order their `tool_use` blocks start (Anthropic's block index counts text
    blocks too). `done` turns true at `message_stop`, after the finish chunk, the optional usage chunk and
    `[DONE]`. An `error` event raises ProviderError.
    """

    def __init__(
        self, model: str, include_usage: bool, secrets: list[str] | None = None, created: int | None = None
    ) -> None:
        super().__init__("chatcmpl-anthropic", model, include_usage, secrets, created)
        self.usage: dict[str, int] = {}
        self.stop_reason: str | None = None
        self.done = False

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for key, value in usage.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    self.usage[key] = value

    def feed(self, data: bytes) -> list[bytes]:
        if not data or self.done:
            return []
        try:
            event = jsontext.loads(data)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            raise invalid_response("a stream event is not a JSON object")
        kind = event.get("type")
        if kind == "message_start":
            msg = event.get("message")
            msg = msg if isinstance(msg, dict) else {}
            self.id = str(msg.get("id") or self.id)
            self.model = str(msg.get("model") or self.model)
            self._merge_usage(msg.get("usage"))
            return self._start()
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "content_block_stop":
            return self._close_block(event.get("index"))
        if kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
            self._merge_usage(event.get("usage"))
            return []
        if kind == "message_stop":
            return self._finish()
        if kind == "error":
            raise stream_error(data, event.get("error"), self.secrets)
        return []  # ping and event types added later

    def _block_start(self, event: dict[str, Any]) -> list[bytes]:
        index, block = event.get("index"), event.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return []
        out = self._start()
        if block.get("type") == "text" and block.get("text"):
            out.append(self._delta({"content": str(block["text"])}))
        elif block.get("type") == "tool_use":
            out.append(self._open_tool(index, _tool_call(block, "")))
            if block.get("input"):  # normally {} with the input following as input_json_delta
                out.append(self._args(index, chat.arguments_json(block["input"])))
        return out

    def _block_delta(self, event: dict[str, Any]) -> list[bytes]:
        index, delta = event.get("index"), event.get("delta")
        if not isinstance(index, int) or not isinstance(delta, dict):
            return []
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [*self._start(), self._delta({"content": str(delta["text"])})]
        if delta.get("type") == "input_json_delta" and index in self.tools and delta.get("partial_json"):
            return [*self._start(), self._args(index, str(delta["partial_json"]))]
        return []  # thinking, signature and citations deltas have no chat completions counterpart

    def end(self) -> list[bytes]:
        """The end of the body: nothing more to send after `message_stop`; before it, a retryable error."""
        if not self.done:
            raise ProviderError("upstream stream ended before message_stop", status=502, retryable=True)
        return []

    def _finish(self) -> list[bytes]:
        self.done = True
        return [
            *self._start(),
            self._delta({}, finish_reason(self.stop_reason)),
            *self._tail(usage_to_openai(self.usage)),
        ]
