"""The LLM-plane benchmark (`make bench`): direct (client → upstream) vs floor (→ a minimal aiohttp proxy →) vs
gateway (client → agentgw → upstream), in one run, on 127.0.0.1. Not a test.

Reports cold start, idle RSS, non-streaming throughput and latency at c=1 and c=N, streaming TTFB, and many
long-lived slow streams through one gateway worker, as ratios against the targets; optionally profiles the
gateway with py-spy. Every server and the load generator run in their own processes (see bench/harness.py).
"""

from __future__ import annotations

import argparse
import shutil
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
from driver import LoadOptions, header, load_arguments, profiled, py_spy, running
from harness import (
    API_KEY,
    CHAT,
    HERE,
    MIB,
    PY,
    TARGETS,
    CpuWatch,
    Env,
    audit_section,
    log,
    raise_nofile,
    requests_run,
    run_loadgen,
)
from procs import proc_status, rss_mib
from report import Layout, Row, finish, median_of


@dataclass
class Options(LoadOptions):
    ttfb_requests: int = 2_000
    ttfb_seconds: float = 3.0
    ttfb_chunks: int = 5
    streams: int = 2_000
    stream_seconds: int = 30  # each stream sends one chunk a second for this long
    stream_ramp: float = 5.0  # seconds over which the streams are opened
    cold_starts: int = 3
    loadgen: str = "auto"  # auto | wrk | aiohttp
    strict: bool = False
    budgets: str = "off"
    audit: str = "sqlite"
    tool_policy: str = "off"


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = Options()
    load_arguments(ap, d, "smoke run (~1 minute): small counts, short streams")
    ap.add_argument("--ttfb-requests", type=int, default=d.ttfb_requests)
    ap.add_argument("--ttfb-seconds", type=float, default=d.ttfb_seconds)
    ap.add_argument("--streams", type=int, default=d.streams, help="long-lived streams (0 skips the phase)")
    ap.add_argument("--stream-seconds", type=int, default=d.stream_seconds)
    ap.add_argument("--stream-ramp", type=float, default=d.stream_ramp)
    ap.add_argument("--cold-starts", type=int, default=d.cold_starts)
    ap.add_argument("--loadgen", choices=["auto", "wrk", "aiohttp"], default=d.loadgen)
    ap.add_argument(
        "--budgets",
        choices=["off", "memory", "redis"],
        default="off",
        help="put a task budget on every gateway call (memory or redis ledger)",
    )
    ap.add_argument(
        "--audit",
        choices=["off", "sqlite", "postgres"],
        default="sqlite",
        help="the gateway's audit store (postgres: $AGENTGW_BENCH_PG, default the local `test` database)",
    )
    ap.add_argument(
        "--tool-policy",
        choices=["off", "filter", "refuse"],
        default="off",
        help="the gateway's llm.tool_policy (tool calls inside LLM traffic; see bench/llm_tools.py for its parts)",
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    a = ap.parse_args(argv)
    o = Options(**{k: v for k, v in vars(a).items() if k != "quick"})
    if a.quick:
        o.rounds, o.c1_requests, o.c1_seconds = 1, 3_000, 2.0
        o.cN_requests, o.cN_seconds = 30_000, 2.0
        o.ttfb_requests, o.ttfb_seconds = 300, 2.0
        o.streams, o.stream_seconds, o.stream_ramp = min(o.streams, 300), 5, 1.0
        o.cold_starts, o.warmup_seconds, o.profile_seconds = 1, 0.5, 3.0
    return o


# -- phases ----------------------------------------------------------------------------------------------------


def phase_cold_start(o: Options, env: Env) -> dict[str, Any]:
    """Spawn → 200 from /readyz, `cold_starts` times; idle RSS one second after each (the last one stays up)."""
    runs: list[float] = []
    idle: list[float] = []
    for i in range(max(1, o.cold_starts)):
        if i:
            env.stop_gateway()
        runs.append(env.start_gateway())
        time.sleep(1.0)
        idle.append(rss_mib(env.pid("gateway")))
        log(f"cold start {i + 1}: {runs[-1]:.3f} s to /readyz, idle RSS {idle[-1]:.1f} MiB")
    floor_s = env.start_floor()
    time.sleep(1.0)
    return {
        "runs_s": runs,
        "median_s": statistics.median(runs),
        "max_s": max(runs),
        "idle_rss_mib": idle,
        "idle_rss_median_mib": statistics.median(idle),
        "floor_start_s": floor_s,
        "floor_idle_rss_mib": rss_mib(env.pid("floor")),
    }


def measured(env: Env, target: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one load; add the CPU per request of the serving process(es) and the machine's background load."""
    watch = CpuWatch(env)
    r = run()
    cpu = watch.done()
    n = max(1, r.get("requests", 0))
    if target != "direct":
        r["server_cpu_us_per_req"] = cpu[f"{target}_cpu_s"] / n * 1e6
    r["upstream_cpu_us_per_req"] = cpu["upstream_cpu_s"] / n * 1e6
    r["loadgen_cpu_us_per_req"] = cpu["loadgen_cpu_s"] / n * 1e6
    r["background_cores"] = cpu["background_cores"]
    return r


def phase_load(o: Options, env: Env, tool: str) -> dict[str, Any]:
    stream_body = orjson.dumps({**CHAT, "stream": True, "bench": {"chunks": o.ttfb_chunks, "delay_ms": 0}})
    c = o.concurrency
    ttfb_args = ["-n", str(o.ttfb_requests), "--duration", str(o.ttfb_seconds)]
    loads: dict[str, Callable[[str], dict[str, Any]]] = {
        "c1": lambda t: requests_run(tool, env.url(t), o.c1_requests, 1, o.c1_seconds),
        f"c{c}": lambda t: requests_run(tool, env.url(t), o.cN_requests, c, o.cN_seconds),
        "ttfb_c1": lambda t: run_loadgen("ttfb", env.url(t), stream_body, ttfb_args, o.ttfb_seconds + 30),
    }
    log(f"warm-up ({o.warmup_seconds} s per target)")
    for t in TARGETS:
        requests_run(tool, env.url(t), 1_000_000, c, o.warmup_seconds)
        run_loadgen("ttfb", env.url(t), stream_body, ["-n", "200", "--duration", "1"], 30)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {name: {t: [] for t in TARGETS} for name in loads}
    for r in range(o.rounds):
        order = TARGETS[r % len(TARGETS) :] + TARGETS[: r % len(TARGETS)]  # rotate: no target always first
        for name, load in loads.items():
            for t in order:
                res = measured(env, t, lambda load=load, t=t: load(t))  # type: ignore[misc]
                rounds[name][t].append(res)
                p50 = res.get("p50_ms", res.get("ttfb_p50_ms", 0.0))
                rps = f", {res['rps']:,.0f} req/s" if "rps" in res else ""
                log(
                    f"round {r + 1} {name:7s} {t:7s}: p50 {p50:.3f} ms{rps}, errors {res['errors'] or 0}, "
                    f"background {res['background_cores']:.2f} cores"
                )
    return {
        name: {t: {**median_of(runs), "rounds": runs} for t, runs in by_target.items()}
        for name, by_target in rounds.items()
    }


def phase_streams(o: Options, env: Env) -> dict[str, Any]:
    """`streams` slow streams (one chunk a second) through the gateway at once; RSS sampled every 0.25 s."""
    pid = env.pid("gateway")
    body = orjson.dumps({**CHAT, "stream": True, "bench": {"chunks": o.stream_seconds, "delay_ms": 1000}})
    before = rss_mib(pid)
    cmd = [PY, str(HERE / "loadgen.py"), "streams", "--url", env.url("gateway"), "--body", body.decode()]
    cmd += ["--header", f"Authorization: Bearer {API_KEY}", "-n", str(o.streams)]
    cmd += ["--chunks", str(o.stream_seconds), "--ramp", str(o.stream_ramp)]
    cmd += ["--duration", str(o.stream_seconds + o.stream_ramp + 60)]
    log(
        f"{o.streams} streams × {o.stream_seconds} s through one gateway worker (RSS before {before:.1f} MiB)"
    )
    watch = CpuWatch(env)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak, samples = before, []
    deadline = time.perf_counter() + o.stream_seconds + o.stream_ramp + 120
    while proc.poll() is None and time.perf_counter() < deadline:
        rss = rss_mib(pid)
        samples.append(round(rss, 1))
        peak = max(peak, rss)
        time.sleep(0.25)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate(timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"streams load failed: {err.decode()[-2000:]}")
    res: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    res["cpu"] = watch.done()
    after = proc_status(pid)
    res.update(
        rss_before_mib=before,
        rss_peak_mib=peak,
        rss_after_mib=after["VmRSS"] / MIB,
        hwm_mib=after["VmHWM"] / MIB,
        rss_samples_mib=samples,
    )
    log(f"streams: {res['completed']}/{o.streams} complete, peak RSS {peak:.1f} MiB, errors {res['errors']}")
    return res


def phase_profile(o: Options, env: Env, tool: str) -> dict[str, str]:
    """py-spy (blocking samples, --native) on the gateway under c=1 and c=N loads, apart from the measured runs."""
    from stacks import load, report

    found = py_spy(o.profile)
    if found is None:
        return {}
    spy, outdir = found
    summaries: dict[str, str] = {}
    for name, c in (("c1", 1), (f"c{o.concurrency}", o.concurrency)):
        raw = outdir / f"gateway-{name}.txt"
        if profiled(
            spy,
            env.pid("gateway"),
            raw,
            lambda c=c: requests_run(tool, env.url("gateway"), 10_000_000, c, o.profile_seconds),  # type: ignore[misc]
        ):
            summaries[name] = report(load(raw))
            (outdir / f"gateway-{name}.md").write_text(summaries[name])
            log(f"profile {name}: {raw} (summary: {outdir / f'gateway-{name}.md'})")
    return summaries


# -- report ----------------------------------------------------------------------------------------------------


def rows(res: dict[str, Any], o: Options) -> list[Row]:
    out: list[Row] = []
    cs = res.get("cold_start")
    if cs:
        med, rss = cs["median_s"], cs["idle_rss_median_mib"]
        out += [
            Row("cold start: spawn → 200 /readyz (median)", "s", {"floor": cs["floor_start_s"], "gateway": med}, "≤ 1.5 s", med <= 1.5),
            Row("idle RSS", "MiB", {"floor": cs["floor_idle_rss_mib"], "gateway": rss}, "≤ 80 MiB", rss <= 80),
        ]  # fmt: skip
    load = res.get("load")
    if load:
        n = o.concurrency

        def m(name: str, key: str) -> dict[str, float | None]:
            return {t: load[name][t].get(key) for t in TARGETS}

        c1, cn, tt = m("c1", "p50_ms"), m(f"c{n}", "rps"), m("ttfb_c1", "ttfb_p50_ms")
        p99 = m("c1", "p99_ms")

        def added(v: dict[str, float | None]) -> float:
            return (v["gateway"] or 0.0) - (v["direct"] or 0.0)

        out += [
            Row("c=1 throughput", "req/s", m("c1", "rps")),
            Row("c=1 latency p50", "ms", c1, "added ≤ 0.5 ms", added(c1) <= 0.5),
            Row("c=1 latency p99", "ms", p99, "added ≤ 1.5 ms", added(p99) <= 1.5),
            Row(f"c={n} throughput", "req/s", cn, "≥ 0.5× direct", (cn["gateway"] or 0) >= 0.5 * (cn["direct"] or 0)),
            Row(f"c={n} latency p50", "ms", m(f"c{n}", "p50_ms")),
            Row(f"c={n} latency p99", "ms", m(f"c{n}", "p99_ms")),
            Row("stream TTFB c=1 p50", "ms", tt, "added ≤ 1 ms", added(tt) <= 1.0),
            Row("stream TTFB c=1 p99", "ms", m("ttfb_c1", "ttfb_p99_ms")),
            Row("server CPU per request, c=1", "µs", {**m("c1", "server_cpu_us_per_req"), "direct": m("c1", "upstream_cpu_us_per_req")["direct"]}),
            Row(f"server CPU per request, c={n}", "µs", {**m(f"c{n}", "server_cpu_us_per_req"), "direct": m(f"c{n}", "upstream_cpu_us_per_req")["direct"]}),
        ]  # fmt: skip
    st = res.get("streams")
    if st:
        k, cpu = st["streams"], st["cpu"]
        out += [
            Row(f"{k} × {o.stream_seconds} s streams completed", "streams", {"gateway": st["completed"]}, f"all {k}", st["completed"] == k),
            Row(f"gateway peak RSS, {k} streams", "MiB", {"gateway": st["rss_peak_mib"]}, "≤ 300 MiB", st["rss_peak_mib"] <= 300),
            Row(f"gateway CPU, {k} streams", "% core", {"gateway": cpu["gateway_cpu_s"] / cpu["wall_s"] * 100}),
        ]  # fmt: skip
    return out


# direct / floor / gateway, the gateway's ratio to each and the latency it adds over direct
LAYOUT = Layout(TARGETS, (("gw ÷ direct", "gateway", "direct"), ("gw ÷ floor", "gateway", "floor")))


def main(argv: list[str] | None = None) -> int:
    o = parse_args(argv)
    nofile = raise_nofile()
    tool = o.loadgen if o.loadgen != "auto" else ("wrk" if shutil.which("wrk") else "aiohttp")
    if tool == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (use --loadgen aiohttp)")
    env = Env(
        Path(tempfile.mkdtemp(prefix="agentgw-bench-")),
        budgets=o.budgets,
        audit=audit_section(o.audit),
        tool_policy=o.tool_policy,
    )
    env.write_config()
    res = header("llm.py", sys.argv[1:] if argv is None else argv, o, nofile)
    res["loadgen"] = tool
    log(f"load generator {tool}; temp dir {env.tmp}")
    with running(env, res, o.keep):
        env.start_upstream()
        res["cold_start"] = phase_cold_start(o, env)
        res["load"] = phase_load(o, env, tool)
        if o.streams > 0:
            res["streams"] = phase_streams(o, env)
        if o.profile:
            res["profile"] = phase_profile(o, env, tool)
    footer = f"{res['machine']}; load generator {tool}; {res['audit_records']} audit records; {res['elapsed_s']:.0f} s"
    return finish(res, LAYOUT, rows(res, o), footer, o.strict, o.json)


if __name__ == "__main__":
    sys.exit(main())
