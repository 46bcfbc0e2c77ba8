"""Side by side with peers (not a test; never in `make test` or CI): agentgw against LiteLLM and Portkey on the LLM
plane (OpenAI chat completions, non-streaming and streaming) and against LiteLLM's MCP gateway and IBM ContextForge
on MCP `tools/call`, all in front of the same mock upstreams, in one run, the rounds interleaved, at c=1 and c=N.

Each peer comes from its registry package, installed on first use into ~/.cache/agentgw-bench-peers/<peer> (its own
venv or node_modules, never the repo). Reports req/s, p50/p99, the ratio to the upstream reached directly, and each
gateway's whole process tree: CPU while loaded (cores, µs per request) and RSS/PSS idle and after the loads.

`--workers` instead compares `agentgw serve --workers 1` with `--workers 2` on the chat load at c=N, the upstream
and the load generator pinned to the last core (taskset), the one-worker gateway to the other cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from harness import (
    CHAT,
    HERE,
    PY,
    UPSTREAM_KEY,
    CpuWatch,
    _json_out,
    gateway_source,
    log,
    raise_nofile,
    run_loadgen,
)
from peer_setup import (
    Bench,
    Gateway,
    install,
    start_agentgw,
    start_contextforge,
    start_litellm,
    start_portkey,
)
from procs import background_now, machine, tree, tree_rss_mib
from report import backgrounds, fmt, markdown, median_of, write_json

STREAM = {**CHAT, "stream": True}

# -- loads --------------------------------------------------------------------------------------------------------


@dataclass
class Options:
    rounds: int = 3
    concurrency: int = 32
    seconds: float = 4.0  # time bound of one run
    requests: int = 200_000  # count bound of one run
    warmup_seconds: float = 1.0
    peers: tuple[str, ...] = ("litellm", "portkey", "contextforge")
    planes: tuple[str, ...] = ("llm", "mcp")
    workers: bool = False
    json: str | None = None
    keep: bool = False


def loads(o: Options, plane: str) -> dict[str, tuple[str, int]]:
    """name → (kind, concurrency)."""
    c = o.concurrency
    if plane == "llm":
        return {
            "chat c=1": ("chat", 1),
            f"chat c={c}": ("chat", c),
            "stream c=1": ("ttfb", 1),
            f"stream c={c}": ("stream", c),
        }
    return {"tools/call c=1": ("mcp", 1), f"tools/call c={c}": ("mcp", c)}


def run_load(
    b: Bench, target: str, kind: str, c: int, seconds: float, n: int, prefix: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One bounded load against `target` (a gateway, or `direct`: the upstream itself) in its own process."""
    bound = ["-n", str(n), "--duration", str(seconds)]
    if kind == "mcp":
        url, tool, key = (b.mcp_url, "add", None) if target == "direct" else b.gateways[target].mcp  # type: ignore[misc]
        cmd = [
            *prefix,
            PY,
            str(HERE / "mcp_bench.py"),
            "load",
            "--url",
            url,
            "--era",
            "handshake",
            "--tool",
            tool,
        ]
        cmd += [*bound, "-c", str(c), *(["--key", key] if key else [])]
        if target != "direct" and b.gateways[target].sessionless:
            cmd.append("--sessionless")
        return _json_out(cmd, seconds + 60)
    if target == "direct":
        url, headers = f"{b.llm_base}/chat/completions", {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    else:
        url, headers = b.gateways[target].llm  # type: ignore[misc]
    body = orjson.dumps(CHAT if kind == "chat" else STREAM)
    mode = "ttfb" if kind == "ttfb" else "requests"
    r = run_loadgen(mode, url, body, [*bound, "-c", str(c)], seconds + 30, headers, prefix)
    if kind == "ttfb":  # sequential streams: time to the first byte is the latency that matters
        r["rps"] = r["requests"] / r["elapsed_s"] if r["elapsed_s"] else 0.0
        r.update(p50_ms=r["ttfb_p50_ms"], p99_ms=r["ttfb_p99_ms"])
    return r


def measured(
    b: Bench, target: str, kind: str, c: int, o: Options, prefix: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One load, plus the CPU of the target's whole process tree and the background load on the machine."""
    watch = CpuWatch(b, trees=tuple(b.gateways))
    r = run_load(b, target, kind, c, o.seconds, o.requests, prefix)
    cpu = watch.done()
    calls, elapsed = max(1, r.get("requests", 0)), max(r.get("elapsed_s", 0.0), 1e-9)
    if target != "direct":
        r["gw_cores"] = cpu[f"{target}_cpu_s"] / elapsed
        r["gw_cpu_us"] = cpu[f"{target}_cpu_s"] / calls * 1e6
    upstream = "mcp" if kind == "mcp" else "upstream"
    r["upstream_cores"] = cpu[f"{upstream}_cpu_s"] / elapsed
    r["loadgen_cores"] = cpu["loadgen_cpu_s"] / elapsed
    r["background_cores"] = cpu["background_cores"]
    return r


def phase(
    b: Bench, o: Options, plane: str, targets: list[str], prefix: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Every load of `plane` against every target, `rounds` times, the target order rotated each round. A target
    that serves no request of a load in its warm-up is not measured on it (`failed`: the errors it answered)."""
    ls = loads(o, plane) if not o.workers else {f"chat c={o.concurrency}": ("chat", o.concurrency)}
    failed: dict[str, dict[str, Any]] = {}
    for name, (kind, c) in ls.items():
        for t in targets:
            r = run_load(b, t, kind, c, o.warmup_seconds, 1_000_000, prefix)
            if not r["requests"]:
                failed.setdefault(name, {})[t] = r["errors"]
                log(f"warm-up {name} {t}: no request served ({r['errors']}); not measured")
    out: dict[str, Any] = {}
    for name, (kind, c) in ls.items():
        ok = [t for t in targets if t not in failed.get(name, {})]
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in ok}
        for rnd in range(o.rounds):
            k = rnd % len(ok)
            for t in ok[k:] + ok[:k]:
                r = measured(b, t, kind, c, o, prefix)
                runs[t].append(r)
                log(
                    f"round {rnd + 1} {name:16s} {t:12s}: {r['rps']:,.0f}/s, p50 {r['p50_ms']:.2f} ms, p99 "
                    f"{r['p99_ms']:.2f} ms, gateway {r.get('gw_cores', 0):.2f} cores, errors {r['errors'] or 0}, "
                    f"background {r['background_cores']:.2f} cores"
                )
        out[name] = {t: {**median_of(rs), "rounds": rs} for t, rs in runs.items()}
        out[name].update({t: {"failed": e, "rounds": []} for t, e in failed.get(name, {}).items()})
    return out


# -- report -------------------------------------------------------------------------------------------------------


def load_table(res: dict[str, Any]) -> str:
    head = [
        "load",
        "target",
        "req/s",
        "÷ direct",
        "p50 ms",
        "p99 ms",
        "gateway tree CPU, cores",
        "CPU µs/req",
        "upstream cores",
        "load generator cores",
        "errors",
    ]
    rows = []
    for name, by_target in res.items():
        direct = by_target.get("direct", {}).get("rps")
        for t, r in by_target.items():
            if "failed" in r:
                rows.append(
                    [name, t, f"not measured: every warm-up request failed ({r['failed']})", *[""] * 8]
                )
                continue
            ratio = f"{r['rps'] / direct:.2f}×" if direct and t != "direct" else "–"
            errors = sum(r["errors"].values())
            rows.append(
                [name, t, fmt(r["rps"]), ratio, fmt(r["p50_ms"]), fmt(r["p99_ms"]), fmt(r.get("gw_cores")),
                 fmt(r.get("gw_cpu_us")), fmt(r.get("upstream_cores")), fmt(r.get("loadgen_cores")),
                 str(errors) if errors else "0"]
            )  # fmt: skip
    return markdown(head, rows, "llrrrrrrrrr")


def memory_table(gateways: dict[str, Gateway]) -> str:
    head = ["gateway", "version", "processes", "start → ready s", "tree RSS idle MiB", "tree PSS idle MiB",
            "tree RSS after MiB", "tree PSS after MiB"]  # fmt: skip
    rows = []
    for g in gateways.values():
        idle, after = g.rss["idle"], g.rss.get("after", {})
        rows.append(
            [g.name, g.version, f"{idle['processes']:.0f}", f"{g.start_s:.2f}",
             fmt(idle["tree_rss_mib"]), fmt(idle["tree_pss_mib"]), fmt(after.get("tree_rss_mib")), fmt(after.get("tree_pss_mib"))]
        )  # fmt: skip
    return markdown(head, rows, "lllrrrrr")


def start_all(b: Bench, o: Options) -> dict[str, str]:
    """Every gateway of the run; the peers that could not be started, with why."""
    failed: dict[str, str] = {}
    starters: dict[str, Callable[[Bench], Gateway]] = {
        "litellm": start_litellm,
        "portkey": start_portkey,
        "contextforge": start_contextforge,
    }
    b.add(start_agentgw(b, "agentgw", "mcp" in o.planes))
    for peer in o.peers:
        try:
            b.add(starters[peer](b))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            failed[peer] = f"{type(exc).__name__}: {exc}"
            log(f"{peer} could not be started: {failed[peer]}")
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    ap.add_argument("--rounds", type=int, default=d.rounds)
    ap.add_argument("--concurrency", type=int, default=d.concurrency)
    ap.add_argument("--seconds", type=float, default=d.seconds, help="time bound of one run")
    ap.add_argument("--requests", type=int, default=d.requests, help="count bound of one run")
    ap.add_argument("--warmup-seconds", type=float, default=d.warmup_seconds)
    ap.add_argument(
        "--peers", default=",".join(d.peers), help="comma-separated: litellm, portkey, contextforge"
    )
    ap.add_argument("--planes", default=",".join(d.planes), help="comma-separated: llm, mcp")
    ap.add_argument("--workers", action="store_true", help="agentgw --workers 1 vs 2 instead of the peers")
    ap.add_argument("--install", action="store_true", help="only install the peers")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    a = ap.parse_args(argv)
    peers = tuple(p for p in a.peers.split(",") if p)
    if a.install:
        for p in peers:
            print(p, install(p))
        return 0
    o = Options(a.rounds, a.concurrency, a.seconds, a.requests, a.warmup_seconds, peers,
                tuple(a.planes.split(",")), a.workers, a.json, a.keep)  # fmt: skip
    raise_nofile()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop every server on the way out
    b = Bench(Path(tempfile.mkdtemp(prefix="agentgw-bench-peers-")))
    args = sys.argv[1:] if argv is None else argv
    res: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/peers.py", *args]),
        "machine": machine(),
        "agentgw": gateway_source(),
        "background_cores_at_start": background_now(),
        "loadavg_at_start": os.getloadavg(),
    }
    log(f"{res['machine']}; temp dir {b.tmp}; background {res['background_cores_at_start']:.2f} cores")
    started = time.perf_counter()
    try:
        if o.workers:
            res.update(workers_run(b, o))
        else:
            b.start_upstream()
            if "mcp" in o.planes:
                b.start_mcp()
            res["failed"] = start_all(b, o)
            for plane in o.planes:
                targets = ["direct"] + [n for n, g in b.gateways.items() if getattr(g, plane) is not None]
                res[plane] = phase(b, o, plane, targets)
        for g in b.gateways.values():
            g.rss["after"] = {**tree_rss_mib(g.proc.pid), "processes": len(tree(g.proc.pid))}
        res["gateways"] = {
            n: {"version": g.version, "start_s": g.start_s, "rss": g.rss} for n, g in b.gateways.items()
        }
    finally:
        b.close()
        if not o.keep:
            shutil.rmtree(b.tmp, ignore_errors=True)
    res["elapsed_s"] = time.perf_counter() - started
    for plane in ("llm", "mcp", "workers"):
        if plane in res:
            print(f"\n{plane}:\n{load_table(res[plane])}")
    if "pinning" in res:
        print(f"\ncores (taskset): {res['pinning']}")
    print("\n" + memory_table(b.gateways))
    for peer, why in res.get("failed", {}).items():
        print(f"\n{peer} not measured: {why}")
    bg = backgrounds({p: res[p] for p in ("llm", "mcp", "workers") if p in res})
    print(
        f"\n{res['machine']}; agentgw {res['agentgw']}; {res['elapsed_s']:.0f} s; background load from other "
        f"processes during measured runs: median {statistics.median(bg):.2f}, max {max(bg):.2f} cores "
        f"(before start {res['background_cores_at_start']:.2f}, loadavg {res['loadavg_at_start'][0]:.2f})"
    )
    write_json(o.json, res)
    return 0


def workers_run(b: Bench, o: Options) -> dict[str, Any]:
    """agentgw with 1 and 2 workers on the chat load at c=N; the upstream and the load generator on the last core,
    the one-worker gateway on the others, the two-worker gateway on all (there are no spare cores for it)."""
    ncpu = os.cpu_count() or 1
    last = str(ncpu - 1)
    pin = ("taskset", "-c", last) if ncpu > 1 and shutil.which("taskset") else ()
    rest = ("taskset", "-c", f"0-{ncpu - 2}") if pin else ()
    b.start_upstream(pin)
    b.add(start_agentgw(b, "agentgw-w1", False, 1, rest))
    b.add(start_agentgw(b, "agentgw-w2", False, 2))
    out = {"workers": phase(b, o, "llm", ["direct", "agentgw-w1", "agentgw-w2"], pin)}
    out["pinning"] = {"upstream+loadgen": last if pin else "none", "agentgw-w1": rest[2] if rest else "none",
                      "agentgw-w2": "none (all cores)"}  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
