"""Gemini answers → OpenAI as pure functions: a complete `GenerateContentResponse` (`response_to_completion`), the
`streamGenerateContent` chunks (`StreamTranslator`), usage, finish reasons, blocked prompts, error bodies and
`batchEmbedContents` answers.
"""

from __future__ import annotations

import base64
import struct
from secrets import token_hex
from typing import Any

import orjson

from agentgw import jsontext
from agentgw.llm.providers import chat_shapes as chat
from agentgw.llm.providers.base import ProviderError, invalid_response, upstream_error
from agentgw.tokens import count_tokens

FILTERED = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
}

# google.rpc status names → the OpenAI error type a client expects beside the relayed status.
ERROR_TYPES = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "OUT_OF_RANGE": "invalid_request_error",
    "NOT_FOUND": "not_found_error",
    "UNAUTHENTICATED": "authentication_error",
    "PERMISSION_DENIED": "permission_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
}


def finish_reason(reason: Any, tool_calls: bool = False) -> str:
    """OpenAI finish_reason for a Gemini finishReason (Gemini says STOP after function calls too)."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "tool_calls" if tool_calls else "stop"


def usage_to_openai(meta: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage from `usageMetadata`: thoughts are completion tokens (and reasoning tokens), tool-use prompts
    are prompt tokens; cached content is already inside promptTokenCount."""
    prompt = chat.count(meta.get("promptTokenCount")) + chat.count(meta.get("toolUsePromptTokenCount"))
    thoughts = chat.count(meta.get("thoughtsTokenCount"))
    completion = chat.count(meta.get("candidatesTokenCount")) + thoughts
    cached = chat.count(meta.get("cachedContentTokenCount"))
    total = chat.count(meta.get("totalTokenCount")) or None
    return {
        **chat.usage(prompt, completion, cached, total),
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def call_id() -> str:
    return f"call_{token_hex(12)}"


def tool_call(part: dict[str, Any]) -> dict[str, Any] | None:
    """An OpenAI tool call for a `functionCall` part (its thought signature in `extra_content`, the way Google's
    OpenAI-compatible endpoint carries it); None for any other part."""
    fn = part.get("functionCall")
    if not isinstance(fn, dict):
        return None
    args = fn.get("args")
    out = chat.tool_call(
        fn["id"] if isinstance(fn.get("id"), str) and fn["id"] else call_id(),
        str(fn.get("name") or ""),
        jsontext.dumps(args if isinstance(args, dict) else {}).decode(),
    )
    if isinstance(part.get("thoughtSignature"), str):
        out["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return out


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _answer_text(part: dict[str, Any]) -> str | None:
    """The text of a part that belongs to the answer (thought summaries do not)."""
    text = part.get("text")
    return text if isinstance(text, str) and not part.get("thought") else None


def prompt_blocked(answer: dict[str, Any]) -> ProviderError | None:
    """A prompt Gemini refused to answer (promptFeedback.blockReason, no candidates): the request's content is
    at fault, so a 400 `content_filter` (like Azure OpenAI's filtered prompts), never retried."""
    feedback = answer.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if not reason or answer.get("candidates"):
        return None
    message = f"Gemini blocked the prompt ({reason})."
    body = {
        "message": message,
        "type": "invalid_request_error",
        "param": "messages",
        "code": "content_filter",
    }
    return ProviderError(message, status=400, retryable=False, body=body)


def response_to_completion(answer: dict[str, Any], model: str, created: int | None = None) -> dict[str, Any]:
    """The OpenAI `chat.completion` for a complete `GenerateContentResponse` (one choice per candidate)."""
    blocked = prompt_blocked(answer)
    if blocked is not None:
        raise blocked
    candidates = answer.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise invalid_response("the answer has no candidates")
    choices = []
    for position, candidate in enumerate(c for c in candidates if isinstance(c, dict)):
        parts = _parts(candidate)
        texts = [t for t in map(_answer_text, parts) if t is not None]
        calls = [c for c in map(tool_call, parts) if c is not None]
        index = candidate.get("index")
        finish = finish_reason(candidate.get("finishReason"), bool(calls))
        choices.append(
            chat.choice(
                index if isinstance(index, int) else position, chat.assistant_message(texts, calls), finish
            )
        )
    completion_id = f"chatcmpl-{answer['responseId']}" if answer.get("responseId") else "chatcmpl-gemini"
    meta = answer.get("usageMetadata")
    usage = usage_to_openai(meta) if isinstance(meta, dict) else None
    return chat.completion(completion_id, answer.get("modelVersion") or model, choices, created, usage)


def gemini_error(err: ProviderError) -> ProviderError:
    """A relayed Gemini error (`{"code": 400, "message", "status": "INVALID_ARGUMENT"}`) in the OpenAI shape:
    its status name becomes the type and a lower-cased code (`invalid_argument`), stable across messages."""
    body = err.body
    if isinstance(body, dict) and isinstance(body.get("status"), str):
        status = body["status"]
        err.body = {
            "message": str(body.get("message") or err.message),
            "type": ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": status.lower(),
        }
    return err


class StreamTranslator(chat.ChunkWriter):
    """Feed it the `data` of each `streamGenerateContent?alt=sse` event; it returns the OpenAI SSE frames to send.

    Every chunk is a whole `GenerateContentResponse`: text parts are deltas, a `functionCall` part arrives whole
    (one tool-call delta with its name and all its arguments), the last chunk carries `finishReason` and the
    final `usageMetadata`. Gemini sends no end event, so `end()` (at the end of the body) adds the usage chunk and
    `[DONE]`, or raises a retryable ProviderError when no candidate finished. An `error` object raises.
    """

    def __init__(
        self, model: str, include_usage: bool, secrets: list[str] | None = None, created: int | None = None
    ) -> None:
        super().__init__("chatcmpl-gemini", model, include_usage, secrets, created)
        self.usage: dict[str, Any] = {}
        self.calls: dict[int, int] = {}  # candidate → tool calls sent so far
        self.finished: set[int] = set()
        self.ended = False

    @property
    def done(self) -> bool:
        """Every candidate seen has finished: what follows cannot change the answer."""
        return bool(self.finished) and self.finished >= self.started

    def feed(self, data: bytes) -> list[bytes]:
        if not data or self.ended:
            return []
        try:
            answer = jsontext.loads(data)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise invalid_response("a stream event is not a JSON object")
        if isinstance(answer.get("error"), dict):
            code = answer["error"].get("code")
            raise gemini_error(upstream_error(code if chat.count(code) >= 400 else 502, data, self.secrets))
        blocked = prompt_blocked(answer)
        if blocked is not None:
            raise blocked
        if answer.get("responseId") and not self.started:
            self.id = f"chatcmpl-{answer['responseId']}"
        if isinstance(answer.get("modelVersion"), str) and not self.started:
            self.model = answer["modelVersion"]
        if isinstance(answer.get("usageMetadata"), dict):
            self.usage.update(answer["usageMetadata"])
        out: list[bytes] = []
        candidates = answer.get("candidates")
        for position, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
            if isinstance(candidate, dict):
                index = candidate.get("index")
                out += self._candidate(index if isinstance(index, int) else position, candidate)
        return out

    def _candidate(self, index: int, candidate: dict[str, Any]) -> list[bytes]:
        if index in self.finished:
            return []
        out = self._start(index)
        for part in _parts(candidate):
            text = _answer_text(part)
            call = tool_call(part)
            if text:
                out.append(self._delta({"content": text}, index=index))
            elif call is not None:
                number = self.calls.get(index, 0)
                self.calls[index] = number + 1
                out.append(self._delta({"tool_calls": [{"index": number, **call}]}, index=index))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason != "FINISH_REASON_UNSPECIFIED":
            self.finished.add(index)
            out.append(self._delta({}, finish_reason(reason, index in self.calls), index))
        return out

    def end(self) -> list[bytes]:
        """The tail after the last upstream chunk: the usage chunk (if asked for) and `[DONE]`."""
        if not self.done:
            raise ProviderError("upstream stream ended before a finishReason", status=502, retryable=True)
        if self.ended:
            return []
        self.ended = True
        return self._tail(usage_to_openai(self.usage))


# -- embeddings --------------------------------------------------------------------------------------------


def _encode(values: list[float]) -> str:
    """OpenAI's `encoding_format: base64`: little-endian float32s, base64."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def embeddings_to_openai(answer: dict[str, Any], payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The OpenAI embeddings list for a `batchEmbedContents` answer; usage from `usageMetadata` when Gemini
    sends it, else counted locally (Gemini's embeddings answers usually carry none)."""
    items = answer.get("embeddings")
    if not isinstance(items, list):
        raise invalid_response("the answer has no embeddings")
    as_base64 = payload.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise invalid_response("an embedding has no values")
        data.append(
            {"object": "embedding", "index": index, "embedding": _encode(values) if as_base64 else values}
        )
    meta = answer.get("usageMetadata")
    prompt = chat.count(meta.get("promptTokenCount")) if isinstance(meta, dict) else 0
    if not prompt:
        raw = payload.get("input")
        prompt = sum(count_tokens(t) for t in ([raw] if isinstance(raw, str) else raw or []))
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
