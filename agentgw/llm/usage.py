"""Usage from provider answers (OpenAI shape), and tiktoken estimates when a provider reports none."""

from __future__ import annotations

from typing import Any

from agentgw.exchange import Usage
from agentgw.tokens import count_messages, count_tokens


def usage_from_openai(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    prompt = u.get("prompt_tokens")
    if not isinstance(prompt, int):
        return None
    completion = u.get("completion_tokens")
    pd = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=prompt,
        output_tokens=completion if isinstance(completion, int) else 0,
        cached_tokens=int(pd.get("cached_tokens") or 0) if isinstance(pd, dict) else 0,
        reasoning_tokens=int(cd.get("reasoning_tokens") or 0) if isinstance(cd, dict) else 0,
    )


def completion_text(choice_message: Any) -> str:
    """The text a completion produced (content plus tool-call names and arguments), for estimates."""
    if not isinstance(choice_message, dict):
        return ""
    parts: list[str] = []
    content = choice_message.get("content")
    if isinstance(content, str):
        parts.append(content)
    for call in choice_message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            parts.append(str(fn.get("name") or ""))
            parts.append(str(fn.get("arguments") or ""))
    return "".join(parts)


def estimate(payload: dict[str, Any], output_text: str) -> Usage:
    if "input" in payload and "messages" not in payload:  # embeddings
        inp = payload.get("input")
        texts = inp if isinstance(inp, list) else [inp]
        return Usage(input_tokens=sum(count_tokens(t) for t in texts if isinstance(t, str)), estimated=True)
    return Usage(
        input_tokens=count_messages(payload.get("messages"), payload.get("tools")),
        output_tokens=count_tokens(output_text),
        estimated=True,
    )


def usage_from_body(payload: dict[str, Any], body: bytes, parsed: Any = None) -> Usage:
    """Usage of a complete (non-streaming) answer: provider-reported, else estimated."""
    import orjson

    if parsed is None:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
    if isinstance(parsed, dict):
        got = usage_from_openai(parsed.get("usage"))
        if got is not None:
            return got
        choices = parsed.get("choices") or []
        text = "".join(completion_text(c.get("message")) for c in choices if isinstance(c, dict))
        return estimate(payload, text)
    return estimate(payload, "")
