"""The A2A plane's texts for the guard stage: the parts of the message a caller sends, and the agent's words in the
Message or Task(s) it answers (status message, artifacts, its own turns of the history). A blocked answer is an
A2A error (errors.py: InvalidParams carrying the guard's code); streams are guard_stream.py's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentgw.guardrails.content import Text, json_strings

if TYPE_CHECKING:
    from agentgw.exchange import Exchange, Result
    from agentgw.guardrails.config import SystemPrompt
    from agentgw.guardrails.engine import GuardBlocked

SENDS = frozenset({"SendMessage", "SendStreamingMessage"})
_TASKS = frozenset({"GetTask", "CancelTask"})  # answer one Task
USER_ROLES = frozenset({"ROLE_USER", "user"})


class _Joined:
    """The text parts of one parts list as one text: an artifact streamed in chunks keeps one part per chunk, and
    a value split between two of them must be seen whole. A changed text goes into the first part, the others are
    emptied (the parts stay, so their indexes and any metadata do)."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[dict[str, Any]]) -> None:
        self.parts = parts

    def __setitem__(self, key: str, value: str) -> None:
        self.parts[0][key] = value
        for part in self.parts[1:]:
            part[key] = ""


def part_texts(parts: Any, role: str, out: list[Text]) -> None:
    """The strings of a list of 1.0 Parts: the text parts' `text` (as one text), every string inside a data
    part's `data` (structured content says as much as prose); files (`raw`, `url`) and metadata are not text."""
    if not isinstance(parts, list):
        return
    texts = [p for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if len(texts) == 1:
        out.append(Text(texts[0]["text"], texts[0], "text", role))
    elif texts:
        out.append(Text("".join(p["text"] for p in texts), _Joined(texts), "text", role))
    for part in parts:
        if isinstance(part, dict) and "data" in part:
            json_strings(part, "data", role, out)


def message_texts(message: Any, role: str, out: list[Text]) -> None:
    if isinstance(message, dict):
        part_texts(message.get("parts"), role, out)


def task_texts(task: Any, out: list[Text]) -> None:
    """A Task's agent-side texts. The history's user turns are skipped: they are the caller's own messages (as the
    request guards let them through, masked where they masked), and blocking a task for what its caller once
    sent would make it unreadable to that caller for good; the agent's turns are its answers like any other."""
    if not isinstance(task, dict):
        return
    status = task.get("status")
    if isinstance(status, dict):
        message_texts(status.get("message"), "message", out)
    for artifact in task.get("artifacts") or ():
        if isinstance(artifact, dict):
            part_texts(artifact.get("parts"), "artifact", out)
    for message in task.get("history") or ():
        if isinstance(message, dict) and message.get("role") not in USER_ROLES:
            message_texts(message, "message", out)


class A2AContent:
    """The guard stage's view of the A2A plane (implements Content). Texts are edited in place: the params the
    agent gets are the exchange's own (`ex.payload` is the Call's params; the forward step serialises them after
    the stage ran, keeping the message's parts list), and the answer is `result.payload` itself, so neither
    `*_changed` hook has anything left to do."""

    def request_texts(self, ex: Exchange) -> list[Text]:
        out: list[Text] = []
        payload = ex.payload
        if ex.operation in SENDS and isinstance(payload, dict):
            message_texts(payload.get("message"), "user", out)
        return out

    def request_changed(self, ex: Exchange) -> None:
        return None

    def response_texts(self, ex: Exchange, result: Result) -> list[Text]:
        out: list[Text] = []
        answer = result.payload
        if not isinstance(answer, dict):
            return out
        op = ex.operation
        if op == "SendMessage":  # a SendMessageResponse: the Task or the agent's Message
            task_texts(answer.get("task"), out)
            message_texts(answer.get("message"), "message", out)
        elif op in _TASKS:
            task_texts(answer, out)
        elif op == "ListTasks":
            for task in answer.get("tasks") or ():
                task_texts(task, out)
        return out

    def response_changed(self, ex: Exchange, result: Result) -> None:
        return None

    def blocked(self, ex: Exchange, result: Result, err: GuardBlocked) -> bool:
        """A2A has no filtered form of a Task or Message: the stage raises and the caller gets the error."""
        return False

    def add_prompts(self, ex: Exchange, prompts: list[tuple[SystemPrompt, str]]) -> None:
        return None  # system prompts are the LLM plane's
