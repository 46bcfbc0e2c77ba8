"""OpenAI chat completions ⇄ Anthropic Messages as pure functions: the request (`request_to_messages`), the
complete answer (`message_to_completion`), and `StreamTranslator` (Anthropic stream events → OpenAI chunks).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from agentgw import jsontext
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

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)


def _unsupported(message: str, param: str | None = None) -> ProviderError:
    """A request this provider cannot express: the caller's fault, never retried or failed over."""
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": "unsupported"}
    return ProviderError(message, status=400, retryable=False, body=body)


# -- request ---------------------------------------------------------------------------------------------


def _text(content: Any, where: str) -> str:
    """Plain text of a message whose content may only be text (string or text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise _unsupported(f"{where} content may only contain text parts.", "messages")
            pieces.append(str(part.get("text") or part.get("refusal") or ""))
        return "".join(pieces)
    raise _unsupported(f"{where} content must be a string or an array of parts.", "messages")


def _image(part: dict[str, Any]) -> dict[str, Any]:
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str):
        raise _unsupported("An image_url part needs a url.", "messages")
    match = _DATA_URL.match(url)
    if match:
        source = {"type": "base64", "media_type": match.group(1), "data": match.group(2)}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise _unsupported("Image URLs must be base64 data URLs or http(s) URLs.", "messages")
    return {"type": "image", "source": source}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Anthropic content blocks from OpenAI user-side content (string or parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _unsupported("Message content must be a string or an array of parts.", "messages")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            block = {"type": "text", "text": str(part.get("text") or "")}
            if isinstance(part.get("cache_control"), dict):  # Anthropic prompt caching, passed through
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif kind == "image_url":
            blocks.append(_image(part))
        else:
            raise _unsupported(f"Content parts of type {kind!r} are not supported for Anthropic.", "messages")
    return blocks


def _tool_use(call: Any) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _unsupported("Each assistant tool call needs a function with a name.", "messages")
    raw = fn.get("arguments") or "{}"
    try:
        args = jsontext.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise _unsupported(
            f"The arguments of tool call {call.get('id')!r} must be a JSON object for Anthropic.", "messages"
        )
    return {"type": "tool_use", "id": call.get("id"), "name": fn["name"], "input": args}


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
            text = _text(content, "A system")
            if text:
                system.append(text)
        elif role == "user":
            push("user", content if isinstance(content, str) else _blocks(content))
        elif role == "assistant":
            text = _text(content, "An assistant")
            raw_calls = m.get("tool_calls") or []
            if not isinstance(raw_calls, list):
                raise _unsupported("An assistant message's tool_calls must be an array.", "messages")
            calls = [_tool_use(c) for c in raw_calls]
            if calls:
                push("assistant", [{"type": "text", "text": text}, *calls] if text else calls)
            elif text:
                push("assistant", text)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise _unsupported("A tool message needs a tool_call_id.", "messages")
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
            result["content"] = content if isinstance(content, str) else _blocks(content)
            push("user", [result])
        else:
            raise _unsupported(f"Messages with role {role!r} are not supported for Anthropic.", "messages")
    return system, turns


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn = tool.get("function") if tool.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _unsupported("Only function tools (each with a name) are supported for Anthropic.", "tools")
        schema = fn.get("parameters") or {"type": "object", "properties": {}}
        entry: dict[str, Any] = {"name": fn["name"], "input_schema": schema}
        if isinstance(fn.get("description"), str):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice in (None, "auto"):
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"type": "tool", "name": fn["name"]}
    raise _unsupported("tool_choice must be auto, none, required or a named function.", "tool_choice")


def request_to_messages(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The Anthropic Messages request for an OpenAI chat completions request, sent to upstream `model`."""
    n = payload.get("n")
    if n is not None and n != 1:
        raise _unsupported("Anthropic returns one choice per request; n must be 1.", "n")
    system, turns = _turns(payload.get("messages") or [])
    out: dict[str, Any] = {"model": model}
    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = turns
    limit = payload.get("max_completion_tokens")
    if limit is None:
        limit = payload.get("max_tokens")
    out["max_tokens"] = limit if isinstance(limit, int) else DEFAULT_MAX_TOKENS
    for key in ("temperature", "top_p"):
        if payload.get(key) is not None:
            out[key] = payload[key]
    stop = payload.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = [str(s) for s in stop]
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


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage: cache reads and writes are prompt tokens too; cache reads are the cached ones."""
    cache_read = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + cache_read + _int(usage.get("cache_creation_input_tokens"))
    completion = _int(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def _arguments(value: Any) -> str:
    return jsontext.dumps(value if value is not None else {}).decode()


def _tool_call(block: dict[str, Any], arguments: str) -> dict[str, Any]:
    """An OpenAI tool call (or the first fragment of a streamed one) for a `tool_use` block."""
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }


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
            calls.append(_tool_call(block, _arguments(block.get("input"))))
    joined = "".join(texts) if texts or not calls else None
    message: dict[str, Any] = {"role": "assistant", "content": joined, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    finish = finish_reason(msg.get("stop_reason"))
    out: dict[str, Any] = {
        "id": msg.get("id") or "chatcmpl-anthropic",
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": msg.get("model") or model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
    }
    if isinstance(msg.get("usage"), dict):
        out["usage"] = usage_to_openai(msg["usage"])
    return out


# -- stream ----------------------------------------------------------------------------------------------


def stream_error(data: bytes, error: Any, secrets: list[str] | None = None) -> ProviderError:
    """An Anthropic `error` event as a ProviderError, with the status its error type comes with."""
    kind = error.get("type") if isinstance(error, dict) else None
    status = ERROR_STATUS.get(kind, 502) if isinstance(kind, str) else 502
    return upstream_error(status, data, secrets or [])


class StreamTranslator:
    """Feed it the `data` of each Anthropic stream event; it returns the OpenAI SSE frames to send.

    Tool calls are numbered in the order their `tool_use` blocks start (Anthropic's block index counts text
    blocks too). `done` turns true at `message_stop`, after the finish chunk, the optional usage chunk and
    `[DONE]`. An `error` event raises ProviderError.
    """

    def __init__(
        self, model: str, include_usage: bool, secrets: list[str] | None = None, created: int | None = None
    ) -> None:
        self.id = "chatcmpl-anthropic"
        self.model = model
        self.include_usage = include_usage
        self.secrets = secrets or []
        self.created = created if created is not None else int(time.time())
        self.usage: dict[str, int] = {}
        self.stop_reason: str | None = None
        self.tools: dict[int, int] = {}  # Anthropic content block index → OpenAI tool_calls index
        self.args_sent: set[int] = set()  # block indexes whose arguments have been sent
        self.started = False
        self.done = False

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for key, value in usage.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    self.usage[key] = value

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return b"data: " + jsontext.dumps(chunk) + b"\n\n"

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish}])

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        return [self._delta({"role": "assistant", "content": ""})]

    def _args(self, block: int, piece: str) -> bytes:
        self.args_sent.add(block)
        return self._delta({"tool_calls": [{"index": self.tools[block], "function": {"arguments": piece}}]})

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
            index = event.get("index")
            if isinstance(index, int) and index in self.tools and index not in self.args_sent:
                return [self._args(index, "{}")]  # a tool without arguments: still valid JSON for the client
            return []
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
            self.tools[index] = len(self.tools)
            call = {"index": self.tools[index], **_tool_call(block, "")}
            out.append(self._delta({"tool_calls": [call]}))
            if block.get("input"):  # normally {} with the input following as input_json_delta
                out.append(self._args(index, _arguments(block["input"])))
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

    def _finish(self) -> list[bytes]:
        self.done = True
        out = [*self._start(), self._delta({}, finish_reason(self.stop_reason))]
        if self.include_usage:
            out.append(self._chunk([], usage=usage_to_openai(self.usage)))
        out.append(b"data: [DONE]\n\n")
        return out
