"""The soak (issue #16): mixed LLM / MCP / A2A traffic at a steady rate through 3 replicas behind HAProxy
(scripts/cluster.py) for a bounded time, sampling every minute each replica's RSS, open fds and process-tree RSS
and each plane's p99; at the end a linear fit over the last 20 minutes says whether anything grows without bound.

    python scripts/soak.py [--minutes 30] [--rate 20] [--port 8300] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2  # what the mcp SDK's client takes
from a2a.client import ClientConfig, create_client
from a2a.helpers import new_text_message
from a2a.types import Role, SendMessageRequest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import cluster

KEY = "agw-demo-key"
AUTH = {"authorization": f"Bearer {KEY}"}
SHARES = {"llm": 0.6, "mcp": 0.3, "a2a": 0.1}  # of the total rate
MAX_IN_FLIGHT = 64  # per plane: a slow gateway makes the soak drop ticks (counted), never pile up
MCP_SESSIONS = 8  # MCP sessions open at a time
CALLS_PER_SESSION = 20
IDLE_S = 20  # after the load: the idle sample


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
                kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def sample(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    kids = children()
    out = {}
    for name, pid in pids.items():
        members = tree(pid, kids)
        tree_kib = 0
        for p in members:
            with contextlib.suppress(OSError):
                tree_kib += proc_rss_kib(p)
        out[name] = {
            "rss_mib": proc_rss_kib(pid) / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "tree_mib": tree_kib / 1024,
            "procs": len(members),
        }
    # everything the soak started (replicas, HAProxy, the upstreams), the soak's own process left out
    everything = 0
    for p in tree(os.getpid(), kids)[1:]:
        with contextlib.suppress(OSError):
            everything += proc_rss_kib(p)
    out["all"] = {
        "tree_mib": everything / 1024,
        "load1": os.getloadavg()[0],
    }  # the machine is shared: say how busy
    return out


@dataclass
class Plane:
    latencies: list[float] = field(default_factory=list)  # this minute's, seconds
    ok: int = 0
    errors: int = 0
    dropped: int = 0
    in_flight: int = 0
    last_error: str = ""


def p99(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000


class Load:
    def __init__(self, url: str) -> None:
        self.url = url
        self.planes = {name: Plane() for name in SHARES}
        self.task = f"soak-{uuid.uuid4().hex[:8]}"
        self.http = httpx.AsyncClient(
            base_url=url, headers=AUTH, timeout=30, limits=httpx.Limits(max_connections=64)
        )
        self.seq = 0
        self.stop = asyncio.Event()  # SIGINT / SIGTERM: end early, still report
        self.mcp_work: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
        self.a2a_clients: list[Any] = []  # one streaming, one not: made once (each fetches the agent card)

    async def open(self) -> None:
        for streaming in (False, True):
            self.a2a_clients.append(
                await create_client(
                    f"{self.url}/a2a/researcher",
                    client_config=ClientConfig(httpx_client=self.http, streaming=streaming),
                )
            )

    async def llm(self) -> None:
        self.seq += 1
        body: dict[str, Any] = {
            "model": "mock-fast",
            "messages": [{"role": "user", "content": f"soak {self.seq}"}],
            "max_tokens": 16,
        }
        headers = {"x-agentgw-task": f"{self.task}-{self.seq // 1000}"}  # a budgeted task, renewed every 1000
        if self.seq % 2:
            r = await self.http.post("/v1/chat/completions", json=body, headers=headers)
            r.raise_for_status()
            r.json()["choices"][0]["message"]["content"]
        else:
            async with self.http.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers
            ) as r:
                r.raise_for_status()
                text = b"".join([chunk async for chunk in r.aiter_bytes()])
                if b"[DONE]" not in text:
                    raise RuntimeError("stream ended without [DONE]")

    async def mcp(self) -> None:
        """One tool call, made by whichever pooled session takes it (its latency includes the wait for one)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.mcp_work.put(done)
        await done

    async def mcp_slot(self) -> None:
        """One pooled MCP session at a time: open, serve CALLS_PER_SESSION calls, close, open the next — so
        sessions come and go all through the soak (what could leak)."""
        while True:
            try:
                async with (
                    httpx2.AsyncClient(headers=AUTH, timeout=30) as http,
                    streamable_http_client(f"{self.url}/mcp", http_client=http) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    for _ in range(CALLS_PER_SESSION):
                        done = await self.mcp_work.get()
                        try:
                            result = await session.call_tool("docs__search", {"query": "budget"})
                        except Exception as exc:
                            done.set_exception(exc)
                            raise
                        if result.is_error:
                            done.set_exception(RuntimeError(f"tool error: {result.content}"))
                        else:
                            done.set_result(None)
            except Exception:  # counted by the call that failed; the slot opens a new session
                await asyncio.sleep(0.5)

    async def a2a(self) -> None:
        self.seq += 1
        client = self.a2a_clients[self.seq % 2]
        request = SendMessageRequest(message=new_text_message("How do budgets work?", role=Role.ROLE_USER))
        events = [e async for e in client.send_message(request)]
        if not events:
            raise RuntimeError("no A2A events")

    async def one(self, name: str) -> None:
        plane = self.planes[name]
        plane.in_flight += 1
        started = time.perf_counter()
        try:
            await asyncio.wait_for(getattr(self, name)(), 60)
        except Exception as exc:  # counted and shown: the soak measures, it does not stop at the first error
            plane.errors += 1
            plane.last_error = f"{type(exc).__name__}: {exc}"[:200]
        else:
            plane.ok += 1
            plane.latencies.append(time.perf_counter() - started)
        finally:
            plane.in_flight -= 1

    async def drive(self, name: str, rate: float, until: float, tasks: set[asyncio.Task[None]]) -> None:
        """Open loop at a fixed rate: a tick whose plane is saturated is dropped (counted)."""
        interval = 1.0 / rate
        next_at = time.monotonic()
        while next_at < until and time.monotonic() < until and not self.stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            if self.planes[name].in_flight >= MAX_IN_FLIGHT:
                self.planes[name].dropped += 1
                continue
            t = asyncio.create_task(self.one(name))
            tasks.add(t)
            t.add_done_callback(tasks.discard)


def slope(ys: list[float]) -> float:
    """Least-squares slope per sample (per minute)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in enumerate(ys)) / sum((x - mx) ** 2 for x in range(n))


async def soak(url: str, pids: dict[str, int], minutes: float, rate: float) -> list[dict[str, Any]]:
    load = Load(url)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, load.stop.set)
    await load.open()
    slots = [asyncio.create_task(load.mcp_slot()) for _ in range(MCP_SESSIONS)]
    started = time.monotonic()
    until = started + minutes * 60
    tasks: set[asyncio.Task[None]] = set()
    drivers = [asyncio.create_task(load.drive(n, rate * share, until, tasks)) for n, share in SHARES.items()]
    rows = [{"minute": 0, "procs": sample(pids), "planes": {}}]
    print(json.dumps(rows[0]), flush=True)
    last = {name: (0, 0, 0) for name in SHARES}
    for minute in range(1, int(minutes) + 1):
        with contextlib.suppress(TimeoutError):  # the minute is up, or a signal ended the soak early
            await asyncio.wait_for(load.stop.wait(), max(0.0, started + minute * 60 - time.monotonic()))
        planes = {}
        for name, plane in load.planes.items():
            ok, errors, dropped = (plane.ok - last[name][0], plane.errors - last[name][1],
                                   plane.dropped - last[name][2])  # fmt: skip
            last[name] = (plane.ok, plane.errors, plane.dropped)
            planes[name] = {"ok": ok, "errors": errors, "dropped": dropped, "per_s": round((ok + errors) / 60, 1),
                            "p99_ms": round(p99(plane.latencies), 1), "last_error": plane.last_error}  # fmt: skip
            plane.latencies.clear()
            plane.last_error = ""
        row = {"minute": minute, "procs": sample(pids), "planes": planes}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if load.stop.is_set():
            break
    load.stop.set()
    await asyncio.gather(*drivers)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    for slot in slots:
        slot.cancel()
    await asyncio.gather(*slots, return_exceptions=True)
    await load.http.aclose()
    # Idle again: what a leak would keep (pools and HAProxy's kept-alive connections to the replicas go in ~10 s)
    await asyncio.sleep(IDLE_S)
    idle = {"minute": "idle", "procs": sample(pids), "planes": {}}
    print(json.dumps(idle), flush=True)
    return [*rows, idle]


def verdict(rows: list[dict[str, Any]], window: int, rss_mib_per_min: float, fds_per_min: float) -> list[str]:
    """One line per replica and measure: its slope over the last `window` minutes against the threshold."""
    idle = [r for r in rows if r["minute"] == "idle"]
    rows = [r for r in rows if r["minute"] != "idle"]
    tail = rows[-window:] if len(rows) > window else rows[1:] if len(rows) > 2 else rows
    lines = []
    for name in rows[0]["procs"]:
        for key, limit in (("rss_mib", rss_mib_per_min), ("tree_mib", rss_mib_per_min), ("fds", fds_per_min)):
            if key not in rows[0]["procs"][name]:
                continue
            s = slope([r["procs"][name][key] for r in tail])
            flag = "GROWS" if s > limit else "flat"
            lines.append(f"{name} {key}: {s:+.3f}/min over the last {len(tail)} min (limit {limit}) {flag}")
    for r in idle:
        lines += [f"{n} idle after the load: {v.get('rss_mib', 0):.1f} MiB, {v.get('fds', '–')} fds "
                  f"(at the start: {rows[0]['procs'][n].get('rss_mib', 0):.1f} MiB, {rows[0]['procs'][n].get('fds', '–')} fds)"
                  for n, v in r["procs"].items() if n != "all"]  # fmt: skip
    return lines


def table(rows: list[dict[str, Any]], every: int = 5) -> str:
    """The markdown table docs/operations.md shows: every `every` minutes and the last one."""
    names = [n for n in rows[0]["procs"] if n != "all"]
    head = ("| min | " + " | ".join(f"{n} RSS MiB / tree MiB / fds" for n in names)
            + " | all procs MiB | LLM /s, p99 ms | MCP /s, p99 ms | A2A /s, p99 ms | errors | dropped |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = [r for r in rows if r["minute"] != "idle"]
    for r in rows:
        if r["minute"] % every and r is not rows[-1]:
            continue
        procs = " | ".join(
            f"{r['procs'][n]['rss_mib']:.1f} / {r['procs'][n]['tree_mib']:.1f} / {r['procs'][n]['fds']}"
            for n in names
        )
        planes = r["planes"]
        load = " | ".join(
            f"{planes[k]['per_s']}, {planes[k]['p99_ms']:.0f}" if k in planes else "–"
            for k in ("llm", "mcp", "a2a")
        )
        errors = sum(v["errors"] for v in planes.values())
        dropped = sum(v["dropped"] for v in planes.values())
        lines.append(
            f"| {r['minute']} | {procs} | {r['procs']['all']['tree_mib']:.0f} | {load} | {errors} | {dropped} |"
        )
    return "\n".join(lines)


def report(log: Path, args: argparse.Namespace) -> None:
    """`--report LOG`: the table and verdict again from a soak's printed rows (one JSON object a line)."""
    rows = [
        json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"minute"')
    ]  # idle too
    print(table(rows))
    print("\n".join(verdict(rows, args.window, args.rss_limit, args.fd_limit)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=20, help="requests per second, all planes together")
    ap.add_argument("--port", type=int, default=8300)
    ap.add_argument("--window", type=int, default=20, help="minutes at the end the growth verdict looks at")
    ap.add_argument("--rss-limit", type=float, default=0.5, help="MiB per minute")
    ap.add_argument(
        "--fd-limit", type=float, default=0.5, help="fds per minute (sampled fds move with the load)"
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--report", type=Path, help="print the table and verdict of a soak's log, run nothing")
    args = ap.parse_args()
    if args.report:
        report(args.report, args)
        return
    if not 0 < args.minutes <= 240 or not 0 < args.rate <= 200:
        raise SystemExit("soak: --minutes must be in (0, 240] and --rate in (0, 200]")
    with cluster(3, args.port) as info:
        group = info["group"]
        pids = {f"r{i}": p.pid for i, p in group.procs.items()}
        rows = asyncio.run(soak(info["url"], pids, args.minutes, args.rate))
    lines = verdict(rows, args.window, args.rss_limit, args.fd_limit)
    grows = any(line.endswith("GROWS") for line in lines)
    print(table(rows))
    print("\n".join(lines))
    print("verdict:", "something grows" if grows else "nothing grows beyond the limits")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "rows": rows, "verdict": lines}, indent=1
            )
        )
    raise SystemExit(1 if grows else 0)


if __name__ == "__main__":
    main()
