"""The OpenAI Responses API (`POST /v1/responses`) in terms of chat completions: a request becomes a chat request
(instructions, input items, function tools, output limits, JSON schema), and the chat answer, whole or streamed,
becomes a Response object or the Responses stream events, so every provider and every stage of the chat path
serves it. Stored responses (for `previous_response_id` and `GET`) live in ResponseStore, bound to a principal."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from agentgw import jsontext
from agentgw.errors import BadRequest
from agentgw.exchange import Exchange, Result
from agentgw.llm.apis import translate_stream
from agentgw.llm.apis.response_store import ResponseStore, Stored

_PASSED = ("temperature", "top_p", "user", "parallel_tool_calls", "metadata", "stream")
_ROLES = {"user", "system", "developer", "assistant"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


# -- request --------------------------------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A message's content as chat content: a string, or parts (text and images)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or a list of content parts.")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise BadRequest(f"{where}.content[{i}]: content parts of type {kind!r} are not supported here.")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_messages(items: Any, skipped: list[BadRequest] | None = None) -> list[dict[str, Any]]:
    """Responses `input` (a string or a list of items) as chat messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise BadRequest("input must be a string or a list of input items.", code="invalid_input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object.", code="invalid_input")
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in _ROLES:
            role = "system" if item["role"] == "developer" else item["role"]
            out.append({"role": role, "content": _text_of(item.get("content"), where)})
        elif kind == "function_call":
            name, args, call_id = item.get("name"), item.get("arguments", ""), item.get("call_id")
            if not (isinstance(name, str) and isinstance(args, str) and isinstance(call_id, str)):
                raise BadRequest(f"{where}: a function_call needs call_id, name and arguments strings.")
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls: one assistant message
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str | list):
                raise BadRequest(f"{where}: a function_call_output needs call_id and output.")
            text = output if isinstance(output, str) else _text_of(output, where)
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        else:
            refused = BadRequest(
                f"{where}: input items of type {kind!r} are not supported here.", code="invalid_input"
            )
            if skipped is None:
                raise refused
            skipped.append(refused)  # e.g. a reasoning item: served only by passthrough to OpenAI
    return out


def _tools(tools: Any, skipped: list[BadRequest] | None = None) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list.")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("name"), str):
            kind = t.get("type") if isinstance(t, dict) else None
            refused = BadRequest(
                f"tools[{i}]: only function tools are served here, not {kind!r}.", code="unsupported_tool"
            )
            if skipped is None or not isinstance(t, dict):
                raise refused
            skipped.append(refused)  # a built-in tool (web search, …): served only by passthrough to OpenAI
            continue
        fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out


