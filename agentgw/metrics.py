"""A small Prometheus registry: counters and histograms in plain dicts keyed by label tuples, gauges read from
callbacks at scrape time, the standard `process_*` metrics, and the text exposition format (0.0.4). No locks:
one event loop per process updates it; formatting is paid at scrape time, not per request."""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

log = logging.getLogger("agentgw.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_SERIES = 5000  # per family: label sets past this are counted under `_other` (callers choose label values)
OTHER = "_other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

Labels = tuple[str, ...]


def _fmt(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return repr(value)


def _bound(value: float) -> str:
    return "+Inf" if value == math.inf else repr(float(value))


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _pairs(names: Sequence[str], values: Labels) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _labels(names: Sequence[str], values: Labels) -> str:
    pairs = _pairs(names, values)
    return "{" + pairs + "}" if pairs else ""


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.other: Labels = (OTHER,) * len(self.labelnames)

    def header(self) -> Iterator[str]:
        text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        yield f"# HELP {self.name} {text}"
        yield f"# TYPE {self.name} {self.kind}"

    def samples(self) -> Iterator[str]:
        return iter(())


class Counter(_Family):
    """A monotonic count per label set: `inc(("llm", "chat", "ok"))`."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1) -> None:
        values = self.values
        current = values.get(labels)
        if current is None:
            if len(values) >= MAX_SERIES:
                labels = self.other
                current = values.get(labels, 0)
            else:
                current = 0
        values[labels] = current + amount

    def get(self, labels: Labels) -> float:
        return self.values.get(labels, 0)

    def samples(self) -> Iterator[str]:
        for labels, value in list(self.values.items()):
            yield f"{self.name}{_labels(self.labelnames, labels)} {_fmt(value)}"


class Histogram(_Family):
    """Bucketed observations per label set (cumulative buckets are computed at scrape time)."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str], buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        super().__init__(name, help, labelnames)
        self.bounds = tuple(sorted(float(b) for b in buckets if b != math.inf))
        # per label set: [count in bucket 0, …, count above the last bound, sum]
        self.values: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        row = self.values.get(labels)
        if row is None:
            if len(self.values) >= MAX_SERIES:
                labels = self.other
                row = self.values.get(labels)
            if row is None:
                row = self.values[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def samples(self) -> Iterator[str]:
        names, bounds = self.labelnames, self.bounds
        les = [f'le="{_bound(b)}"' for b in (*bounds, math.inf)]
        for labels, row in list(self.values.items()):
            pairs = _pairs(names, labels)
            first = pairs + "," if pairs else ""
            running = 0.0
            for i, le in enumerate(les):
                running += row[i]
                yield f"{self.name}_bucket{{{first}{le}}} {_fmt(running)}"
            plain = "{" + pairs + "}" if pairs else ""
            yield f"{self.name}_sum{plain} {_fmt(row[-1])}"
            yield f"{self.name}_count{plain} {_fmt(running)}"


class Callback(_Family):
    """A value read when scraped (queue depths, counts kept by other objects). None: no sample this time."""

    def __init__(
        self,
        name: str,
        help: str,
        read: Callable[[], float | None],
        kind: str,
        labels: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name, help, tuple(labels or ()))
        self.kind = kind
        self.read = read
        self.series = name + _labels(self.labelnames, tuple((labels or {}).values()))

    def samples(self) -> Iterator[str]:
        try:
            value = self.read()
        except Exception:  # a broken source must not break the scrape
            log.exception("metric callback %s failed", self.name)
            return
        if value is not None:
            yield f"{self.series} {_fmt(float(value))}"


class Metrics:
    """The registry one gateway process exposes on `GET /metrics`."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def _add(self, family: _Family) -> None:
        if family.name in self.families:
            raise ValueError(f"metric {family.name} is already registered")
        self.families[family.name] = family

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        family = Counter(name, help, labelnames)
        self._add(family)
        return family

    def histogram(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        family = Histogram(name, help, labelnames, buckets)
        self._add(family)
        return family

    def gauge(
        self,
        name: str,
        read: Callable[[], float | None],
        help: str = "",
        labels: dict[str, str] | None = None,
    ) -> None:
        """A gauge read from `read()` at scrape time, e.g. `gauge("agentgw_audit_queue_depth", lambda: q.depth)`.
        `labels` are constant (e.g. a version)."""
        self._add(Callback(name, help or name, read, "gauge", labels))

    def counter_fn(self, name: str, read: Callable[[], float | None], help: str = "") -> None:
        """A counter kept elsewhere (a monotonic number some object owns), read at scrape time."""
        self._add(Callback(name, help or name, read, "counter"))

    def render(self) -> bytes:
        lines: list[str] = []
        for family in list(self.families.values()):
            lines.extend(family.header())
            lines.extend(family.samples())
        lines.append("")
        return "\n".join(lines).encode()


def add_process_metrics(m: Metrics) -> None:
    """The standard `process_*` metrics Prometheus clients export (read at scrape time; RSS and fds on Linux)."""
    started = _process_start()

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def rss() -> float | None:
        try:
            with open("/proc/self/statm", "rb") as fh:
                return int(fh.read().split()[1]) * _PAGE
        except OSError:
            return None

    def fds() -> float | None:
        try:
            return len(os.listdir("/proc/self/fd"))
        except OSError:
            return None

    m.counter_fn("process_cpu_seconds_total", cpu, "Total user and system CPU time spent in seconds.")
    m.gauge("process_resident_memory_bytes", rss, "Resident memory size in bytes.")
    m.gauge("process_open_fds", fds, "Number of open file descriptors.")
    m.gauge(
        "process_start_time_seconds",
        lambda: started,
        "Start time of the process since unix epoch in seconds.",
    )


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_IMPORTED = time.time()


def _process_start() -> float:
    """From /proc (boot time + the process's start in clock ticks), else when this module was imported."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith(b"btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED
