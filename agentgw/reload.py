"""Registry hot reload: when a `registry/*.yaml` file changes (polled, like policies) or on SIGHUP, the files are
loaded and validated again; a registry with problems is not applied (every problem is logged, the running one
keeps serving); a valid, different one is handed to the gateway to apply in place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agentgw.configfile import Problem
from agentgw.registry import Registry
from agentgw.settings import Settings, load_registry, registry_files

log = logging.getLogger("agentgw.registry")

Signature = tuple[tuple[str, int, int], ...]


class RegistryWatch:
    def __init__(
        self,
        settings: Settings,
        check: Callable[[Registry], list[Problem]],
        apply: Callable[[Settings], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.check = check  # what only the assembled gateway can check (tool-name collisions)
        self.apply = apply
        self.error: list[str] = []  # the problems of the last attempt that was refused
        self.reloads = 0
        self._seen = self._signature()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def _signature(self) -> Signature:
        """Which files the globs match now (a new file counts), with their modification times and sizes."""
        out = []
        for path in registry_files(self.settings, []):
            with contextlib.suppress(OSError):
                st = path.stat()
                out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    async def reload(self) -> bool:
        """Load, validate, apply. False (and the running registry kept) if the files have any problem."""
        async with self._lock:  # a SIGHUP during a poll-triggered reload waits, then sees the same files
            self._seen = await asyncio.to_thread(self._signature)
            problems: list[Problem] = []
            registry = await asyncio.to_thread(load_registry, self.settings, problems)
            if not problems:
                problems = self.check(registry)
            if problems:
                self.error = [str(p) for p in problems]
                log.error("registry not reloaded (%d problems), keeping the running one", len(problems))
                for problem in self.error:
                    log.error("registry problem: %s", problem)
                return False
            self.error = []
            if registry == self.settings.registry_data:
                return True
            settings = self.settings.model_copy()
            settings._registry = registry
            self.settings = settings
            try:
                await self.apply(settings)
            except (
                Exception
            ):  # a part that failed to apply keeps its old entries; the others run the new ones
                log.exception("registry reload failed part-way")
                return False
            self.reloads += 1
            log.info("registry reloaded (#%d)", self.reloads)
            return True

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if await asyncio.to_thread(self._signature) != self._seen:
                await self.reload()

    def start(self, interval_s: float = 1.0) -> None:
        self._task = asyncio.create_task(self.watch(interval_s), name="registry-watch")

    def hangup(self) -> None:
        """SIGHUP: reload now (in a task: signal handlers cannot await)."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="registry-reload")
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def status(self) -> dict[str, Any]:
        return {"reloads": self.reloads, "problems": self.error}


_pending: set[asyncio.Task[bool]] = set()  # the loop keeps only weak references to tasks
