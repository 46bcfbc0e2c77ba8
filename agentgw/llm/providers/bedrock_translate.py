"""OpenAI chat completions ⇄ AWS Bedrock Converse as pure functions: the request (`request_to_converse`),
the complete answer (`converse_to_completion`), usage, and Bedrock's errors (`bedrock_error`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agentgw.llm.providers import chat_shapes as chat
from agentgw.llm.providers.base import ProviderError, invalid_response, scrub

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

# HTTP status → (OpenAI error type, stable code, retryable). The status alone names Bedrock's exception (the
# service model gives each its status); 424 is ModelErrorException, a model failure another target may lack.
ERRORS: dict[int, tuple[str, str, bool]] = {
    400: ("invalid_request_error", "upstream_validation_error", False),
    403: ("permission_error", "upstream_access_denied", False),
    404: ("invalid_request_error", "upstream_model_not_found", False),
    408: ("api_error", "upstream_model_timeout", True),
    424: ("api_error", "upstream_model_error", True),
    429: ("rate_limit_error", "upstream_throttled", True),
    500: ("api_error", "upstream_internal_error", True),
    503: ("api_error", "upstream_unavailable", True),
}

# Exceptions delivered inside a ConverseStream (`:exception-type`) → the status their shape carries.
STREAM_EXCEPTIONS = {
    "validationException": 400,
    "modelTimeoutException": 408,
    "modelStreamErrorException": 424,
    "throttlingException": 429,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
}

IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
TOOL_CHOICES: dict[str, dict[str, Any] | None] = {"auto": {"auto": {}}, "none": None, "required": {"any": {}}}
_SIGNATURE = re.compile(r"(?i)\b[0-9a-f]{64}\b")  # a SigV4 signature (or a payload hash): never shown


# -- errors ----------------------------------------------------------------------------------------------


def bedrock_error(status: int, message: str, kind: str | None, secrets: list[str]) -> ProviderError:
    """A Bedrock error (an HTTP answer's `{"message"}` or a stream exception) as a ProviderError: the message
    scrubbed of credentials and signatures, an OpenAI error object with a stable code, retryable by status."""
    err_type, code, retryable = ERRORS.get(status, ("api_error", "upstream_rejected", status >= 500))
    text = scrub(_SIGNATURE.sub("[redacted]", message), secrets)[:1000]
    label = f"{status} ({kind})" if kind else str(status)
    body = {"message": text, "type": err_type, "param": None, "code": code}
    return ProviderError(f"upstream answered {label}: {text}", status=status, retryable=retryable, body=body)


def error_message(body: Any) -> tuple[str, str | None]:
    """The message and exception name of a Bedrock error body (`{"message"}`, some services add `__type`)."""
    if not isinstance(body, Mapping):
        return "", None
    message = body.get("message", body.get("Message"))
    kind = body.get("__type")
    name = kind.rsplit("#", 1)[-1].split(":", 1)[0] if isinstance(kind, str) else None
    return (message if isinstance(message, str) else ""), name


# -- request ---------------------------------------------------------------------------------------------


def _image(part: dict[str, Any]) -> dict[str, Any]:
    inline = chat.data_url(chat.image_url(part))
    if inline is None:
        raise chat.unsupported(
            "Images must be base64 data URLs for Bedrock (it is never sent a URL).", "messages"
        )
    media_type, data = inline
    fmt = IMAGE_FORMATS.get(media_type.lower())
    if fmt is None:
        raise chat.unsupported("Bedrock takes png, jpeg, gif and webp images.", "messages")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _text_part(part: dict[str, Any]) -> dict[str, Any] | None:
    return {"text": str(part["text"])} if part.get("text") else None  # Bedrock refuses a blank text block


PARTS: dict[str, chat.PartReader] = {"text": _text_part, "image_url": _image}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Converse content blocks from OpenAI user-side content (string or parts); empty texts are left out."""
    return chat.user_content(content, "Bedrock", PARTS)


def _tool_use(call: Any) -> dict[str, Any]:
    name, args = chat.assistant_call(call, "Bedrock", need_id=True)
    return {"toolUse": {"toolUseId": call["id"], "name": name, "input": args}}


def _tool_result(m: dict[str, Any]) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str):
        raise chat.unsupported("A tool message needs a tool_call_id.", "messages")
    content = m.get("content")
    if isinstance(content, dict):  # not OpenAI's shape, but some clients send the object itself
        blocks: list[dict[str, Any]] = [{"json": content}]
    else:
        blocks = _blocks(content)  # text and images; an empty result is an empty list (never a blank text)
    # no `status`: Bedrock refuses it for models other than Claude, and absent means success
    return {"toolResult": {"toolUseId": call_id, "content": blocks}}


