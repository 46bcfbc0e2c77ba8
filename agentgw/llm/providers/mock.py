"""The in-process mock provider: deterministic chat completions, tool calls, embeddings and streams with
configurable latency, scripted replies and scripted failures. For the quickstart, examples and tests.

Rules: a last user message whose lines all read `call <name> {json args}` is a script: the mock calls exactly
those tools (offered or not, in that order; streamed with the arguments over several deltas). Else scripted
`replies` are cycled, or the last user message is echoed. When the request offers `tools` (and `tool_choice` is
not "none") and the last message is the user's, the mock calls the forced or first tool with arguments filled
from its schema's required properties. After a tool result it reports that result.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from agentgw import jsontext
from agentgw.exchange import Result
from agentgw.llm.providers.base import Call, ProviderError, is_retryable_status
from agentgw.registry import MockOptions
from agentgw.registry import Provider as ProviderConfig
from agentgw.tokens import _content_text, count_messages, count_tokens


def _split_tokens(text: str, per_chunk: int) -> list[str]:
    from agentgw.tokens import _default

    enc = _default._enc
    ids = enc.encode(text, disallowed_special=())
    return [enc.decode(ids[i : i + per_chunk]) for i in range(0, len(ids), per_chunk)] or [""]


def _fill_args(schema: Any, text: str) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if not isinstance(schema, dict):
        return args
    props = schema.get("properties") or {}
    for name in schema.get("required") or []:
        kind = (props.get(name) or {}).get("type") if isinstance(props, dict) else None
        defaults: dict[str, Any] = {"integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}
        args[str(name)] = defaults.get(kind, text) if isinstance(kind, str) else text
    return args


def _scripted(text: str) -> list[dict[str, Any]] | None:
    """The tool calls a `call <name> {json}` message (one per line) asks for, or None if it is not one."""
    calls = []
    for line in text.strip().splitlines():
        word, _, rest = line.strip().partition(" ")
        name, _, args = rest.strip().partition(" ")
        if word != "call" or not name:
            return None
        calls.append(_tool_call(name, args.strip() or "{}"))  # the arguments go out exactly as written
    return calls or None


def _tool_call(name: str, arguments: str) -> dict[str, Any]:
    call_id = "call_" + hashlib.sha256(f"{name}:{arguments}".encode()).hexdigest()[:16]
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _fn(tool: Any) -> dict[str, Any]:
    fn = tool.get("function") if isinstance(tool, dict) else None
    return fn if isinstance(fn, dict) else {}


class MockProvider:
    def __init__(self, cfg: ProviderConfig) -> None:
        self.name = cfg.name
        self.opts = cfg.mock or MockOptions()
        self._failures = [f.status for f in self.opts.failures for _ in range(f.times)]
        self._replies = itertools.cycle(self.opts.replies) if self.opts.replies else None
        self._seq = itertools.count(1)

    async def _before(self) -> None:
        if self._failures:
            status = self._failures.pop(0)
            raise ProviderError(
                f"mock failure {status}",
                status=status,
                retryable=is_retryable_status(status),
                body={"message": f"scripted mock failure {status}", "type": "mock_error"},
            )
        if self.opts.latency_ms:
            await asyncio.sleep(self.opts.latency_ms / 1000.0)

    def _answer(self, payload: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
        messages = payload.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        tools = payload.get("tools") or []
        choice = payload.get("tool_choice")
        if last.get("role") == "user":
            script = _scripted(_content_text(last.get("content")))
            if script is not None:
                return None, script
        if tools and choice != "none" and last.get("role") == "user":
            tool = tools[0]
            if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
                wanted = choice["function"].get("name")
                tool = next((t for t in tools if _fn(t).get("name") == wanted), tool)
            fn = _fn(tool)
            args = _fill_args(fn.get("parameters"), _content_text(last.get("content")))
            call_id = (
                "call_" + hashlib.sha256(jsontext.dumps(args) + str(fn.get("name")).encode()).hexdigest()[:16]
            )
            return None, [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": fn.get("name", ""), "arguments": jsontext.dumps(args).decode()},
                }
            ]
        if last.get("role") == "tool":
            return f"Tool result: {_content_text(last.get('content'))}", []
        if self._replies is not None:
            return next(self._replies), []
        text = _content_text(last.get("content")) if last.get("role") == "user" else ""
        return text or "Hello from the agentgw mock provider.", []

    async def chat(self, call: Call) -> Result:
        await self._before()
        text, tool_calls = self._answer(call.payload)
        prompt = count_messages(call.payload.get("messages"), call.payload.get("tools"))
        out_text = text if text is not None else "".join(c["function"]["arguments"] for c in tool_calls)
        completion = count_tokens(out_text or "")
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        cid = f"chatcmpl-mock-{next(self._seq)}"
        created = int(time.time())
        finish = "tool_calls" if tool_calls else "stop"
        if not call.stream:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = tool_calls
            body = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": call.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage,
            }
            return Result(body=jsontext.dumps(body))
        opts = call.payload.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        return Result(
            stream=self._stream(
                call, cid, created, text, tool_calls, finish, usage if include_usage else None
            ),
            media_type="text/event-stream",
        )

    async def _stream(
        self,
        call: Call,
        cid: str,
        created: int,
        text: str | None,
        tool_calls: list[dict[str, Any]],
        finish: str,
        usage: dict[str, Any] | None,
    ) -> AsyncIterator[bytes]:
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": call.model}

        def frame(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if usage is not None:
                chunk["usage"] = None
            return b"data: " + jsontext.dumps(chunk) + b"\n\n"

        delay = self.opts.chunk_delay_ms / 1000.0
        yield frame({"role": "assistant", "content": "" if text is not None else None})
        for index, tool_call in enumerate(tool_calls):
            fn = tool_call["function"]
            yield frame(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": tool_call["id"],
                            "type": "function",
                            "function": {"name": fn["name"], "arguments": ""},
                        }
                    ]
                }
            )
            for piece in _split_tokens(fn["arguments"], self.opts.chunk_tokens):
                if delay:
                    await asyncio.sleep(delay)
                yield frame({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        if not tool_calls:
            for piece in _split_tokens(text or "", self.opts.chunk_tokens):
                if delay:
                    await asyncio.sleep(delay)
                yield frame({"content": piece})
        yield frame({}, finish)
        if usage is not None:
            yield b"data: " + jsontext.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def embeddings(self, call: Call) -> Result:
        await self._before()
        inp = call.payload.get("input")
        items = inp if isinstance(inp, list) else [inp]
        data = []
        tokens = 0
        for i, item in enumerate(items):
            text = item if isinstance(item, str) else jsontext.dumps(item).decode()
            tokens += (
                count_tokens(text) if isinstance(item, str) else len(item) if isinstance(item, list) else 1
            )
            data.append(
                {"object": "embedding", "index": i, "embedding": _vector(text, self.opts.embedding_dims)}
            )
        body = {
            "object": "list",
            "data": data,
            "model": call.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Result(body=jsontext.dumps(body))


def _vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector derived from the text's hash."""
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    vals = [(v / 2**31) - 1.0 for v in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [round(v / norm, 6) for v in vals]
