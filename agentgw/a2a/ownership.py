"""Task and context ids bound to the principal that created them (stand-in until the full store lands)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agentgw.settings import Settings


class Ownership(Protocol):
    async def bind(
        self, owner: str, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> bool: ...
    async def owner(
        self, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> str | None: ...
    async def owners(self, agent: str, task_ids: Sequence[str]) -> dict[str, str | None]: ...
    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


class MemoryOwnership:
    def __init__(self) -> None:
        self._ids: dict[tuple[str, str, str], str] = {}

    async def bind(
        self, owner: str, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> bool:
        keys = [(agent, kind, i) for kind, i in (("t", task_id), ("c", context_id)) if i]
        if any(self._ids.get(k, owner) != owner for k in keys):
            return False
        for k in keys:
            self._ids[k] = owner
        return True

    async def owner(
        self, agent: str, *, task_id: str | None = None, context_id: str | None = None
    ) -> str | None:
        if task_id:
            return self._ids.get((agent, "t", task_id))
        if context_id:
            return self._ids.get((agent, "c", context_id))
        return None

    async def owners(self, agent: str, task_ids: Sequence[str]) -> dict[str, str | None]:
        return {t: self._ids.get((agent, "t", t)) for t in task_ids}

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def make_ownership(settings: Settings) -> Ownership:
    return MemoryOwnership()
