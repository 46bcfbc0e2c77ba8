"""Tool calls in a streamed chat completion: their deltas are held back, assembled per index, decided when the call
is complete (the next index starts, the choice finishes, or the stream ends), then released as they came or
rewritten without the calls the caller may not run.

Frames keep their order: once one is held, the frames after it wait behind it. Frames without tool calls pass at
once while nothing is held, so a stream without tool calls is relayed as before.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agentgw import jsontext
from agentgw.errors import UpstreamInvalidResponse
from agentgw.exchange import Exchange
from agentgw.llm.mediation.tool_policy import ToolPolicy, removed_note

Key = tuple[int, int]  # (choice index, tool call index)


class ToolCallContinued(UpstreamInvalidResponse):
    """A stream whose tool calls cannot be decided: a delta without an index, or one for a call already out."""


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    state: str = "pending"  # pending | allowed | stripped
    index: int = 0  # the index the client sees (calls after a stripped one move up)
    rewrite: bool = False  # its deltas cannot go out as they came (stripped, or moved up)


@dataclass(slots=True)
class _Held:
    frame: bytes
    obj: dict[str, Any]
    keys: list[Key]
    finishes: list[int]  # choices this frame finishes


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class ToolCallGuard:
    """One stream's tool calls. `feed` takes each parsed chunk with its bytes and returns what to send now."""

    def __init__(self, policy: ToolPolicy, ex: Exchange) -> None:
        self.policy = policy
        self.ex = ex
        self.calls: dict[Key, _Call] = {}
        self.queue: deque[_Held] = deque()
        self.changed = False  # a call was decided since the last release
        self.kept: dict[int, int] = {}  # choice → calls let through so far
        self.next: dict[int, int] = {}  # choice → the index the next call let through gets
        self.stripped: dict[int, list[dict[str, Any]]] = {}  # choice → calls removed (for the note)

    def feed(self, frame: bytes, obj: dict[str, Any]) -> bytes | None:
        keys: list[Key] = []
        finishes: list[int] = []
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            c = choice.get("index", 0)
            c = c if isinstance(c, int) else 0
            delta = choice.get("delta")
            if isinstance(delta, dict):
                if delta.get("function_call") is not None:
                    keys.append(self._add(c, -1, None, delta["function_call"]))  # legacy: one call, index -1
                calls = delta.get("tool_calls")
                if calls is not None and not isinstance(calls, list):
                    raise ToolCallContinued("upstream sent tool_calls that are not an array")
                for call in calls or ():
                    i = call.get("index") if isinstance(call, dict) else None
                    if not isinstance(i, int) or isinstance(i, bool) or i < 0:
                        raise ToolCallContinued("upstream sent a tool call delta without a valid index")
                    assert isinstance(call, dict)
                    keys.append(self._add(c, i, call.get("id"), call.get("function")))
            if choice.get("finish_reason") is not None:
                self._decide(c, None)
                finishes.append(c)
        if not keys and not self.queue:
            if finishes and any(self.stripped.get(c) for c in finishes):
                return self._render(_Held(frame, obj, keys, finishes))
            return frame
        blocked = bool(self.queue)
        self.queue.append(_Held(frame, obj, keys, finishes))
        if not self.changed and (blocked or keys):
            return None  # nothing was decided: the frame at the head still waits (a new call is pending)
        return self._release()

    def finish(self) -> bytes | None:
        """The stream ended: decide what is still pending (an unfinished call's arguments do not parse, so it is
        denied) and send what was held."""
        for c in {c for (c, _) in self.calls}:
            self._decide(c, None)
        return self._release()

    def _add(self, c: int, i: int, call_id: Any, fn: Any) -> Key:
        key = (c, i)
        call = self.calls.get(key)
        if call is None:
            if i >= 0:
                self._decide(c, i)  # a new index: the calls before it are complete
            call = self.calls[key] = _Call()
        elif call.state != "pending":
            # Its bytes are already out (or gone): a decision cannot be taken back, so the stream cannot go on.
            raise ToolCallContinued("upstream continued a tool call after it was complete")
        call.id += _str(call_id)
        if isinstance(fn, dict):
            call.name += _str(fn.get("name"))
            call.arguments.append(_str(fn.get("arguments")))
        return key

    def _decide(self, choice: int, before: int | None) -> None:
        """Decide the pending calls of `choice` (those with an index below `before`), in index order."""
        pending = sorted(
            k
            for k, call in self.calls.items()
            if k[0] == choice and call.state == "pending" and (before is None or k[1] < before)
        )
        for key in pending:
            call = self.calls[key]
            verdict = self.policy.check_call(self.ex, call.name, "".join(call.arguments))  # refuse: raises
            self.changed = True
            if verdict.allowed:
                call.state = "allowed"
                self.kept[choice] = self.kept.get(choice, 0) + 1
                if key[1] >= 0:
                    call.index = self.next.get(choice, 0)
                    self.next[choice] = call.index + 1
                    call.rewrite = call.index != key[1]
            else:
                call.state = "stripped"
                call.rewrite = True
                self.stripped.setdefault(choice, []).append({"function": {"name": call.name}})

    def _release(self) -> bytes | None:
        self.changed = False
        out: list[bytes] = []
        while self.queue and all(self.calls[k].state != "pending" for k in self.queue[0].keys):
            rendered = self._render(self.queue.popleft())
            if rendered:
                out.append(rendered)
        return b"".join(out) if out else None

    def _render(self, held: _Held) -> bytes | None:
        """The frame as it came, unless a call in it was stripped or renumbered, or it finishes a choice that lost
        calls (then a note comes first and, with no call left, the finish reason is `stop`)."""
        touched = False
        for key in held.keys:
            if self.calls[key].rewrite:
                touched = True
                break
        notes = [c for c in held.finishes if self.stripped.get(c)]
        if not touched and not notes:
            return held.frame
        obj = held.obj
        choices = []
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict):
                choice = self._rewrite(choice)
                if choice is None:
                    continue
            choices.append(choice)
        out = b""
        for c in notes:
            note = removed_note(self.stripped.pop(c))
            delta = {"index": c, "delta": {"content": note}, "finish_reason": None}
            chunk = {**obj, "choices": [delta]}
            if chunk.get("usage") is not None:
                chunk["usage"] = None  # the usage stays on the frame it came with
            out += b"data: " + jsontext.dumps(chunk) + b"\n\n"
        if choices or obj.get("usage"):
            out += b"data: " + jsontext.dumps({**obj, "choices": choices}) + b"\n\n"
        return out or None

    def _rewrite(self, choice: dict[str, Any]) -> dict[str, Any] | None:
        c = choice.get("index", 0)
        c = c if isinstance(c, int) else 0
        delta = choice.get("delta")
        finish = choice.get("finish_reason")
        if isinstance(delta, dict):
            delta = dict(delta)
            if "function_call" in delta and self.calls.get((c, -1), _Call()).state == "stripped":
                del delta["function_call"]
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                kept = []
                for call in calls:
                    mine = self.calls[(c, call["index"])]
                    if mine.state == "allowed":
                        kept.append(call if mine.index == call["index"] else {**call, "index": mine.index})
                if kept:
                    delta["tool_calls"] = kept
                else:
                    del delta["tool_calls"]
        if finish is not None and self.stripped.get(c) and not self.kept.get(c):
            finish = "stop"  # no call left: the answer is the note
        if not delta and finish is None:
            return None  # nothing left of this choice in this frame
        return {**choice, "delta": delta if delta is not None else {}, "finish_reason": finish}
