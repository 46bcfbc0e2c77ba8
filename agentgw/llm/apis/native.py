"""Passthrough of the Responses and Messages APIs to providers that serve them themselves (OpenAI-kind with
`responses_api: true`, Anthropic): the client's own request goes upstream but for the model name, and the answer
comes back as the provider sent it, metered from its own usage (a stream's live output for budget cuts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from agentgw import jsontext
from agentgw.errors import BadRequest, GatewayError
from agentgw.exchange import Exchange, Result, Usage
from agentgw.llm.apis.response_store import ResponseStore, Stored
from agentgw.llm.apis.responses import RESPONSES
from agentgw.llm.mediation.guard_content import CHANGED
from agentgw.llm.providers.base import Call, NativeRequest
from agentgw.llm.routing.router import Router
from agentgw.llm.routing.strategies import counted
from agentgw.llm.sse import STREAM_FAILURES, frame_data, stream_failure
from agentgw.llm.usage import estimate
from agentgw.registry import Model
from agentgw.stages.guard import stream_guard
from agentgw.tokens import count_tokens

NATIVE = "native_api"  # Exchange.attrs key: the NativeRequest of a call that may be passed through
PASSED = "passthrough"  # Exchange.attrs key (and audit record field): the API a call was passed through in
__all__ = ["NATIVE", "PASSED", "NativeRequest", "NativeStreamMeter", "forward", "usage_of"]


def passable(ex: Exchange, router: Router, model: Model, native: NativeRequest, tool_policy: bool) -> bool:
    """May this call go upstream as the client sent it? Only when every target serves the API itself and nothing
    the gateway does needs the chat view: no guardrail changed the request or reads the answer, no tool policy,
    and nothing the request guardrails could not see (parts the chat view leaves out) would go with it."""
    if tool_policy or ex.attrs.get(CHANGED) or stream_guard(ex) is not None:
        return False
    guards = ex.attrs.get("guards")
    if native.skipped and guards is not None and guards.request:
        return False  # parts the chat view left out were not scanned: they are refused, never sent unseen
    api = native.api
    return all(api in getattr(router.providers.get(t.provider), "native_apis", ()) for t in model.targets)


async def forward(
    ex: Exchange, router: Router, model: Model, native: NativeRequest, store: ResponseStore, go: bool
) -> Result | None:
    """The call passed through (`go`), or None when it is to be translated. A Responses request continuing a
    response the provider holds can only be passed through (400 `previous_response_not_portable` otherwise); one
    continuing a response the gateway translated is translated again (the gateway holds that conversation)."""
    who = ex.principal.subject if ex.principal is not None else ""
    previous = native.body.get("previous_response_id") if native.api == "responses" else None
    if isinstance(previous, str):
        held = await store.get(previous, who)  # 404 unless it is the caller's own
        if held.native and not go:
            raise BadRequest(
                f"Response '{previous}' is held by the provider, and this request cannot be passed through to it "
                "(a guardrail or the tool policy applies, or the model has targets that do not serve the "
                "Responses API): start a new conversation.",
                code="previous_response_not_portable",
            )
        if not held.native:
            go = False
    if not go:
        if native.skipped:
            raise native.skipped[0]
        return None
    ex.attrs[PASSED] = native.api
    ex.attrs.pop(RESPONSES, None)  # the answer is the provider's own: nothing to translate back
    stream = native.body.get("stream") is True
    call = Call(ex, "chat", ex.payload or {}, b"", model.targets[0].model, stream, native=native)
    result = await router.call(model, call)
    keep = native.api == "responses" and native.body.get("store") is not False and ex.principal is not None

    async def remember(response: dict[str, Any]) -> None:
        if keep and isinstance(response.get("id"), str):
            await store.put(Stored(who, response, [], native=True))

    if result.stream is not None:
        meter = NativeStreamMeter(ex, native.api, ex.payload or {}, remember)
        result.stream = meter.relay(result.stream)
        if any(t.tpm is not None for t in model.targets):
            result.stream = counted(result.stream, ex, router.routing)
        return result
    answer = result.payload
    ex.usage = usage_of(native.api, answer) or estimate(ex.payload or {}, "")
    router.routing.used(ex.attrs.get("target", ""), ex.usage.total_tokens)
    if isinstance(answer, dict):
        if isinstance(answer.get("model"), str):
            ex.attrs["response_model"] = answer["model"]
        await remember(answer)
    return result


def usage_of(api: str, answer: Any) -> Usage | None:
    """The provider's own usage in a Response (`responses`) or a Message (`messages`)."""
    u = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(u, dict) or not isinstance(u.get("input_tokens"), int):
        return None
    if api == "responses":
        cached = (u.get("input_tokens_details") or {}).get("cached_tokens") or 0
        reasoning = (u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
        return Usage(u["input_tokens"], int(u.get("output_tokens") or 0), int(cached), int(reasoning))
    cached = int(u.get("cache_read_input_tokens") or 0)
    created = int(u.get("cache_creation_input_tokens") or 0)
    # Anthropic's input_tokens leave out the cached and cache-writing parts: every input token is counted
    return Usage(u["input_tokens"] + cached + created, int(u.get("output_tokens") or 0), cached)


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + jsontext.dumps(data) + b"\n\n"


class NativeStreamMeter:
    """Relays a Responses or Messages event stream as it came, reading its usage and counting the output it
    carries (for a budget that watches the stream); a cut or a broken upstream ends it the API's own way."""

    def __init__(
        self,
        ex: Exchange,
        api: str,
        payload: dict[str, Any],
        on_final: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.ex, self.api, self.payload, self.on_final = ex, api, payload, on_final
        self.usage: Usage | None = None
        self.input_tokens: int | None = None  # messages: from message_start
        self.text: list[str] = []
        self.response: dict[str, Any] | None = None  # responses: the Response the stream is about
        self.final: dict[str, Any] | None = None  # responses: the completed one
        self.open_block: int | None = None  # messages: the content block being streamed
        self.seq = 0
        self.live = "stream_budget" in ex.attrs
        self.out_tokens = 0
        if self.live:
            ex.attrs["cut_tail"] = self.cut_tail

    def feed(self, frame: bytes) -> bytes:
        data = frame_data(frame)
        if not data or data == b"[DONE]":
            return frame
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return frame
        if not isinstance(event, dict):
            return frame
        mark = len(self.text)
        if self.api == "responses":
            self._responses(event)
        else:
            self._messages(event)
        if self.live:
            self.ex.attrs["out_tokens_before"] = self.out_tokens
            self.out_tokens += sum(count_tokens(t) for t in self.text[mark:])
        return frame

    def _responses(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if isinstance(event.get("sequence_number"), int):
            self.seq = event["sequence_number"]
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
            if isinstance(event.get("delta"), str):
                self.text.append(event["delta"])
        elif kind in ("response.created", "response.completed", "response.incomplete", "response.failed"):
            response = event.get("response")
            if isinstance(response, dict):
                self.response = response
                if kind != "response.created":
                    self.final = response
                    self.usage = usage_of("responses", response) or self.usage

    def _messages(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            got = usage_of("messages", event.get("message"))
            if got is not None:
                self.input_tokens = got.input_tokens
                self.usage = got
        elif kind == "content_block_start":
            self.open_block = event.get("index") if isinstance(event.get("index"), int) else None
        elif kind == "content_block_stop":
            self.open_block = None
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            piece = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
            if isinstance(piece, str):
                self.text.append(piece)
        elif kind == "message_delta":
            u = event.get("usage") or {}
            if isinstance(u.get("output_tokens"), int):
                base = self.usage or Usage()
                inp = base.input_tokens
                if isinstance(u.get("input_tokens"), int):
                    inp = u["input_tokens"] + int(u.get("cache_read_input_tokens") or 0)
                self.usage = Usage(inp, u["output_tokens"], base.cached_tokens)

    def final_usage(self) -> Usage:
        if self.usage is not None and (self.usage.output_tokens or not self.text):
            return self.usage
        guess = estimate(self.payload, "".join(self.text))
        if self.usage is not None:  # the input is known, the output is not (yet)
            return Usage(
                self.usage.input_tokens, guess.output_tokens, self.usage.cached_tokens, estimated=True
            )
        return guess

    def cut_tail(self) -> bytes:
        """The API's own clean end of a stream cut by the gateway (a budget ran out)."""
        u = self.final_usage()
        if self.api == "responses":
            r = dict(self.response or {"id": "resp_agentgw", "object": "response"})
            r.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
            r["usage"] = {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "total_tokens": u.total_tokens,
            }
            self.seq += 1
            return _event("response.incomplete", {"type": "response.incomplete", "sequence_number": self.seq,
                                                  "response": r})  # fmt: skip
        out = b""
        if self.open_block is not None:
            out += _event("content_block_stop", {"type": "content_block_stop", "index": self.open_block})
        delta = {"stop_reason": "max_tokens", "stop_sequence": None}
        out += _event("message_delta", {"type": "message_delta", "delta": delta,
                                        "usage": {"output_tokens": u.output_tokens}})  # fmt: skip
        return out + _event("message_stop", {"type": "message_stop"})

    def error_frame(self, err: GatewayError) -> bytes:
        if self.api == "responses":
            self.seq += 1
            return _event("error", {"type": "error", "sequence_number": self.seq, "code": err.code,
                                    "message": err.message, "param": None})  # fmt: skip
        return _event("error", {"type": "error", "error": {"type": "api_error", "message": err.message}})

    async def relay(self, upstream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for frame in upstream:
                out = self.feed(frame)
                if self.final is not None and self.on_final is not None:  # kept before the client sees it end
                    await self.on_final(self.final)
                    self.on_final = None
                yield out
        except STREAM_FAILURES as exc:
            err = stream_failure(exc)
            yield self.error_frame(err)
            raise err from None
        finally:
            self.ex.usage = self.final_usage()
            close = getattr(upstream, "aclose", None)
            if close is not None:
                await close()
