"""Guardrails over an A2A stream: an artifact streamed in chunks is one text (its chunks' text parts, in order,
through the StreamGuard's sliding window: a value split across chunks is masked whole, a blocked one never sent);
everything else (a status message, a Message, a whole Task, data parts) is checked whole as it comes.

Built only when a guard applies to the answer (`stream_guard(ex)`); the relay (mediate.py) then passes each
event through `event()` and ends the stream on GuardBlocked."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from agentgw.a2a.guard_content import message_texts, task_texts
from agentgw.guardrails.content import Text, json_strings
from agentgw.guardrails.stream import StreamGuard

# After these states the agent sends no more artifact chunks on this stream (terminal, or waiting for the caller):
# what is still held back goes out before the status update says so.
ENDS = frozenset(
    {
        "TASK_STATE_COMPLETED",
        "TASK_STATE_FAILED",
        "TASK_STATE_CANCELED",
        "TASK_STATE_REJECTED",
        "TASK_STATE_INPUT_REQUIRED",
        "TASK_STATE_AUTH_REQUIRED",
    }
)


class EventGuard:
    """One stream's guard. `event(ev)` rewrites the event's texts in place and returns the events to send before
    it (the held-back end of artifacts it closes); `flush()` the ends of artifacts still open when the stream
    ended. Both raise GuardBlocked."""

    __slots__ = ("_open", "_whole", "sg")

    def __init__(self, sg: StreamGuard) -> None:
        self.sg = sg
        # (taskId, artifactId) → contextId, for each artifact whose chunks are still coming
        self._open: dict[tuple[Any, Any], Any] = {}
        self._whole = 0

    def event(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        update = ev.get("artifactUpdate")
        if isinstance(update, dict):
            return self._artifact(update)
        out: list[Text] = []
        before: list[dict[str, Any]] = []
        status = ev.get("statusUpdate")
        if isinstance(status, dict):
            inner = status.get("status")
            if isinstance(inner, dict):
                if inner.get("state") in ENDS:
                    before = self.flush()
                message_texts(inner.get("message"), "message", out)
        task_texts(ev.get("task"), out)
        message_texts(ev.get("message"), "message", out)
        for t in out:
            self._whole_text(t)
        return before

    def flush(self) -> list[dict[str, Any]]:
        """An append chunk (the last) with the held-back text of each artifact still open."""
        events = [e for key in list(self._open) if (e := self._close(key)) is not None]
        self._open.clear()
        return events

    def _artifact(self, update: dict[str, Any]) -> list[dict[str, Any]]:
        artifact = update.get("artifact")
        if not isinstance(artifact, dict):
            return []
        key = (update.get("taskId"), artifact.get("artifactId"))
        before: list[dict[str, Any]] = []
        if update.get("append") is not True and key in self._open:
            # a new artifact of the same id replaces the old one: the old one's held end goes out first
            tail = self._close(key)
            if tail is not None:
                before.append(tail)
        self._open[key] = update.get("contextId")
        parts = artifact.get("parts")
        if not isinstance(parts, list):
            parts = []
        last: dict[str, Any] | None = None
        for part in parts:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                part["text"] = self.sg.feed(key, part["text"])
                last = part
            if "data" in part:  # structured, not a piece of the streamed text: checked whole
                data: list[Text] = []
                json_strings(part, "data", "artifact", data)
                for t in data:
                    self._whole_text(t)
        if update.get("lastChunk") is True:
            del self._open[key]
            rest = self.sg.close(key)
            if rest and last is not None:
                last["text"] += rest
            elif rest:
                artifact["parts"] = [*parts, {"text": rest}]
        return before

    def _close(self, key: tuple[Any, Any]) -> dict[str, Any] | None:
        rest = self.sg.close(key)
        ctx = self._open.pop(key, None)
        if not rest:
            return None
        task, artifact = key
        update = {
            "taskId": task or "",
            "contextId": ctx or "",
            "artifact": {"artifactId": artifact or "", "parts": [{"text": rest}]},
            "append": True,
            "lastChunk": True,
        }
        return {"artifactUpdate": update}

    def _whole_text(self, t: Text) -> None:
        self._whole += 1
        channel: Hashable = ("whole", self._whole)
        new = self.sg.feed(channel, t.value) + self.sg.close(channel)
        if new != t.value:
            t.set(new)
