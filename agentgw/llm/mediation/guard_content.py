"""The LLM plane's texts for the guard stage: where the strings of a chat completion (or embeddings) request and
of a complete chat answer are, how a blocked answer reads (finish_reason `content_filter`, as Azure OpenAI
answers a filtered completion), and how the gateway's system prompts are added to a chat request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from agentgw import jsontext
from agentgw.errors import BadRequest
from agentgw.guardrails.content import Text

if TYPE_CHECKING:
    from agentgw.exchange import Exchange, Result
    from agentgw.guardrails.config import SystemPrompt
    from agentgw.guardrails.engine import GuardBlocked

CHANGED = "payload_changed"  # ex.attrs flag: the plane forwards the changed payload, not the original bytes
_ANSWER = "guard_answer"  # ex.attrs: the parsed answer whose texts were handed out (re-serialised if changed)
_PROMPTS = (
    "guard_prompts"  # ex.attrs: ids of the system messages the gateway added (its own text: not scanned)
)


class SystemPromptLocked(BadRequest):
    """The gateway's system prompt for this model is locked and the caller sent its own: refused, so a client
    cannot override the gateway's instructions. A denial on the record, not an error."""

    code = "system_prompt_locked"
    denial = True


def _parts(content: Any, holder: Any, role: str, out: list[Text]) -> None:
    """A message's `content`: a string, or the `text` of its `{"type": "text"}` parts."""
    if isinstance(content, str):
        out.append(Text(content, holder, "content", role))
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                out.append(Text(part["text"], part, "text", role))


def _arguments(message: dict[str, Any], out: list[Text]) -> None:
    """The `arguments` strings of a message's tool calls (and of the deprecated single `function_call`)."""
    calls = message.get("tool_calls")
    fns = [c.get("function") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    fns.append(message.get("function_call"))
    for fn in fns:
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            out.append(Text(fn["arguments"], fn, "arguments", "argument"))


class LLMContent:
    """The guard stage's view of `/v1/chat/completions` and `/v1/embeddings` (implements Content)."""

    def request_texts(self, ex: Exchange) -> list[Text]:
        payload = ex.payload or {}
        out: list[Text] = []
        if ex.operation == "embeddings":
            inp = payload.get("input")
            if isinstance(inp, str):
                out.append(Text(inp, payload, "input", "user"))
            elif isinstance(inp, list):  # token arrays are not text: nothing to read in them
                out += [Text(x, inp, i, "user") for i, x in enumerate(inp) if isinstance(x, str)]
            return out
        ours = ex.attrs.get(_PROMPTS, ())
        for message in payload.get("messages") or ():
            if not isinstance(message, dict) or id(message) in ours:
                continue
            role = message.get("role")
            _parts(message.get("content"), message, role if isinstance(role, str) else "user", out)
            if role == "assistant":
                _arguments(message, out)
        return out

    def request_changed(self, ex: Exchange) -> None:
        ex.attrs[CHANGED] = True

    def response_texts(self, ex: Exchange, result: Result) -> list[Text]:
        answer = self._answer(ex, result)
        out: list[Text] = []
        if answer is None:
            return out
        for choice in answer.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                _parts(message.get("content"), message, "assistant", out)
                _arguments(message, out)
        return out

    def response_changed(self, ex: Exchange, result: Result) -> None:
        answer = ex.attrs.get(_ANSWER)
        if answer is not None:
            result.body = jsontext.dumps(answer)
            if result.payload is not None:
                result.payload = answer

    def blocked(self, ex: Exchange, result: Result, err: GuardBlocked) -> bool:
        """Every choice withheld: empty content, no tool calls, finish_reason `content_filter`; usage kept (the
        answer was produced and is charged)."""
        answer = self._answer(ex, result)
        if answer is None or not isinstance(answer.get("choices"), list):
            return False
        choices = []
        for n, choice in enumerate(answer["choices"]):
            index = choice.get("index", n) if isinstance(choice, dict) else n
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": ""},
                    "finish_reason": "content_filter",
                    "logprobs": None,
                }
            )
        filtered = {**answer, "choices": choices}
        ex.attrs[_ANSWER] = filtered
        result.body = jsontext.dumps(filtered)
        if result.payload is not None:
            result.payload = filtered
        return True

    def add_prompts(self, ex: Exchange, prompts: list[tuple[SystemPrompt, str]]) -> None:
        payload = ex.payload
        messages = payload.get("messages") if payload is not None else None
        if not isinstance(messages, list):
            return
        if any(p.lock for p, _ in prompts) and any(
            isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages
        ):
            raise SystemPromptLocked(
                "This model's system prompt is set by the gateway and locked: remove the request's own "
                "system (or developer) messages."
            )
        head = [{"role": "system", "content": text} for p, text in prompts if p.position == "prepend"]
        tail = [{"role": "system", "content": text} for p, text in prompts if p.position == "append"]
        messages[:0] = head
        messages.extend(tail)
        ex.attrs[_PROMPTS] = {id(m) for m in (*head, *tail)}
        ex.attrs[CHANGED] = True

    @staticmethod
    def _answer(ex: Exchange, result: Result) -> dict[str, Any] | None:
        """The complete chat answer, parsed once (the provider's parse when it made one); None for an
        embeddings answer (vectors, no text) or anything that is not a chat completion."""
        if ex.operation != "chat" or result.status != 200:
            return None
        answer = ex.attrs.get(_ANSWER)
        if answer is None:
            answer = result.payload
            if not isinstance(answer, dict):
                try:
                    answer = orjson.loads(result.body or b"")
                except orjson.JSONDecodeError:
                    return None
            if not isinstance(answer, dict):
                return None
            ex.attrs[_ANSWER] = answer
        return answer if isinstance(answer, dict) else None
