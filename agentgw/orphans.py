"""Supervised children must not outlive a crashed gateway: each dies with its parent (PR_SET_PDEATHSIG on Linux),
and each start is written to a run file, so the next start reaps whatever a crash still left behind (a platform
without the parent-death signal, a child that outlived it)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger("agentgw.supervisor")

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGKILL the child when the gateway dies (Linux; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up now: the child does as little as possible
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the gateway died before the request took effect: nobody would kill us
            os._exit(1)

    return preexec


def identity(pid: int) -> tuple[int, list[str]] | None:
    """(start time in clock ticks since boot, command line) of a live process: together they tell a process
    apart from a later one that reuses its pid. None if there is no such process (or it is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": the name may hold spaces
    if fields[0] == b"Z":
        return None
    return int(fields[19]), [part.decode("utf-8", "surrogateescape") for part in cmdline.split(b"\0")[:-1]]


@dataclass(frozen=True)
class Child:
    name: str
    pid: int
    start: int
    command: list[str]


class RunFile:
    """`<run_dir>/supervised-<gateway pid>.json`: this gateway's identity and its live children, rewritten on
    every spawn and exit. One file per gateway process, so gateways sharing a config directory never reap each
    other's children: a file is stale only when the gateway that wrote it is gone."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        me = identity(os.getpid())
        self.owner = {"pid": os.getpid(), "start": me[0] if me else 0}
        self.path = run_dir / f"supervised-{os.getpid()}.json"
        self.children: dict[str, Child] = {}
        self._broken = False

    def started(self, name: str, pid: int) -> None:
        found = identity(pid)
        if found is not None:
            self.children[name] = Child(name, pid, found[0], found[1])
            self._write()

    def ended(self, name: str) -> None:
        if self.children.pop(name, None) is not None:
            self._write()

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _write(self) -> None:
        data = {"owner": self.owner, "children": [vars(c) for c in self.children.values()]}
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(data))
            tmp.replace(self.path)  # a crash mid-write never leaves half a file
        except OSError as exc:
            if not self._broken:  # once: the children still die with us, only the crash net is missing
                log.warning("cannot record supervised processes in %s: %s", self.run_dir, exc)
            self._broken = True


def stale(run_dir: Path) -> list[tuple[Path, list[Child]]]:
    """Run files whose gateway is gone, with the recorded children that are still alive as recorded."""
    out: list[tuple[Path, list[Child]]] = []
    if not run_dir.is_dir():
        return []
    for path in sorted(run_dir.glob("supervised-*.json")):
        try:
            data = orjson.loads(path.read_bytes())
            owner = data["owner"]
            found = identity(int(owner["pid"]))
            if found is not None and found[0] == owner["start"]:
                continue  # that gateway is still running: its children are its own business
            children = [Child(**c) for c in data["children"]]
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable run file %s: %s", path, exc)
            continue
        alive = [c for c in children if identity(c.pid) == (c.start, c.command)]
        out.append((path, alive))
    return out


async def reap(run_dir: Path, stop_timeout_s: float) -> list[Child]:
    """SIGTERM the process group of each stale child, SIGKILL what is left after `stop_timeout_s`; remove the
    stale run files. Returns the children it stopped."""
    found = await asyncio.to_thread(stale, run_dir)
    handles: dict[int, Child] = {}
    for child in (c for _, alive in found for c in alive):
        fd = _pidfd(child)
        if fd is not None:
            handles[fd] = child
            log.warning("[%s] pid %d outlived a gateway that is gone; stopping it", child.name, child.pid)
            _signal(child, signal.SIGTERM)
    try:
        left = await exits(list(handles), stop_timeout_s)
        for fd in left:
            log.warning("[%s] pid %d ignored SIGTERM; killing it", handles[fd].name, handles[fd].pid)
            _signal(handles[fd], signal.SIGKILL)
        await exits(left, stop_timeout_s)
    finally:
        for fd in handles:
            os.close(fd)
    for path, _ in found:
        with contextlib.suppress(OSError):
            path.unlink()
    return list(handles.values())


async def exits(pidfds: list[int], timeout_s: float) -> list[int]:
    """Wait until the processes behind `pidfds` have ended (a pidfd turns readable then), at most `timeout_s`;
    return those still running."""
    if not pidfds:
        return []
    loop = asyncio.get_running_loop()
    waits: dict[int, asyncio.Future[None]] = {fd: loop.create_future() for fd in pidfds}

    def ended(fut: asyncio.Future[None]) -> None:
        if not fut.done():
            fut.set_result(None)

    for fd, fut in waits.items():
        loop.add_reader(fd, ended, fut)
    try:
        await asyncio.wait(waits.values(), timeout=timeout_s)
    finally:
        for fd in waits:
            loop.remove_reader(fd)
    return [fd for fd, fut in waits.items() if not fut.done()]


def _pidfd(child: Child) -> int | None:
    """A handle on the recorded process itself, or None if it is gone or its pid now names another process
    (checked after opening: from then on the handle cannot be redirected by pid reuse)."""
    try:
        fd = os.pidfd_open(child.pid)
    except OSError:
        return None
    if identity(child.pid) != (child.start, child.command):
        os.close(fd)
        return None
    return fd


def _signal(child: Child, sig: signal.Signals) -> None:
    """Its whole group when it leads one (the supervisor starts each child in a new session), else just it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(child.pid) == child.pid:
            os.killpg(child.pid, sig)
        else:
            os.kill(child.pid, sig)
