"""What /proc tells the benches: RSS, peak RSS and PSS of a process or of its whole tree (a gateway is its main
process, its audit writer and any workers), CPU seconds of processes and of reaped children, how busy the machine is
(other people's work included), and what machine it is.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from typing import Any

MIB = 1024 * 1024


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (bytes) from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def rss_mib(pid: int) -> float:
    return proc_status(pid)["VmRSS"] / MIB


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return float(sum(v) - idle), float(sum(v))


def background_now(seconds: float = 1.0) -> float:
    """Cores busy on the machine over `seconds` (before we start anything: other people's work)."""
    b0, t0 = machine_busy()
    time.sleep(seconds)
    b1, t1 = machine_busy()
    return (b1 - b0) / max(1.0, t1 - t0) * (os.cpu_count() or 1)


def machine() -> dict[str, Any]:
    """What a result was measured on: cores, CPU model, Python, kernel, memory."""
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
    }


# -- process trees (a gateway is its main process, its audit writer and any workers) -----------------------------


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo += [int(x) for x in fh.read().split()]
        except OSError:
            continue
    return out


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of `pids` summed (a process that ended meanwhile counts nothing)."""
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def pss(pid: int) -> int:
    """Proportional set size (bytes): pages shared with other processes count by share, so a tree's PSS sums."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("Pss:"))


def tree_rss_mib(pid: int) -> dict[str, float]:
    """RSS of the process `pid` and its peak (VmHWM); RSS and PSS of its whole tree (MiB)."""
    main = proc_status(pid)
    rss = pss_sum = 0
    for p in tree(pid):
        with contextlib.suppress(OSError, StopIteration):
            rss += proc_status(p)["VmRSS"]
            pss_sum += pss(p)
    return {
        "rss_mib": main["VmRSS"] / MIB,
        "peak_rss_mib": main["VmHWM"] / MIB,
        "tree_rss_mib": rss / MIB,
        "tree_pss_mib": pss_sum / MIB,
    }


def children_cpu() -> float:
    """CPU seconds of reaped children (the load generators)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