def chat_request(
    body: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
    skipped: list[BadRequest] | None = None,
) -> dict[str, Any]:
    """The chat completions request that answers Responses request `body` (after `history`: the messages of the
    previous response, when the request continues one). With `skipped`, what only the Responses API itself can
    serve (built-in tools, other input items) is left out and its refusal added there instead."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("instructions must be a string.")
        messages.append({"role": "system", "content": instructions})
    messages += history or []
    if "input" not in body:
        raise BadRequest("You must provide input.", code="missing_input")
    messages += input_messages(body["input"], skipped)
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for key in _PASSED:
        if key in body and body[key] is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        tools = _tools(body["tools"], skipped)
        if tools:
            chat["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        chat["tool_choice"] = choice
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    return chat


# -- answer ---------------------------------------------------------------------------------------------------


def _usage(u: Any) -> dict[str, Any] | None:
    if not isinstance(u, dict):
        return None
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) or 0
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0) or 0
    inp, outp = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": outp,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(u.get("total_tokens") or inp + outp),
    }


def _status(finish: Any) -> tuple[str, dict[str, str] | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


@dataclass(slots=True)
class Shell:
    """What a Response says besides its output: echoed from the request."""

    id: str
    model: str
    created_at: int
    request: dict[str, Any]

    def response(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None, incomplete: Any = None
    ) -> dict[str, Any]:
        r = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": r.get("instructions"),
            "max_output_tokens": r.get("max_output_tokens"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": r.get("parallel_tool_calls", True),
            "previous_response_id": r.get("previous_response_id"),
            "temperature": r.get("temperature"),
            "tool_choice": r.get("tool_choice", "auto"),
            "tools": r.get("tools", []),
            "top_p": r.get("top_p"),
            "metadata": r.get("metadata") or {},
            "store": r.get("store", True),
            "usage": usage,
        }


def _message(text: str, status: str = "completed", item_id: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
        if status == "completed"
        else [],
    }


def _call(
    call_id: str, name: str, args: str, status: str = "completed", item_id: str | None = None
) -> dict[str, Any]:
    return {"id": item_id or new_id("fc"), "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": args}  # fmt: skip


def response_of(shell: Shell, chat: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Response for a whole chat completion, and the assistant message it adds to the conversation."""
    choice = (chat.get("choices") or [{}])[0] if isinstance(chat, dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        output.append(_message(message["content"]))
    for c in message.get("tool_calls") or []:
        fn = c.get("function") or {}
        output.append(_call(str(c.get("id")), str(fn.get("name")), str(fn.get("arguments") or "")))
    status, incomplete = _status(choice.get("finish_reason"))
    said = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        said["tool_calls"] = message["tool_calls"]
    return shell.response(
        status, output, _usage(chat.get("usage") if isinstance(chat, dict) else None), incomplete
    ), said


@dataclass(slots=True)
class _Open:
    """An output item being streamed."""

    index: int
    item: dict[str, Any]
    text: list[str] = field(default_factory=list)


class StreamTranslator:
    """Chat completion chunks in, Responses events out (`feed(chunk)`, then `finish()`); `final` is the Response
    once the stream completed, `said` the assistant message it added to the conversation."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.seq = 0
        self.output: list[_Open] = []
        self.text: _Open | None = None
        self.calls: dict[int, _Open] = {}
        self.finish: Any = None
        self.usage: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self.said: dict[str, Any] = {"role": "assistant", "content": None}

    def _event(self, kind: str, **data: Any) -> bytes:
        self.seq += 1
        body = {"type": kind, "sequence_number": self.seq, **data}
        return b"event: " + kind.encode() + b"\ndata: " + jsontext.dumps(body) + b"\n\n"

    def start(self) -> bytes:
        r = self.shell.response("in_progress", [], None)
        return self._event("response.created", response=r) + self._event("response.in_progress", response=r)

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b""
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # one Response answers one choice
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.text is None:
                    self.text = _Open(len(self.output), _message("", "in_progress"))
                    self.output.append(self.text)
                    out += self._event(
                        "response.output_item.added", output_index=self.text.index, item=self.text.item
                    )
                    part = {"type": "output_text", "text": "", "annotations": []}
                    out += self._event("response.content_part.added", item_id=self.text.item["id"],
                                       output_index=self.text.index, content_index=0, part=part)  # fmt: skip
                self.text.text.append(text)
                out += self._event("response.output_text.delta", item_id=self.text.item["id"],
                                   output_index=self.text.index, content_index=0, delta=text, logprobs=[])  # fmt: skip
            for call in delta.get("tool_calls") or []:
                out += self._call_delta(call)
            if choice.get("finish_reason") is not None:
                self.finish = choice["finish_reason"]
        return out

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        i = call.get("index", 0)
        fn = call.get("function") or {}
        opened = self.calls.get(i)
        if opened is None:
            item = _call(str(call.get("id") or new_id("call")), str(fn.get("name") or ""), "", "in_progress")
            opened = self.calls[i] = _Open(len(self.output), item)
            self.output.append(opened)
            out += self._event("response.output_item.added", output_index=opened.index, item=item)
        piece = fn.get("arguments")
        if isinstance(piece, str) and piece:
            opened.text.append(piece)
            out += self._event("response.function_call_arguments.delta", item_id=opened.item["id"],
                               output_index=opened.index, delta=piece)  # fmt: skip
        return out

    def end(self) -> bytes:
        out = b""
        items: list[dict[str, Any]] = []
        calls = []
        for o in self.output:
            if o.item["type"] == "message":
                text = "".join(o.text)
                part = {"type": "output_text", "text": text, "annotations": []}
                out += self._event("response.output_text.done", item_id=o.item["id"], output_index=o.index,
                                   content_index=0, text=text, logprobs=[])  # fmt: skip
                out += self._event("response.content_part.done", item_id=o.item["id"], output_index=o.index,
                                   content_index=0, part=part)  # fmt: skip
                item = _message(text, item_id=o.item["id"])
                self.said["content"] = text
            else:
                args = "".join(o.text)
                out += self._event("response.function_call_arguments.done", item_id=o.item["id"],
                                   output_index=o.index, arguments=args)  # fmt: skip
                item = _call(o.item["call_id"], o.item["name"], args, item_id=o.item["id"])
                calls.append({"id": o.item["call_id"], "type": "function",
                              "function": {"name": o.item["name"], "arguments": args}})  # fmt: skip
            out += self._event("response.output_item.done", output_index=o.index, item=item)
            items.append(item)
        if calls:
            self.said["tool_calls"] = calls
        status, incomplete = _status(self.finish)
        self.final = self.shell.response(status, items, self.usage, incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._event(kind, response=self.final)

    def failed(self, error: dict[str, Any]) -> bytes:
        r = self.shell.response("failed", [o.item for o in self.output], self.usage)
        r["error"] = {
            "code": str(error.get("code") or "server_error"),
            "message": str(error.get("message") or ""),
        }
        return self._event(
            "error", code=r["error"]["code"], message=r["error"]["message"], param=None
        ) + self._event("response.failed", response=r)


# -- one call ---------------------------------------------------------------------------------------------------

RESPONSES = "responses_api"  # Exchange.attrs key of a chat call that answers the Responses API


@dataclass(slots=True)
class ResponsesCall:
    """A chat call answering a Responses request: the Response it becomes, and the conversation it carries on
    (`messages`, without this request's instructions, which do not carry over to the next response)."""

    shell: Shell
    messages: list[dict[str, Any]] = field(default_factory=list)

    async def continued(self, payload: dict[str, Any], store: ResponseStore, who: str) -> dict[str, Any]:
        """The chat request with the previous response's conversation before this input (NotFound when there
        is no such response of `who`); `payload` itself when the request continues nothing."""
        messages = list(payload.get("messages") or [])
        start = 1 if self.shell.request.get("instructions") is not None else 0
        previous = self.shell.request.get("previous_response_id")
        if previous is None:
            self.messages = messages[start:]
            return payload
        if not isinstance(previous, str):
            raise BadRequest("previous_response_id must be a string.")
        history = (await store.get(previous, who)).conversation
        messages[start:start] = history
        self.messages = messages[start:]
        return {**payload, "messages": messages}


async def as_response(store: ResponseStore, ex: Exchange, rc: ResponsesCall, result: Result) -> None:
    """A chat answer (200) made into the Responses API's, and kept (unless `store: false`) for its principal: a
    streamed one before its last event is sent, so a continuation the client sends at once finds it."""
    keep = rc.shell.request.get("store", True) is not False and ex.principal is not None
    who = ex.principal.subject if ex.principal is not None else ""

    async def remember(response: dict[str, Any] | None, said: dict[str, Any]) -> None:
        if keep and response is not None:
            await store.put(Stored(who, response, [*rc.messages, said]))

    if result.stream is not None:
        tr = StreamTranslator(rc.shell)
        result.stream = translate_stream(result.stream, tr, lambda: remember(tr.final, tr.said))
        return
    try:
        chat = jsontext.loads(result.body or b"")
    except ValueError:
        return  # not an answer to translate: relayed as it came
    response, said = response_of(rc.shell, chat)
    await remember(response, said)
    result.body, result.payload = jsontext.dumps(response), None
