"""The provider protocol: one upstream call for one target, answered in the OpenAI shape.

A provider raises ProviderError; the router decides from `retryable` whether to retry, fail over, or relay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from agentgw import jsontext
from agentgw.exchange import Exchange, Result


@dataclass(slots=True)
class NativeRequest:
    """A Responses or Messages request to pass to a provider that serves that API itself (apis/native.py)."""

    api: str  # responses | messages
    body: dict[str, Any]  # the client's request as it came
    # what the chat translation left out (built-in or server tools, other items): the refusal a translated call gets
    skipped: list[Any] = field(default_factory=list)

    def for_model(self, model: str) -> bytes:
        return jsontext.dumps({**self.body, "model": model})


@dataclass(slots=True)
class Call:
    """What one attempt sends: the parsed routing view, the original bytes, and the upstream model name."""

    exchange: Exchange
    operation: str  # chat | embeddings
    payload: dict[str, Any]
    body: bytes
    model: str
    stream: bool = False
    dirty: bool = False  # the payload was changed (e.g. include_usage injected): re-serialise
    headers: dict[str, str] = field(default_factory=dict)  # extra upstream headers (trace context)
    native: NativeRequest | None = (
        None  # set: send this instead (provider.native), answered in its API's shape
    )

    def body_for_upstream(self) -> bytes:
        """The original bytes when nothing changed, else the payload with the upstream model name."""
        if not self.dirty and self.payload.get("model") == self.model:
            return self.body
        return jsontext.dumps({**self.payload, "model": self.model})


class ProviderError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool,
        timeout: bool = False,
        body: Any = None,
        invalid: bool = False,
    ) -> None:
        super().__init__(message)
        self.invalid = invalid  # a 200 that is not what the API promises (see llm.sse.invalid_response)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.timeout = timeout
        self.body = body  # the upstream error object (already scrubbed), relayed for non-retryable 4xx


def invalid_response(why: str) -> ProviderError:
    """A 200 whose body is not what the API promises (HTML, bad JSON, the wrong content type): the upstream is
    broken, like a 5xx (retried, failed over), and answered 502 `upstream_invalid_response` if it stays so."""
    return ProviderError(
        f"upstream sent an invalid response: {why}", status=502, retryable=True, invalid=True
    )


def is_retryable_status(status: int) -> bool:
    return status in (408, 409, 425, 429) or status >= 500


class Provider(Protocol):
    name: str

    async def chat(self, call: Call) -> Result: ...

    async def embeddings(self, call: Call) -> Result: ...


class NativeProvider(Protocol):
    """A provider that also serves another API itself (`native_apis`: responses, messages) for passthrough."""

    native_apis: frozenset[str]

    async def native(self, call: Call) -> Result: ...


_SECRETS = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|agw-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]+)")


def scrub(text: str, secrets: list[str] | None = None) -> str:
    """Remove credentials from upstream text before it reaches a client or a log."""
    for s in secrets or ():
        if s and len(s) >= 4:
            text = text.replace(s, "[redacted]")
    return _SECRETS.sub("[redacted]", text)


def upstream_error(status: int, raw: bytes, secrets: list[str]) -> ProviderError:
    """Turn an upstream error answer into a ProviderError with a scrubbed message and error object."""
    message = f"upstream answered {status}"
    err_obj: Any = None
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        err_obj = parsed.get("error", parsed)
        if isinstance(err_obj, dict) and isinstance(err_obj.get("message"), str):
            message = f"upstream answered {status}: {err_obj['message']}"
        elif isinstance(err_obj, str):
            message = f"upstream answered {status}: {err_obj}"
    elif raw:
        message = f"upstream answered {status}: {raw[:200].decode('utf-8', 'replace')}"
    message = scrub(message, secrets)
    if isinstance(err_obj, dict):
        err_obj = orjson.loads(scrub(jsontext.dumps(err_obj).decode(), secrets))
    return ProviderError(message, status=status, retryable=is_retryable_status(status), body=err_obj)
