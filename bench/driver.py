"""What every load bench's run shares: its command-line options (rounds, c=1 and c=N bounds, JSON, profile, keep),
the header of its result (command, machine, agentgw source, background load at the start), py-spy profiles of the
gateway taken apart from the measured runs, and the end of a run (servers stopped, audit counted, temp dir gone).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import (
    PY,
    Env,
    audit_count,
    gateway_source,
    log,
)
from procs import background_now, machine


@dataclass
class LoadOptions:
    """What every load bench's options have (each bench's Options adds its own and may change the defaults)."""

    rounds: int = 3  # each load runs this many times per target, in rotating order; medians are reported
    c1_requests: int = 100_000  # count bound of one c=1 run (a safety bound: the time bound usually ends it)
    c1_seconds: float = 4.0  # time bound of one c=1 run
    concurrency: int = 32
    cN_requests: int = 200_000
    cN_seconds: float = 5.0
    warmup_seconds: float = 1.5
    profile: str | None = None  # directory for py-spy profiles of the gateway
    profile_seconds: float = 8.0
    json: str | None = None
    keep: bool = False


def load_arguments(ap: argparse.ArgumentParser, d: Any, quick: str) -> None:
    """The options of a load bench whose Options dataclass `d` gives the defaults; `quick` tells what --quick does."""
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON")
    ap.add_argument("--rounds", type=int, default=d.rounds)
    ap.add_argument("--c1-requests", type=int, default=d.c1_requests)
    ap.add_argument("--c1-seconds", type=float, default=d.c1_seconds)
    ap.add_argument("--concurrency", type=int, default=d.concurrency)
    ap.add_argument("--cN-requests", dest="cN_requests", type=int, default=d.cN_requests)
    ap.add_argument("--cN-seconds", dest="cN_seconds", type=float, default=d.cN_seconds)
    ap.add_argument("--warmup-seconds", type=float, default=d.warmup_seconds)
    ap.add_argument("--profile", metavar="DIR", help="also profile the gateway with py-spy; files go to DIR")
    ap.add_argument("--profile-seconds", type=float, default=d.profile_seconds)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs, audit file)")


def header(script: str, args: list[str], options: Any, nofile: int) -> dict[str, Any]:
    """The start of a run's result: how it was run, on what, and how busy the machine was before it started."""
    res: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", f"bench/{script}", *args]),
        "machine": machine(),
        "agentgw": gateway_source(),
        "nofile": nofile,
        "options": asdict(options),
        "background_cores_at_start": background_now(),
        "loadavg_at_start": os.getloadavg(),
    }
    log(f"{res['machine']}; agentgw {res['agentgw']}")
    log(
        f"background load before start: {res['background_cores_at_start']:.2f} cores (other processes), "
        f"loadavg {res['loadavg_at_start']}"
    )
    return res


def py_spy(profile: str | None) -> tuple[str, Path] | None:
    """The py-spy executable and the folder for profiles (made), or None (and a note) when py-spy is missing."""
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy).exists():
        log("py-spy not found: skipping the profile (pip install py-spy)")
        return None
    outdir = Path(profile or ".")
    outdir.mkdir(parents=True, exist_ok=True)
    return spy, outdir


def profiled(spy: str, pid: int, raw: Path, load: Callable[[], Any]) -> bool:
    """py-spy samples of `pid` (200 Hz, native frames, raw format, into `raw`) while `load()` runs; whether any
    were written."""
    cmd = [spy, "record", "-p", str(pid), "-r", "200", "--native", "--format", "raw", "-o", str(raw)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    try:
        load()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    return raw.exists()


@contextmanager
def running(env: Env, res: dict[str, Any], keep: bool) -> Iterator[None]:
    """A run's servers are stopped at its end whatever happens, its audit records counted, its temp dir removed
    (unless `keep`), and its wall time noted in `res`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        env.close()
        res["audit_records"] = audit_count(env.tmp / "audit.db")
        if not keep:
            shutil.rmtree(env.tmp, ignore_errors=True)
        res["elapsed_s"] = time.perf_counter() - started
