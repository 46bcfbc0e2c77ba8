"""Launches and watches local upstream processes declared with `command:` in the registry.

Output lines go to the gateway log prefixed with the entry name; a process that dies is restarted with exponential
backoff; shutdown is SIGTERM, then SIGKILL. Running = spawned, or (with a probe) its port accepts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agentgw.orphans import RunFile, die_with_parent, reap

if TYPE_CHECKING:
    from agentgw.settings import Settings

log = logging.getLogger("agentgw.supervisor")

_LINE_LIMIT = 1 << 20  # longest output line kept whole; longer ones are logged in pieces


def local_command(command: list[str]) -> list[str]:
    """`python`/`python3` in a registry command means the gateway's own interpreter, so a server written with
    the packages agentgw installed runs without activating its virtualenv."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return list(command)


@dataclass
class Spec:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    probe: tuple[str, int] | None = None  # (host, port): running once it accepts TCP connections


@dataclass
class Watched:
    spec: Spec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    task: asyncio.Task[None] | None = None
    running: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None  # of the last run that ended
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set: stop this entry (shutdown or reload)


def probe_of(url: str | None) -> tuple[str, int] | None:
    """The (host, port) an entry's URL points at, to know when its process is ready to serve."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def specs_of(settings: Settings) -> list[Spec]:
    """Every registry entry with `command:` (see Registry.supervised), probed at its `url` / `base_url`."""
    specs = []
    for name, entry in settings.registry_data.supervised():
        url = getattr(entry, "url", None) or getattr(entry, "base_url", None)
        cwd = settings.resolve(entry.cwd) if entry.cwd else settings.base_dir
        specs.append(Spec(name, local_command(entry.command or []), dict(entry.env), cwd, probe_of(url)))
    return specs


class Supervisor:
    def __init__(
        self,
        specs: list[Spec],
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stop_timeout_s: float = 5.0,
        stable_after_s: float = 30.0,
        probe_interval_s: float = 0.1,
        run_dir: Path | None = None,
    ) -> None:
        self.watched = {s.name: Watched(s) for s in specs}
        self.run_dir = run_dir
        self.run_file: RunFile | None = None
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self.stable_after_s = stable_after_s
        self.probe_interval_s = probe_interval_s
        self._stop = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> Supervisor:
        """Every registry entry with `command:` (see Registry.supervised), probed at its `url` / `base_url`,
        with the timings of the `supervisor:` settings."""
        cfg = settings.supervisor
        return cls(
            specs_of(settings),
            backoff_s=cfg.backoff_s,
            max_backoff_s=cfg.max_backoff_s,
            stop_timeout_s=cfg.stop_timeout_s,
            stable_after_s=cfg.stable_after_s,
            run_dir=settings.resolve(cfg.run_dir) if cfg.run_dir else None,
        )

    async def start(self) -> None:
        """Reap what a crashed gateway left behind (it may hold the ports we need), then launch every entry."""
        self._stop.clear()
        if self.run_dir is not None and self.run_file is None:
            await reap(self.run_dir, self.stop_timeout_s)
            self.run_file = RunFile(self.run_dir)
        for w in self.watched.values():
            if w.task is None or w.task.done():
                self._launch(w)

    def _launch(self, w: Watched) -> None:
        w.stop.clear()
        w.task = asyncio.create_task(self._watch(w), name=f"supervise-{w.spec.name}")

    async def apply(self, specs: list[Spec]) -> None:
        """A reloaded registry: stop the entries removed or changed, launch the new and changed ones; an
        unchanged entry's process keeps running."""
        new = {s.name: s for s in specs}
        touched = [name for name, w in self.watched.items() if new.get(name) != w.spec]
        touched += [name for name in new if name not in self.watched]
        old = [self.watched.pop(name) for name in touched if name in self.watched]
        for w in old:
            w.stop.set()
        await asyncio.gather(*(w.task for w in old if w.task is not None), return_exceptions=True)
        for name in touched:
            if name in new:
                w = self.watched[name] = Watched(new[name])
                if not self._stop.is_set():
                    self._launch(w)

    @property
    def ready(self) -> bool:
        return all(w.running.is_set() for w in self.watched.values())

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "running": w.running.is_set(),
                "pid": w.process.pid if w.process and w.process.returncode is None else None,
                "restarts": w.restarts,
                "last_exit_code": w.exit_code,
            }
            for name, w in self.watched.items()
        }

    async def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after `stop_timeout_s`; return when all are gone."""
        self._stop.set()
        for w in self.watched.values():
            w.stop.set()
        tasks = [w.task for w in self.watched.values() if w.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.run_file is not None:
            self.run_file.remove()
            self.run_file = None

    # -- one entry ---------------------------------------------------------------------------------------------

    async def _watch(self, w: Watched) -> None:
        name = w.spec.name
        delay = self.backoff_s
        try:
            while not w.stop.is_set():
                process = await self._spawn(w)
                if process is not None:
                    code = await self._run(w, process)
                    if w.stop.is_set():
                        log.info("[%s] stopped (exit code %s)", name, code)
                        return
                    if time.monotonic() - w.started_at >= self.stable_after_s:
                        delay = self.backoff_s  # it ran fine for a while: start the backoff over
                    log.warning("[%s] exited with code %s; restarting in %.2fs", name, code, delay)
                else:
                    log.warning("[%s] restarting in %.2fs", name, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(w.stop.wait(), delay)
                    return  # stopped while waiting
                w.restarts += 1
                delay = min(delay * 2, self.max_backoff_s)
        except Exception:
            log.exception("[%s] supervision failed; the process is no longer watched", name)

    async def _spawn(self, w: Watched) -> asyncio.subprocess.Process | None:
        # Unbuffered Python output, so lines reach the log as they are printed (a spec may still override it).
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **w.spec.env}
        try:
            process = await asyncio.create_subprocess_exec(
                *w.spec.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=w.spec.cwd,
                limit=_LINE_LIMIT,
                start_new_session=True,  # its own process group: terminal signals reach us, not it
                preexec_fn=die_with_parent(),  # and it dies with us, even when we are SIGKILLed
            )
        except OSError as exc:
            log.error("[%s] cannot start %s: %s", w.spec.name, w.spec.command[0], exc.strerror or exc)
            return None
        w.process = process
        w.started_at = time.monotonic()
        if self.run_file is not None:
            self.run_file.started(w.spec.name, process.pid)
        log.info("[%s] started pid %d", w.spec.name, process.pid)
        return process

    async def _run(self, w: Watched, process: asyncio.subprocess.Process) -> int | None:
        """Watch one run until it exits or the supervisor stops (then terminate it). Returns its exit code."""
        assert process.stdout is not None
        pump = asyncio.create_task(self._pump(w.spec.name, process.stdout))
        probe = asyncio.create_task(self._probe(w)) if w.spec.probe else None
        if probe is None:
            w.running.set()
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(w.stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            w.running.clear()
            if not exited.done():
                await self._terminate(w, process)
            _signal_group(process.pid, signal.SIGKILL)  # anything it left behind in its group
            with contextlib.suppress(TimeoutError):  # the rest of its output (EOF once the group is gone)
                await asyncio.wait_for(asyncio.shield(pump), 1.0)
        except asyncio.CancelledError:
            _signal_group(process.pid, signal.SIGKILL)  # never leave an orphan behind
            raise
        finally:
            w.running.clear()
            if self.run_file is not None:
                self.run_file.ended(w.spec.name)
            for t in (pump, probe, exited, stopping):
                if t is not None and not t.done():
                    t.cancel()
        w.exit_code = process.returncode
        return process.returncode

    async def _terminate(self, w: Watched, process: asyncio.subprocess.Process) -> None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout_s)
        except TimeoutError:
            log.warning(
                "[%s] did not stop within %.1fs of SIGTERM; killing it", w.spec.name, self.stop_timeout_s
            )
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()

    async def _probe(self, w: Watched) -> None:
        """Running once the entry's port accepts a TCP connection."""
        assert w.spec.probe is not None
        host, port = w.spec.probe
        while True:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
            except (OSError, TimeoutError):
                await asyncio.sleep(self.probe_interval_s)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            w.running.set()
            log.info("[%s] ready on %s:%d", w.spec.name, host, port)
            return

    @staticmethod
    async def _pump(name: str, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than the limit: the reader has discarded it
                log.info("[%s] <an output line longer than %d bytes was dropped>", name, _LINE_LIMIT)
                continue
            if not line:
                return
            log.info("[%s] %s", name, line.decode("utf-8", "replace").rstrip())


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
