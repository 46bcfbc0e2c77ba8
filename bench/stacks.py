"""Summarise py-spy collapsed stacks (`py-spy record --format raw [--native]`): where a profiled gateway's CPU goes.

Self time by layer (agentgw, uvicorn, aiohttp, event loop, garbage collector, socket syscalls, …), by innermost
Python function (native time included), and inclusive time of gateway functions. Idle waits that py-spy counts
as busy (the thread-pool worker blocked on its queue) are dropped. Run alone: `python bench/stacks.py FILE`.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# First match wins: path fragment of the innermost Python frame → layer name.
LAYERS: tuple[tuple[str, str], ...] = (
    ("/agentgw/audit/", "agentgw: audit"),
    ("/agentgw/stages/", "agentgw: stages"),
    ("/agentgw/llm/", "agentgw: llm plane + providers"),
    ("/agentgw/", "agentgw: core (http, pipeline, exchange)"),
    ("/uvicorn/", "uvicorn (HTTP server, Python)"),
    ("/aiohttp/", "aiohttp (upstream client, Python)"),
    ("/yarl/", "aiohttp (upstream client, Python)"),
    ("/multidict/", "aiohttp (upstream client, Python)"),
    ("/uvloop/", "event loop (uvloop, asyncio tasks)"),
    ("/asyncio/", "event loop (uvloop, asyncio tasks)"),
    ("/logging/", "logging"),
    ("/click/", "startup"),
)
# Native leaf function → layer (only with `--native`).
SYSCALLS = {
    "write": "syscalls: socket writes",
    "writev": "syscalls: socket writes",
    "send": "syscalls: socket writes",
    "sendmsg": "syscalls: socket writes",
    "read": "syscalls: socket reads",
    "recv": "syscalls: socket reads",
    "recvmsg": "syscalls: socket reads",
    "epoll_pwait": "event loop (uvloop, asyncio tasks)",
    "epoll_wait": "event loop (uvloop, asyncio tasks)",
    "epoll_ctl": "event loop (uvloop, asyncio tasks)",
    "getrandom": "syscalls: getrandom (os.urandom)",
    "getpid": "syscalls: getpid (asyncio running-loop check)",
    "connect": "syscalls: connect/accept/close",
    "accept4": "syscalls: connect/accept/close",
    "close": "syscalls: connect/accept/close",
}


def _parse(frame: str) -> tuple[str, str, bool]:
    """(function, file, is_python) of one collapsed frame."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), "", False
    file = m.group("file")
    return m.group("func"), file, file.endswith(".py") or (file == "agentgw")


def _short(file: str) -> str:
    for marker in (
        "site-packages/",
        "/lib/python3.11/",
        "/lib/python3.12/",
        "/lib/python3.13/",
        "/work/main/",
    ):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def layer_of(file: str) -> str:
    file = "/" + file.lstrip("/")
    for fragment, name in LAYERS:
        if fragment in file:
            return name
    return "other Python"


@dataclass
class Profile:
    total: int = 0
    idle: int = 0
    self_time: Counter[tuple[str, str]] = field(default_factory=Counter)
    inclusive: Counter[tuple[str, str]] = field(default_factory=Counter)
    layers: Counter[str] = field(default_factory=Counter)


def _is_idle(parsed: list[tuple[str, str, bool]]) -> bool:
    py = [p for p in parsed if p[2]]
    if not py:
        return False
    func, file, _ = py[-1]
    return (
        func == "_worker" and file.endswith("concurrent/futures/thread.py") and "_WorkItem" not in str(parsed)
    )


def load(path: Path) -> Profile:
    prof = Profile()
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count_s = raw.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        parsed = [_parse(f) for f in stack.split(";") if "(" in f]
        if not parsed:
            continue
        if _is_idle(parsed):
            prof.idle += count
            continue
        prof.total += count
        py = [(func, _short(file)) for func, file, is_py in parsed if is_py]
        leaf_func = parsed[-1][0]
        if any(func == "gc_collect_main" for func, _, _ in parsed):
            layer = "garbage collector (gc)"
        elif not parsed[-1][2] and leaf_func in SYSCALLS:
            layer = SYSCALLS[leaf_func]
        else:
            layer = layer_of(py[-1][1]) if py else "native (other)"
        prof.layers[layer] += count
        if py:
            prof.self_time[py[-1]] += count
        for key in set(py):
            prof.inclusive[key] += count
    return prof


def report(prof: Profile, top: int = 15) -> str:
    """A markdown summary: self time by layer, top functions by self time (innermost Python frame, native
    time included), and top gateway functions by inclusive time."""
    if prof.total == 0:
        return "(no samples)\n"
    pct = 100.0 / prof.total
    out = [
        f"{prof.total} busy samples ({prof.idle} idle thread-pool samples dropped)\n",
        "| layer (self time) | % |",
        "|---|---:|",
    ]
    out += [f"| {name} | {n * pct:.1f} |" for name, n in prof.layers.most_common()]
    out += ["", "| function (self, innermost Python frame) | file | % |", "|---|---|---:|"]
    out += [f"| `{f}` | {file} | {n * pct:.1f} |" for (f, file), n in prof.self_time.most_common(top)]
    out += ["", "| function (inclusive) | file | % |", "|---|---|---:|"]
    mine = [
        ((f, file), n)
        for (f, file), n in prof.inclusive.most_common()
        if file.startswith(("agentgw/", "aiohttp/", "uvicorn/protocols")) and f not in ("serve", "<module>")
    ]
    out += [f"| `{f}` | {file} | {n * pct:.1f} |" for (f, file), n in mine[:top]]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file", type=Path)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    print(report(load(args.file), args.top))


if __name__ == "__main__":
    main()
