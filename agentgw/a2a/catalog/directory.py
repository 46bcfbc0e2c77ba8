"""What the catalog endpoints serve: one directory entry per agent (read from its card) and an agent's card as
served (rewritten, signed once per fetched card and base URL so its ETag stays put, fresh as long as the cache's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentgw.a2a.catalog.cards import served, served_cache_control
from agentgw.a2a.upstream.agent import AgentUpstream
from agentgw.errors import GatewayError

CARD_SUFFIX = "/.well-known/agent-card.json"
_MEMO_MAX = 16  # served cards kept per fetched card: one per base URL (Host header) a client used


async def directory_entry(name: str, up: AgentUpstream, base: str) -> dict[str, Any]:
    """Name, URLs, description, skills and version; `available: false` when the card cannot be fetched."""
    url = f"{base}/a2a/{name}"
    out: dict[str, Any] = {"name": name, "url": url, "card_url": url + CARD_SUFFIX}
    try:
        card = await up.card()
    except GatewayError:
        out["available"] = False
        return out
    out["available"] = True
    out["description"] = card.get("description") if isinstance(card.get("description"), str) else ""
    found = card.get("skills")
    skills: list[Any] = found if isinstance(found, list) else []
    out["skills"] = [
        {k: s[k] for k in ("id", "name", "description", "tags") if k in s}
        for s in skills
        if isinstance(s, dict)
    ]
    if isinstance(card.get("version"), str):
        out["version"] = card["version"]
    return out


async def served_card(
    up: AgentUpstream, base: str, rewrite: Callable[[dict[str, Any]], dict[str, Any]]
) -> tuple[bytes, dict[str, str]]:
    """The card's bytes and headers for a client that reached the gateway at `base`. The rewritten (and re-signed)
    card is kept with the fetched one: an ES256 signature differs each time it is made, and the ETag must stay
    the same while the agent's card does."""
    cached = await up.cached()
    key = f"served:{base}"
    made: tuple[bytes, dict[str, str]] | None = cached.memo.get(key)
    if made is None:
        if len(cached.memo) >= _MEMO_MAX:
            cached.memo.clear()
        made = cached.memo[key] = served(rewrite(cached.card))
    body, headers = made
    return body, {**headers, "cache-control": served_cache_control(up.cards.fresh_for(cached))}
