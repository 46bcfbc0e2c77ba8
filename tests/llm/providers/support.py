"""What the provider tests (Anthropic, Bedrock, Gemini) share: the same OpenAI-side request pieces, and the
reading of the `chat.completion.chunk` frames a stream translator writes."""

from __future__ import annotations

from typing import Any

import orjson

from agentgw.llm.sse import frame_data

PNG = "iVBORw0KGgoAAAANSUhEUg=="

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def chunks_of(frames: list[bytes]) -> list[Any]:
    """The chunks (parsed) and the final `[DONE]` (as bytes) of a translator's frames, each one SSE data block."""
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    return [d if d == b"[DONE]" else orjson.loads(d) for f in frames if (d := frame_data(f)) is not None]
