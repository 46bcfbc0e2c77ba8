"""Where a plane's texts are: the Content protocol each plane implements for the guard stage (the texts of a
request and of an answer, how to say the answer was blocked, how to add system prompts), and Text, one editable
string inside a parsed payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agentgw.exchange import Exchange, Result
    from agentgw.guardrails.config import SystemPrompt
    from agentgw.guardrails.engine import GuardBlocked


@dataclass(slots=True)
class Text:
    """One string inside a parsed payload: `holder[key]`. `role` says what it is (`user`, `system`,
    `assistant`, `tool`, `argument`, `result`, `resource`, `prompt`, `message`, `artifact`)."""

    value: str
    holder: Any
    key: Any
    role: str = "user"

    def set(self, value: str) -> None:
        self.holder[self.key] = value
        self.value = value


def json_strings(holder: Any, key: Any, role: str, out: list[Text]) -> None:
    """Every string in the JSON value `holder[key]`, recursively (dict values and list items, not keys), in
    document order. Iterative: an upstream's deeply nested answer must not hit Python's recursion limit."""
    stack: list[tuple[Any, Any]] = [(holder, key)]
    while stack:
        h, k = stack.pop()
        value = h[k]
        if isinstance(value, str):
            out.append(Text(value, h, k, role))
        elif isinstance(value, dict):
            stack.extend((value, child) for child in reversed(value))
        elif isinstance(value, list):
            stack.extend((value, i) for i in reversed(range(len(value))))


class Content(Protocol):
    """A plane's view of its payloads for the guard stage. `request_texts` and `response_texts` return the
    texts in place (changing a Text changes the payload); the `*_changed` hooks are told when one changed, so
    the plane forwards the changed payload instead of the original bytes."""

    def request_texts(self, ex: Exchange) -> list[Text]: ...

    def request_changed(self, ex: Exchange) -> None: ...

    def response_texts(self, ex: Exchange, result: Result) -> list[Text]: ...

    def response_changed(self, ex: Exchange, result: Result) -> None: ...

    def blocked(self, ex: Exchange, result: Result, err: GuardBlocked) -> bool:
        """Rewrite `result` as this protocol's answer for content the gateway withheld (an MCP error result, an
        LLM choice with finish_reason content_filter…) and return True; False: the stage raises `err`."""
        ...

    def add_prompts(self, ex: Exchange, prompts: list[tuple[SystemPrompt, str]]) -> None:
        """Add rendered system prompts to the request (LLM chat only; other planes do nothing). A locked
        prompt with a caller's own system message raises GatewayError 400 `system_prompt_locked`."""
        ...
