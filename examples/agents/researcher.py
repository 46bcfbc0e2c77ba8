"""The quickstart's researcher: an A2A agent that answers from the agentgw docs, which it reads with the docs MCP
server's tools through the gateway (`docs__search`, `docs__read_doc`), under the child task the gateway gave it.

Launched by the gateway (registry/agents.yaml): `python researcher.py --port 9003`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

from a2a.types import AgentSkill
from common import gateway_mcp, main, use_tool

# Words that would match every page: left out of the search.
STOP_WORDS = "a an and are do does how i in is it of on or the to what when where which who why with"
STOP = frozenset(STOP_WORDS.split())


def slugs_of(found: str) -> list[str]:
    """The page slugs docs__search returned (a JSON list, or one slug per text block)."""
    try:
        value = json.loads(found)
    except ValueError:
        return [line for line in found.splitlines() if line]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


async def answer(question: str, task: str | None, progress: Callable[[str], Awaitable[None]]) -> str:
    words = [w for w in re.findall(r"[a-z0-9-]+", question.lower()) if w not in STOP]
    if not words:
        return f"The docs say nothing about {question!r}."
    async with gateway_mcp(task) as docs:  # one MCP session for both calls
        found = slugs_of(await use_tool(docs, "docs__search", {"query": " ".join(words)}))
        if not found:
            return f"The docs say nothing about {question!r}."
        await progress(f"reading {found[0]}")
        page = await use_tool(docs, "docs__read_doc", {"slug": found[0]})
    return f"From the docs page '{found[0]}': {page}"


SKILL = AgentSkill(
    id="research",
    name="research the docs",
    description="Answers a question from the agentgw docs (the quickstart's docs MCP server).",
    tags=["demo", "docs"],
    examples=["How do budgets work?"],
)

if __name__ == "__main__":
    main("researcher", "Answers questions from the agentgw docs (agentgw quickstart).", SKILL, answer, 9003)
