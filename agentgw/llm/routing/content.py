"""The LLM plane's content rules (`routes:` of a model alias): a request is sent to another alias by its estimated
prompt tokens, a request header, its `metadata`, or the caller's roles — run by the route stage, so authorization
has judged the alias asked for and the budget prices the alias routed to."""

from __future__ import annotations

import fnmatch
from typing import Any

from agentgw.exchange import Decision, Exchange
from agentgw.registry import Model, Route, RouteWhen
from agentgw.tokens import count_messages, count_tokens

PROMPT_TOKENS = (
    "prompt_tokens"  # Exchange.attrs: (the messages counted, their tokens), for the rules and budget
)


class ContentRoutes:
    """Callable over an Exchange of the LLM plane (chat and embeddings): rewrites its model when a route
    matches. Built only when some model has routes."""

    def __init__(self, models: list[Model]) -> None:
        self.routes = {m.name: m.routes for m in models if m.routes}

    @classmethod
    def of(cls, models: list[Model]) -> ContentRoutes | None:
        return cls(models) if any(m.routes for m in models) else None

    def __call__(self, ex: Exchange) -> None:
        payload = ex.payload
        if payload is None:
            return
        asked = payload.get("model")
        if not isinstance(asked, str):
            return
        routes = self.routes.get(asked)
        if not routes:
            return
        for i, route in enumerate(routes):
            if _matches(route.when, ex, payload):
                _send(ex, payload, asked, route, i)
                return


def _send(ex: Exchange, payload: dict[str, Any], asked: str, route: Route, index: int) -> None:
    ex.payload = {**payload, "model": route.model}
    ex.target = f"llm:{route.model}"
    ex.attrs["routed_from"] = asked
    ex.decisions.append(Decision("route", "info", f"{asked}.routes[{index}]", f"to {route.model}"))


def _matches(when: RouteWhen, ex: Exchange, payload: dict[str, Any]) -> bool:
    if when.roles:
        roles = ex.principal.roles if ex.principal is not None else ()
        if not any(r in roles for r in when.roles):
            return False
    for name, pattern in when.headers.items():
        value = ex.headers.get(name.lower())
        if value is None or not fnmatch.fnmatchcase(value, pattern):
            return False
    if when.metadata:
        meta = payload.get("metadata")
        if not isinstance(meta, dict):
            return False
        for key, pattern in when.metadata.items():
            value = meta.get(key)
            if not isinstance(value, str) or not fnmatch.fnmatchcase(value, pattern):
                return False
    if when.min_prompt_tokens is not None or when.max_prompt_tokens is not None:
        tokens = prompt_tokens(ex, payload)
        if when.min_prompt_tokens is not None and tokens < when.min_prompt_tokens:
            return False
        if when.max_prompt_tokens is not None and tokens > when.max_prompt_tokens:
            return False
    return True


def prompt_tokens(ex: Exchange, payload: dict[str, Any]) -> int:
    """The prompt as the gateway counts it (the budget's estimate), once per call."""
    known = ex.attrs.get(PROMPT_TOKENS)
    if known is not None and known[0] is payload.get("messages"):
        return int(known[1])
    if ex.operation == "embeddings":
        inp = payload.get("input")
        texts = inp if isinstance(inp, list) else [inp]
        n = sum(count_tokens(t) if isinstance(t, str) else 1 for t in texts)
    else:
        n = count_messages(payload.get("messages"), payload.get("tools"))
    # with the messages counted: the budget stage takes the count as long as nothing replaced them since
    ex.attrs[PROMPT_TOKENS] = (payload.get("messages"), n)
    return n
