"""The benchmark's Python load generator (aiohttp), run as its own process; prints one JSON result on stdout.

Modes: `requests` (non-streaming POSTs at a fixed concurrency; the fallback when wrk is absent), `ttfb`
(sequential streaming requests, time to the first body byte), `streams` (many long-lived slow streams at once).
Every loop is bounded by a request count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from typing import Any

import aiohttp
import orjson
import uvloop
from harness import raise_nofile


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    v = sorted(values_s)
    return {
        "p50_ms": percentile(v, 50) * 1000,
        "p90_ms": percentile(v, 90) * 1000,
        "p99_ms": percentile(v, 99) * 1000,
        "max_ms": (v[-1] if v else 0.0) * 1000,
        "mean_ms": (sum(v) / len(v) * 1000) if v else 0.0,
    }


def client(limit: int) -> aiohttp.ClientSession:
    """The load generators' HTTP client: `limit` keep-alive connections (0: no limit), no extra headers, no overall
    timeout (each request sets its own)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def run_requests(
    url: str, headers: dict[str, str], body: bytes, n: int, c: int, duration: float
) -> dict[str, Any]:
    """Closed loop: `c` workers POST until `n` requests are done or `duration` seconds pass."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    deadline = time.perf_counter() + duration
    timeout = aiohttp.ClientTimeout(total=10)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal issued
        while issued < n and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                    await resp.read()
                    ok = resp.status == 200
                    kind = f"status_{resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, kind = False, type(exc).__name__
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[kind] = errors.get(kind, 0) + 1

    async with client(c) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(c)))
        elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "errors": errors,
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        **summary_ms(latencies),
    }


async def run_ttfb(url: str, headers: dict[str, str], body: bytes, n: int, duration: float) -> dict[str, Any]:
    """Sequential streaming requests on one keep-alive connection: time to the first body byte, and to the end."""
    ttfb: list[float] = []
    total: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + duration
    timeout = aiohttp.ClientTimeout(total=10)
    async with client(1) as session:
        start = time.perf_counter()
        for _ in range(n):
            if time.perf_counter() >= deadline:
                break
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                    first = await resp.content.readany()
                    t1 = time.perf_counter()
                    rest = await resp.read()
                    t2 = time.perf_counter()
                    if resp.status != 200 or not first:
                        errors[f"status_{resp.status}"] = errors.get(f"status_{resp.status}", 0) + 1
                        continue
                    if not (first + rest).rstrip().endswith(b"[DONE]"):
                        errors["incomplete"] = errors.get("incomplete", 0) + 1
                        continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            ttfb.append(t1 - t0)
            total.append(t2 - t0)
        elapsed = time.perf_counter() - start
    t = summary_ms(ttfb)
    return {
        "requests": len(ttfb),
        "errors": errors,
        "elapsed_s": elapsed,
        **{f"ttfb_{k}": v for k, v in t.items()},
        **{f"total_{k}": v for k, v in summary_ms(total).items()},
    }


async def run_streams(
    url: str, headers: dict[str, str], body: bytes, count: int, chunks: int, ramp_s: float, duration: float
) -> dict[str, Any]:
    """Open `count` streams spread over `ramp_s` seconds; each must deliver `chunks` content frames and [DONE]."""
    done = 0
    errors: dict[str, int] = {}
    durations: list[float] = []
    ttfbs: list[float] = []
    active = 0
    peak_active = 0
    per_stream = aiohttp.ClientTimeout(total=duration, sock_connect=30)

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal done, active, peak_active
        await asyncio.sleep(ramp_s * i / max(1, count))
        t0 = time.perf_counter()
        active += 1
        peak_active = max(peak_active, active)
        try:
            async with session.post(url, data=body, headers=headers, timeout=per_stream) as resp:
                if resp.status != 200:
                    errors[f"status_{resp.status}"] = errors.get(f"status_{resp.status}", 0) + 1
                    return
                parts: list[bytes] = []
                async for data in resp.content.iter_any():
                    if not parts:
                        ttfbs.append(time.perf_counter() - t0)
                    parts.append(data)
                whole = b"".join(parts)
                if whole.count(b'"content":"tok "') < chunks or not whole.rstrip().endswith(b"[DONE]"):
                    errors["incomplete"] = errors.get("incomplete", 0) + 1
                    return
                done += 1
                durations.append(time.perf_counter() - t0)
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            active -= 1

    async with client(0) as session:
        start = time.perf_counter()
        await asyncio.gather(*(one(i, session) for i in range(count)))
        elapsed = time.perf_counter() - start
    return {
        "streams": count,
        "completed": done,
        "errors": errors,
        "peak_active": peak_active,
        "elapsed_s": elapsed,
        **{f"duration_{k}": v for k, v in summary_ms(durations).items()},
        **{f"ttfb_{k}": v for k, v in summary_ms(ttfbs).items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=["requests", "ttfb", "streams"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", required=True, help="request body (JSON text)")
    ap.add_argument("--header", action="append", default=[], help="Name: value (repeatable)")
    ap.add_argument("-n", type=int, default=1000, help="request (or stream) count bound")
    ap.add_argument("-c", type=int, default=1, help="concurrency (requests mode)")
    ap.add_argument("--duration", type=float, default=10.0, help="time bound, seconds")
    ap.add_argument("--chunks", type=int, default=30, help="content frames each stream must carry (streams)")
    ap.add_argument("--ramp", type=float, default=2.0, help="seconds over which streams are opened (streams)")
    args = ap.parse_args()
    raise_nofile()
    headers = {"Content-Type": "application/json"}
    for h in args.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()
    body = args.body.encode()
    if args.mode == "requests":
        work = run_requests(args.url, headers, body, args.n, args.c, args.duration)
    elif args.mode == "ttfb":
        work = run_ttfb(args.url, headers, body, args.n, args.duration)
    else:
        work = run_streams(args.url, headers, body, args.n, args.chunks, args.ramp, args.duration)
    out = uvloop.run(work)
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")


if __name__ == "__main__":
    main()