def _turns(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System blocks and alternating user/assistant turns (consecutive same-role messages merged, so the
    results of parallel tool calls travel in one user turn)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []

    def push(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for m in messages:
        role = m.get("role") if isinstance(m, dict) else None
        content = m.get("content") if isinstance(m, dict) else None
        if role in ("system", "developer"):
            text = chat.text_only(content, "A system")
            if text:
                system.append({"text": text})
        elif role == "user":
            push("user", _blocks(content))
        elif role == "assistant":
            text = chat.text_only(content, "An assistant")
            raw_calls = m.get("tool_calls") or []
            if not isinstance(raw_calls, list):
                raise chat.unsupported("An assistant message's tool_calls must be an array.", "messages")
            push("assistant", ([{"text": text}] if text else []) + [_tool_use(c) for c in raw_calls])
        elif role == "tool":
            push("user", [_tool_result(m)])
        else:
            raise chat.unsupported(f"Messages with role {role!r} are not supported for Bedrock.", "messages")
    return system, turns


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn = chat.function_tool(tool, "Bedrock")
        schema = fn.get("parameters") or {"type": "object", "properties": {}}
        spec: dict[str, Any] = {"name": fn["name"], "inputSchema": {"json": schema}}
        if isinstance(fn.get("description"), str) and fn["description"]:
            spec["description"] = fn["description"]
        out.append({"toolSpec": spec})
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    """Converse's toolChoice; None for `none` (the tools are left out altogether)."""
    mode, name = chat.tool_choice_mode(choice)
    return {"tool": {"name": name}} if name is not None else TOOL_CHOICES[mode]


def _inference(payload: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    limit = chat.max_tokens(payload)
    if isinstance(limit, int) and not isinstance(limit, bool):
        out["maxTokens"] = limit
    for key, name in (("temperature", "temperature"), ("top_p", "topP")):
        value = payload.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    stop = payload.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [str(s) for s in stops if s]
    if stops:
        out["stopSequences"] = stops
    return out


def request_to_converse(payload: dict[str, Any]) -> dict[str, Any]:
    """The Converse (and ConverseStream) request body for an OpenAI chat completions request. The model and
    the streaming choice are in the URL, not the body. Parameters without a Converse counterpart are dropped
    (seed, penalties, logit_bias, user, parallel_tool_calls, response_format)."""
    chat.one_choice(payload, "Bedrock")
    system, turns = _turns(payload.get("messages") or [])
    out: dict[str, Any] = {"messages": turns}
    if system:
        out["system"] = system
    inference = _inference(payload)
    if inference:
        out["inferenceConfig"] = inference
    tools = payload.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise chat.unsupported("tools must be an array.", "tools")
        specs = _tools(tools)
        choice = _tool_choice(payload.get("tool_choice"))
        if choice is not None:
            config: dict[str, Any] = {"tools": specs}
            if "tool_choice" in payload:
                config["toolChoice"] = choice
            out["toolConfig"] = config
    return out


# -- response --------------------------------------------------------------------------------------------


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_to_openai(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage. Bedrock counts cache reads and writes apart from `inputTokens`: all are prompt tokens,
    the reads are the cached ones."""
    cache_read = chat.count(usage.get("cacheReadInputTokens"))
    prompt = (
        chat.count(usage.get("inputTokens")) + cache_read + chat.count(usage.get("cacheWriteInputTokens"))
    )
    return chat.usage(prompt, chat.count(usage.get("outputTokens")), cache_read)


def tool_call(use: Mapping[str, Any], arguments: str) -> dict[str, Any]:
    """An OpenAI tool call (or the first fragment of a streamed one) for a `toolUse` block."""
    return chat.tool_call(use.get("toolUseId"), use.get("name"), arguments)


def converse_to_completion(
    answer: dict[str, Any], model: str, completion_id: str = "chatcmpl-bedrock", created: int | None = None
) -> dict[str, Any]:
    """The OpenAI `chat.completion` for a complete Converse answer."""
    output = answer.get("output")
    msg = output.get("message") if isinstance(output, dict) else None
    content = msg.get("content") if isinstance(msg, dict) else None
    if not isinstance(content, list):
        raise invalid_response("the Converse answer has no output.message.content")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append(tool_call(use, chat.arguments_json(use.get("input"))))
    only = chat.choice(0, chat.assistant_message(texts, calls), finish_reason(answer.get("stopReason")))
    usage = usage_to_openai(answer["usage"]) if isinstance(answer.get("usage"), dict) else None
    return chat.completion(completion_id, model, [only], created, usage)
