"""Guardrails over a streamed chat completion: each choice's `delta.content` passes the StreamGuard's sliding
window (masked whole, pseudonyms restored even when a placeholder arrives in pieces), and a blocked answer ends
the stream the way a filtered one ends: `finish_reason: "content_filter"`, the usage chunk if asked for, [DONE].

Built only when a guard applies to the answer (`stream_guard(ex)`); otherwise the meter never calls in here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentgw import jsontext
from agentgw.exchange import Exchange, Usage
from agentgw.guardrails.engine import GuardBlocked
from agentgw.guardrails.stream import StreamGuard
from agentgw.pipeline import StopStream

CUT = "content_filter"


def _chunk(head: dict[str, Any], choices: list[dict[str, Any]], **extra: Any) -> bytes:
    return b"data: " + jsontext.dumps({**head, "choices": choices, **extra}) + b"\n\n"


def _says_something(choice: Any) -> bool:
    """Whether a rewritten choice still has anything to send: text, a role, tool calls, a finish…"""
    if not isinstance(choice, dict):
        return True  # not ours to judge: relayed as it came
    if choice.get("finish_reason") is not None or choice.get("logprobs") is not None:
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and any(v not in (None, "") for v in delta.values())


class ChatContentGuard:
    """One stream's content guard. `feed(frame, obj)` returns the frame to send now (the same bytes when its text
    passed unchanged, a rewritten chunk, or None when nothing of it is left to send); `flush()` the text still
    held when the stream ends. A blocking guard raises StopStream with the filtered ending."""

    __slots__ = ("ex", "finished", "head", "seen", "sg", "usage", "want_usage")

    def __init__(self, sg: StreamGuard, ex: Exchange, want_usage: bool, usage: Callable[[], Usage]) -> None:
        """`want_usage`: the client asked for the usage chunk; `usage`: the stream's usage so far (estimated)."""
        self.sg, self.ex = sg, ex
        self.want_usage, self.usage = want_usage, usage
        self.head: dict[str, Any] = {}
        self.seen: dict[Any, None] = {}  # choices in order of appearance
        self.finished: set[Any] = set()

    def feed(self, frame: bytes, obj: dict[str, Any]) -> bytes | None:
        if not self.head:
            self.head = {"object": "chat.completion.chunk"} | {
                k: obj.get(k) for k in ("id", "created", "model") if k in obj
            }
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return frame  # the usage chunk, or one without choices: no text in it
        changed = False
        try:
            for n, choice in enumerate(choices):
                if not isinstance(choice, dict):
                    continue
                i = choice.get("index")
                if not isinstance(i, int):  # a chunk without a usable index: its position names the choice
                    i = n
                self.seen.setdefault(i, None)
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
                out = self.sg.feed(i, text) if isinstance(text, str) and text else text
                if choice.get("finish_reason") is not None:
                    rest = self.sg.close(i)  # the held-back end of this choice goes out with its finish
                    self.finished.add(i)  # after the close: a block there still finishes it as filtered
                    if rest:
                        out = (out or "") + rest
                if out != text:
                    if not isinstance(delta, dict):
                        delta = choice["delta"] = {}
                    delta["content"] = out
                    changed = True
        except GuardBlocked as err:
            raise StopStream(CUT, self.blocked(err)) from None
        if not changed:
            return frame
        if obj.get("usage") is None and not any(_says_something(c) for c in choices):
            return None  # nothing but text, all of it held back for now
        return b"data: " + jsontext.dumps(obj) + b"\n\n"

    def flush(self) -> bytes:
        """A chunk with the text of every choice the stream left open (it ended without their finish)."""
        try:
            choices = [
                {"index": c, "delta": {"content": text}, "finish_reason": None}
                for c in self.sg.channels()
                if (text := self.sg.close(c))
            ]
        except GuardBlocked as err:
            raise StopStream(CUT, self.blocked(err)) from None
        return _chunk(self.head, choices) if choices else b""

    def blocked(self, err: GuardBlocked) -> bytes:
        """The filtered ending: each open choice finishes with `content_filter`, then usage (if asked), [DONE]."""
        self.ex.stream_cut = CUT
        head = self.head or {"id": "chatcmpl-agentgw", "object": "chat.completion.chunk", "created": 0}
        open_ = [c for c in self.seen if c not in self.finished] or ([] if self.seen else [0])
        out = b"".join(_chunk(head, [{"index": c, "delta": {}, "finish_reason": CUT}]) for c in open_)
        if self.want_usage:
            u = self.usage()
            usage = {
                "prompt_tokens": u.input_tokens,
                "completion_tokens": u.output_tokens,
                "total_tokens": u.total_tokens,
            }
            out += _chunk(head, [], usage=usage)
        return out + b"data: [DONE]\n\n"
