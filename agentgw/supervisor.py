"""Launches and watches local upstream processes declared with `command:` in the registry.

Each process's stdout/stderr go to the gateway log under its entry name; a process that dies is restarted with
exponential backoff (reset after it has stayed up a while); on shutdown each gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("agentgw.supervisor")


@dataclass
class Spec:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass
class Watched:
    spec: Spec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    task: asyncio.Task[None] | None = None
    running: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    def __init__(
        self,
        specs: list[Spec],
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.watched = {s.name: Watched(s) for s in specs}
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self._stopping = False

    async def start(self) -> None:
        for w in self.watched.values():
            w.task = asyncio.create_task(self._watch(w), name=f"supervise-{w.spec.name}")

    @property
    def ready(self) -> bool:
        return all(w.running.is_set() for w in self.watched.values())

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "running": w.running.is_set(),
                "pid": w.process.pid if w.process and w.process.returncode is None else None,
                "restarts": w.restarts,
            }
            for name, w in self.watched.items()
        }

    async def _watch(self, w: Watched) -> None:
        delay = self.backoff_s
        while not self._stopping:
            env = {**os.environ, **w.spec.env}
            try:
                w.process = await asyncio.create_subprocess_exec(
                    *w.spec.command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=w.spec.cwd,
                    start_new_session=True,  # its own process group: signals from the terminal reach us, not it
                )
            except OSError as exc:
                log.error("[%s] cannot start %s: %s", w.spec.name, w.spec.command[0], exc.strerror)
            else:
                w.started_at = time.monotonic()
                w.running.set()
                log.info("[%s] started pid %d", w.spec.name, w.process.pid)
                await self._pump(w)
                code = await w.process.wait()
                w.running.clear()
                if self._stopping:
                    return
                log.warning("[%s] exited with code %s; restarting in %.1fs", w.spec.name, code, delay)
                if time.monotonic() - w.started_at > 30:
                    delay = self.backoff_s  # it ran fine for a while: start the backoff over
            w.restarts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)

    async def _pump(self, w: Watched) -> None:
        assert w.process is not None and w.process.stdout is not None
        name = w.spec.name
        while True:
            line = await w.process.stdout.readline()
            if not line:
                return
            log.info("[%s] %s", name, line.decode("utf-8", "replace").rstrip())

    async def stop(self) -> None:
        self._stopping = True
        for w in self.watched.values():
            p = w.process
            if p is not None and p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for w in self.watched.values():
            p = w.process
            if p is not None and p.returncode is None:
                try:
                    await asyncio.wait_for(p.wait(), self.stop_timeout_s)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    await p.wait()
            w.running.clear()
        for w in self.watched.values():
            if w.task is not None:
                w.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w.task
