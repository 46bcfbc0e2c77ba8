"""The OpenAI chat completions side every translating provider (Anthropic, Bedrock, Gemini) reads and writes: the
request's content, tool calls and options, and the `chat.completion` and `chat.completion.chunk` shapes built back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from agentgw import jsontext
from agentgw.llm.providers.base import ProviderError
from agentgw.llm.sse import DONE

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)

# Reads one content part (a dict) of the type it is registered for into the provider's form; None leaves it out.
PartReader = Callable[[dict[str, Any]], dict[str, Any] | None]


def unsupported(message: str, param: str | None = None) -> ProviderError:
    """A request the provider's API cannot express: the caller's fault, never retried or failed over."""
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": "unsupported"}
    return ProviderError(message, status=400, retryable=False, body=body)


# -- request ---------------------------------------------------------------------------------------------


def text_only(content: Any, where: str) -> str:
    """Plain text of a message whose content may only be text (string or text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise unsupported(f"{where} content may only contain text parts.", "messages")
            pieces.append(str(part.get("text") or part.get("refusal") or ""))
        return "".join(pieces)
    raise unsupported(f"{where} content must be a string or an array of parts.", "messages")


def unsupported_part(kind: Any, provider: str) -> ProviderError:
    return unsupported(f"Content parts of type {kind!r} are not supported for {provider}.", "messages")


def user_content(content: Any, provider: str, readers: Mapping[str, PartReader]) -> list[dict[str, Any]]:
    """The provider's parts for OpenAI user-side content (a string or an array of parts): a string is one text
    part (none when empty); each part goes through the reader for its type, and a type without one is refused."""
    if content is None:
        return []
    if isinstance(content, str):
        content = [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise unsupported("Message content must be a string or an array of parts.", "messages")
    out: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        read = readers.get(kind) if isinstance(kind, str) else None
        if read is None:
            raise unsupported_part(kind, provider)
        converted = read(part)
        if converted is not None:
            out.append(converted)
    return out


def image_url(part: dict[str, Any]) -> Any:
    """The URL of an `image_url` part (`{"url": …}`, or the bare URL some clients send)."""
    ref = part.get("image_url")
    return ref.get("url") if isinstance(ref, dict) else ref


def data_url(url: Any) -> tuple[str, str] | None:
    """The media type and base64 data of a `data:…;base64,…` URL; None for anything else."""
    match = _DATA_URL.match(url) if isinstance(url, str) else None
    return (match.group(1), match.group(2)) if match else None


def assistant_call(call: Any, provider: str, *, need_id: bool = False) -> tuple[str, dict[str, Any]]:
    """The function name and the arguments (a JSON object) of one entry of an assistant's `tool_calls`."""
    fn = call.get("function") if isinstance(call, dict) else None
    if (
        not isinstance(fn, dict)
        or not isinstance(fn.get("name"), str)
        or (need_id and not isinstance(call.get("id"), str))
    ):
        need = "an id and a function" if need_id else "a function"
        raise unsupported(f"Each assistant tool call needs {need} with a name.", "messages")
    raw = fn.get("arguments") or "{}"
    try:
        args = jsontext.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise unsupported(
            f"The arguments of tool call {call.get('id')!r} must be a JSON object for {provider}.", "messages"
        )
    return fn["name"], args


def function_tool(tool: Any, provider: str) -> dict[str, Any]:
    """The `function` of one entry of `tools`: only function tools with a name are translated."""
    fn = (
        tool.get("function")
        if isinstance(tool, dict) and tool.get("type", "function") == "function"
        else None
    )
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise unsupported(f"Only function tools (each with a name) are supported for {provider}.", "tools")
    return fn


def tool_choice_mode(choice: Any) -> tuple[str, str | None]:
    """`tool_choice` as a mode (auto, none, required, function) and, for a named function, its name."""
    if choice in (None, "auto", "none", "required"):
        return choice or "auto", None
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return "function", fn["name"]
    raise unsupported("tool_choice must be auto, none, required or a named function.", "tool_choice")


def one_choice(payload: dict[str, Any], provider: str) -> None:
    """Refuse `n` other than 1, for an API that answers with one choice."""
    n = payload.get("n")
    if n is not None and n != 1:
        raise unsupported(f"{provider} returns one choice per request; n must be 1.", "n")


def max_tokens(payload: dict[str, Any]) -> Any:
    """The completion length limit: `max_completion_tokens`, else the older `max_tokens`."""
    limit = payload.get("max_completion_tokens")
    return payload.get("max_tokens") if limit is None else limit


def stop_sequences(payload: dict[str, Any]) -> list[str]:
    """`stop` (a string or an array) as a list; empty when there is none."""
    stop = payload.get("stop")
    if isinstance(stop, str):
        return [stop]
    return [str(s) for s in stop] if isinstance(stop, list) else []


def include_usage(payload: dict[str, Any]) -> bool:
    """The client asked for the final usage chunk of a stream (`stream_options.include_usage`)."""
    opts = payload.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


# -- answer ----------------------------------------------------------------------------------------------


def count(value: Any) -> int:
    """A token count from an upstream usage object: an integer (never a bool), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage(prompt: int, completion: int, cached: int, total: int | None = None) -> dict[str, Any]:
    """OpenAI usage: the totals and the cached prompt tokens."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion if total is None else total,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def arguments_json(value: Any) -> str:
    """Tool call arguments as the JSON text OpenAI carries them in (`{}` for none)."""
    return jsontext.dumps(value if value is not None else {}).decode()


def tool_call(call_id: Any, name: Any, arguments: str) -> dict[str, Any]:
    """An OpenAI tool call (or, with its `index` added, the first delta of a streamed one)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def assistant_message(texts: list[str], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message of a choice: the texts joined (null when there are only tool calls)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return message


def choice(index: int, message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}


def completion(
    completion_id: str,
    model: str,
    choices: list[dict[str, Any]],
    created: int | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """The `chat.completion` object (`created` now unless given; `usage` only when the upstream sent it)."""
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage
    return out


# -- stream ----------------------------------------------------------------------------------------------


class ChunkWriter:
    """The `chat.completion.chunk` frames of one translated stream: every chunk carries the stream's id, created
    time and model (and `usage: null` when the client asked for the final usage chunk); a choice's role goes
    out before its first content. For APIs that number their content blocks (Anthropic, Bedrock), tool calls
    are numbered in the order their blocks start, and a tool block that ends without arguments gets `{}`."""

    def __init__(
        self,
        completion_id: str,
        model: str,
        include_usage: bool,
        secrets: list[str] | None,
        created: int | None,
    ) -> None:
        self.id = completion_id
        self.model = model
        self.include_usage = include_usage
        self.secrets = secrets or []
        self.created = created if created is not None else int(time.time())
        self.started: set[int] = set()  # choices whose role chunk went out
        self.tools: dict[int, int] = {}  # upstream content block index → OpenAI tool_calls index
        self.args_sent: set[int] = set()  # block indexes whose arguments have been sent

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

    def _delta(self, delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
        return self._chunk([{"index": index, "delta": delta, "finish_reason": finish}])

    def _start(self, index: int = 0) -> list[bytes]:
        """The role chunk of choice `index` (with empty content, as OpenAI sends it), the first time only."""
        if index in self.started:
            return []
        self.started.add(index)
        return [self._delta({"role": "assistant", "content": ""}, index=index)]

    def _open_tool(self, block: int, call: dict[str, Any]) -> bytes:
        """The first delta of the tool call that content block `block` starts (`call` from `tool_call`)."""
        self.tools[block] = len(self.tools)
        return self._delta({"tool_calls": [{"index": self.tools[block], **call}]})

    def _args(self, block: int, piece: str) -> bytes:
        self.args_sent.add(block)
        return self._delta({"tool_calls": [{"index": self.tools[block], "function": {"arguments": piece}}]})

    def _close_block(self, block: Any) -> list[bytes]:
        if isinstance(block, int) and block in self.tools and block not in self.args_sent:
            return [self._args(block, "{}")]  # a tool without arguments: still valid JSON for the client
        return []

    def _tail(self, usage: dict[str, Any] | None) -> list[bytes]:
        """The end of the stream: the usage chunk (when asked for and known), then `[DONE]`."""
        if self.include_usage and usage is not None:
            return [self._chunk([], usage=usage), DONE]
        return [DONE]
