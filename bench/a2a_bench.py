"""The A2A-plane benchmark (`make bench`): A2A 1.0 JSON-RPC calls direct to a2a-sdk agents vs through agentgw, in
one run on 127.0.0.1, the rounds interleaved. Not a test.

Processes, each on its own: two upstream agents built with the a2a-sdk (`echo`: `SendMessage` answered with a
task that is already completed, one artifact; `stream`: a task, a working status, `--chunks` artifact updates and
the completed status), `agentgw serve --workers 1` as a user deploys it (the defaults: audit to SQLite through
the writer process, in-memory task ownership; the bench's API key and a Casbin policy), and a load generator
(this file's `load` mode: raw JSON-RPC over aiohttp, one keep-alive connection per worker).

Measures `SendMessage` at c=1 and c=N (req/s, p50/p99), `SendStreamingMessage` at c=1 (time to the first event,
whole stream) and at c=N (streams/s), the gateway's CPU per call (its whole process tree: the gateway and its
audit writer) and its RSS; optionally profiles the gateway with py-spy (`--profile DIR`).

Child modes (used by the bench itself): `a2a_bench.py upstream --port P --agent echo|stream [--chunks K]` and
`a2a_bench.py load --url U --mode send|stream ...` (prints one JSON result).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from driver import LoadOptions, header, load_arguments, profiled, py_spy, running
from harness import (
    API_KEY,
    POLICY,
    PY,
    CpuWatch,
    Env,
    _json_out,
    free_port,
    http_status,
    log,
    raise_nofile,
    stop,
    wait_until,
    write_gateway_config,
)
from loadgen import client, summary_ms
from mcp_bench import components
from procs import tree, tree_rss_mib
from report import backgrounds, fmt, median_of, write_json

AGENTS = ("echo", "stream")  # the upstream agents; the same names in the gateway's registry
TARGETS = ("direct", "gateway")
CARD = "/.well-known/agent-card.json"
V1 = {"A2A-Version": "1.0", "Content-Type": "application/json"}


# -- upstream: an a2a-sdk agent in its own process ---------------------------------------------------------------


def serve_upstream(port: int, agent: str, chunks: int) -> None:
    """One a2a-sdk 1.x agent (JSON-RPC at `/`, HTTP+JSON at `/rest`, its card) on uvicorn (uvloop + httptools)."""
    import uvicorn
    from a2a.helpers import get_message_text, new_task_from_user_message, new_text_artifact, new_text_part
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
    from starlette.applications import Starlette

    class Echo(AgentExecutor):
        """Answers at once with the task already completed: one event, one artifact."""

        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            task = new_task_from_user_message(context.message)
            task.status.state = TaskState.TASK_STATE_COMPLETED
            task.artifacts.append(new_text_artifact("echo", f"echo: {get_message_text(context.message)}"))
            await event_queue.enqueue_event(task)

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()

    class Streamer(AgentExecutor):
        """The task, a working status, `chunks` artifact updates (one artifact, appended), the completed status."""

        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            task = context.current_task or new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            await updater.start_work()
            for i in range(chunks):
                await updater.add_artifact(
                    [new_text_part(f"chunk {i} ")],
                    artifact_id="out",
                    name="out",
                    append=i > 0,
                    last_chunk=i == chunks - 1,
                )
            await updater.complete()

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()

    base = f"http://127.0.0.1:{port}"
    card = AgentCard(
        name=f"bench-{agent}",
        description=f"The A2A bench's {agent} agent",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=f"{base}/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=agent, name=agent, description=agent, tags=["bench"])],
    )
    executor = Echo() if agent == "echo" else Streamer()
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(
        routes=[
            *create_agent_card_routes(card),
            *create_jsonrpc_routes(handler, rpc_url="/"),
            *create_rest_routes(handler, path_prefix="/rest"),
        ]
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


# -- load generator: raw JSON-RPC over aiohttp, in its own process ----------------------------------------------


def _event_end(buf: bytes) -> int:
    """Where the first SSE event of `buf` ends (-1: not yet complete); LF or CRLF framing."""
    ends = [i for i in (buf.find(b"\n\n"), buf.find(b"\r\n\r\n")) if i >= 0]
    return min(ends) if ends else -1


async def run_load(
    url: str, mode: str, key: str | None, n: int, c: int, duration: float, chunks: int
) -> dict[str, Any]:
    """`c` workers, each on its own keep-alive connection, send `SendMessage` (mode `send`) or
    `SendStreamingMessage` (mode `stream`) until `n` calls are done or `duration` seconds pass. Every answer is
    checked (a completed task with the echo artifact; a stream with `chunks` artifact updates ending completed)."""
    headers = dict(V1)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if mode == "stream":
        headers["Accept"] = "text/event-stream"
    method = "SendMessage" if mode == "send" else "SendStreamingMessage"
    timeout = aiohttp.ClientTimeout(total=10)
    latencies: list[float] = []
    firsts: list[float] = []
    errors: dict[str, int] = {}
    events = 0
    issued = 0
    ids = itertools.count(1)

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    def body(rid: int) -> bytes:
        msg = {"messageId": f"m-{os.getpid()}-{rid}", "role": "ROLE_USER", "parts": [{"text": "hello"}]}
        return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": {"message": msg}})

    def send_ok(data: bytes, rid: int) -> str | None:
        msg = orjson.loads(data)
        if msg.get("id") != rid or "result" not in msg:
            return f"rpc_{msg.get('error', {}).get('code')}"
        task = msg["result"].get("task") or {}
        if task.get("status", {}).get("state") != "TASK_STATE_COMPLETED":
            return "not_completed"
        if task["artifacts"][0]["parts"][0].get("text") != "echo: hello":
            return "wrong_result"
        return None

    def stream_ok(whole: bytes) -> str | None:
        if whole.count(b'"artifactUpdate"') != chunks:
            return "missing_artifacts"
        last = whole.rstrip().rsplit(b"data:", 1)[-1]
        if b'"statusUpdate"' not in last or b"TASK_STATE_COMPLETED" not in last:
            return "not_completed"
        return None

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal issued, events
        while issued < n and time.perf_counter() < deadline:
            issued += 1
            rid = next(ids)
            t0 = time.perf_counter()
            t1 = 0.0
            try:
                async with session.post(url, data=body(rid), headers=headers, timeout=timeout) as resp:
                    if mode == "send":
                        data = await resp.read()
                    else:
                        parts: list[bytes] = []
                        seen = b""
                        async for piece in resp.content.iter_any():
                            parts.append(piece)
                            if not t1:
                                seen += piece
                                if _event_end(seen) >= 0:
                                    t1 = time.perf_counter()
                        data = b"".join(parts)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                error(type(exc).__name__)
                continue
            elapsed = time.perf_counter() - t0
            if status != 200:
                error(f"status_{status}")
                continue
            try:
                wrong = send_ok(data, rid) if mode == "send" else stream_ok(data)
            except (orjson.JSONDecodeError, KeyError, IndexError, AttributeError, TypeError):
                wrong = "unreadable"
            if wrong:
                error(wrong)
                continue
            latencies.append(elapsed)
            if mode == "stream":
                firsts.append(t1 - t0)
                events += data.count(b"data:")

    sessions = [client(1) for _ in range(c)]
    try:
        start, cpu0 = time.perf_counter(), time.process_time()
        deadline = start + duration
        await asyncio.gather(*(worker(s) for s in sessions))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    out: dict[str, Any] = {
        "requests": len(latencies),
        "errors": errors,
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        # the load generator's own CPU while it ran the load (not its interpreter's start-up)
        "loadgen_cpu_us_per_call": cpu / max(1, len(latencies)) * 1e6,
        "loadgen_cores": cpu / elapsed if elapsed else 0.0,
        **summary_ms(latencies),
    }
    if mode == "stream":
        out["events"] = events
        out["events_per_s"] = events / elapsed if elapsed else 0.0
        out.update({f"first_{k}": v for k, v in summary_ms(firsts).items()})
    return out


def load_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="a2a_bench.py load")
    ap.add_argument("--url", required=True)
    ap.add_argument("--mode", choices=("send", "stream"), required=True)
    ap.add_argument("--key", help="API key (the gateway's)")
    ap.add_argument("-n", type=int, default=1000, help="call count bound")
    ap.add_argument("-c", type=int, default=1, help="concurrency (workers, connections)")
    ap.add_argument("--duration", type=float, default=10.0, help="time bound, seconds")
    ap.add_argument("--chunks", type=int, default=5, help="artifact updates each stream must carry")
    a = ap.parse_args(argv)
    import uvloop

    raise_nofile()
    out = uvloop.run(run_load(a.url, a.mode, a.key, a.n, a.c, a.duration, a.chunks))
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")


# -- the bench ---------------------------------------------------------------------------------------------------


@dataclass
class Options(LoadOptions):
    c1_seconds: float = 2.5
    cN_seconds: float = 3.0
    chunks: int = 5  # artifact updates per stream
    warmup_seconds: float = 1.0
    profile_seconds: float = 6.0


def parse_args(argv: list[str]) -> Options:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = Options()
    load_arguments(ap, d, "smoke run (~25 s): one round, short loads")
    ap.add_argument("--chunks", type=int, default=d.chunks, help="artifact updates per stream")
    a = ap.parse_args(argv)
    o = Options(**{k: v for k, v in vars(a).items() if k != "quick"})
    if a.quick:
        o.rounds, o.c1_seconds, o.cN_seconds = 1, 1.5, 1.5
        o.warmup_seconds, o.profile_seconds = 0.5, 3.0
    return o


class A2AEnv(Env):
    """The temp dir, the two upstream agents and the gateway."""

    def __init__(self, tmp: Path, chunks: int) -> None:
        super().__init__(tmp, ports={"gateway": free_port(), **{a: free_port() for a in AGENTS}})
        self.chunks = chunks

    def url(self, target: str, agent: str) -> str:
        if target == "gateway":
            return f"http://127.0.0.1:{self.ports['gateway']}/a2a/{agent}"
        return f"http://127.0.0.1:{self.ports[agent]}/"

    def write_config(self) -> None:
        """The registry's two agents; otherwise the defaults (audit, ownership), the bench key and policy."""
        agents = [{"name": a, "url": f"http://127.0.0.1:{self.ports[a]}"} for a in AGENTS]
        write_gateway_config(self.tmp, self.ports["gateway"], {"a2a.yaml": {"a2a": {"agents": agents}}})
        policy = self.tmp / "policies" / "policy.csv"
        if policy.exists():  # the shared bench policy, plus the agents for the bench's role
            policy.write_text(POLICY + "p, role:agents, a2a:*, *, allow\n")

    def start_upstreams(self) -> None:
        for agent in AGENTS:
            port = self.ports[agent]
            cmd = [PY, str(Path(__file__).resolve()), "upstream", "--port", str(port), "--agent", agent]
            cmd += ["--chunks", str(self.chunks)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log(f"upstream-{agent}.log"))
            self.procs[agent] = proc
            wait_until(lambda port=port: http_status(port, CARD) == 200, 30, proc, f"upstream {agent}")

    def close(self) -> None:
        super().close()
        for agent in AGENTS:
            proc = self.procs.pop(agent, None)
            if proc is not None:
                stop(proc)


# The loads: name → (agent, mode, concurrency, count bound, time bound in seconds)
def loads(o: Options) -> dict[str, tuple[str, str, int, int, float]]:
    c = o.concurrency
    return {
        "send_c1": ("echo", "send", 1, o.c1_requests, o.c1_seconds),
        f"send_c{c}": ("echo", "send", c, o.cN_requests, o.cN_seconds),
        "stream_c1": ("stream", "stream", 1, o.c1_requests, o.c1_seconds),
        f"stream_c{c}": ("stream", "stream", c, o.cN_requests, o.cN_seconds),
    }


def load_run(
    env: A2AEnv, target: str, agent: str, mode: str, n: int, c: int, seconds: float
) -> dict[str, Any]:
    """One bounded load in its own process (`a2a_bench.py load`)."""
    cmd = [PY, str(Path(__file__).resolve()), "load", "--url", env.url(target, agent), "--mode", mode]
    cmd += ["-n", str(n), "-c", str(c), "--duration", str(seconds), "--chunks", str(env.chunks)]
    if target == "gateway":
        cmd += ["--key", API_KEY]
    return _json_out(cmd, seconds + 60)


def measured(
    env: A2AEnv, target: str, agent: str, mode: str, n: int, c: int, seconds: float
) -> dict[str, Any]:
    """One load, plus the CPU per call of the gateway's process tree (gateway + audit writer), of the gateway
    process alone and of the upstream, and the other processes' load on the machine (the load generator reports
    its own CPU during the load; its whole process, start-up included, counts as ours here)."""
    watch = CpuWatch(env, trees=("gateway",))
    r = load_run(env, target, agent, mode, n, c, seconds)
    cpu = watch.done()
    calls = max(1, r.get("requests", 0))
    if target == "gateway":
        r["gateway_cpu_us_per_call"] = cpu["gateway_cpu_s"] / calls * 1e6
        r["gateway_process_cpu_us_per_call"] = cpu["gateway_process_cpu_s"] / calls * 1e6
        # it idles while the loader starts
        r["gateway_cores"] = cpu["gateway_cpu_s"] / max(r.get("elapsed_s", cpu["wall_s"]), 1e-9)
    r["upstream_cpu_us_per_call"] = cpu[f"{agent}_cpu_s"] / calls * 1e6
    # everything busy on the machine minus ours (the gateway tree idles during direct runs but counts as ours)
    r["background_cores"] = cpu["background_cores"]
    return r


def phase_load(o: Options, env: A2AEnv) -> dict[str, Any]:
    """Every (load, target) for `rounds` rounds, the target order alternated each round."""
    log(f"warm-up ({o.warmup_seconds} s per load and target)")
    for name, (agent, mode, c, _, _) in loads(o).items():
        for t in TARGETS:
            r = load_run(env, t, agent, mode, 1_000_000, c, o.warmup_seconds)
            if r["requests"] == 0 or r["errors"]:
                raise RuntimeError(f"warm-up {name} {t}: {r['requests']} calls, errors {r['errors']}")
    out: dict[str, Any] = {}
    for name, (agent, mode, c, n, secs) in loads(o).items():
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TARGETS}
        for rnd in range(o.rounds):
            for t in TARGETS[rnd % 2 :] + TARGETS[: rnd % 2]:
                res = measured(env, t, agent, mode, n, c, secs)
                runs[t].append(res)
                first = f", first event p50 {res['first_p50_ms']:.3f} ms" if mode == "stream" else ""
                log(
                    f"round {rnd + 1} {name:10s} {t:7s}: {res['rps']:,.0f}/s, p50 {res['p50_ms']:.3f} ms, p99 "
                    f"{res['p99_ms']:.3f} ms{first}, errors {res['errors'] or 0}, "
                    f"background {res['background_cores']:.2f} cores"
                )
        out[name] = {t: {**median_of(rs), "rounds": rs} for t, rs in runs.items()}
    return out


# Exclusive attribution of the gateway's busy samples (first rule whose fragment is on the stack wins: the deeper
# parts of a call first). Follows the module layout of agentgw/a2a/; adjust when it changes.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("garbage collector", ("gc_collect_main",)),
    ("upstream leg: aiohttp request and answer", ("aiohttp/", "agentgw/a2a/upstream/")),
    ("agentgw: audit (snapshot, hand-off to the writer)", ("agentgw/audit/", "agentgw/stages/audit.py")),
    ("response writes (uvicorn's send, the socket write)", ("RequestResponseCycle.send",)),
    ("agentgw: SSE decode/encode", ("agentgw/sse.py",)),
    ("agentgw: task ownership", ("agentgw/a2a/ownership.py",)),
    (
        "agentgw: mediation + pipeline (Exchange, stages, summaries)",
        ("agentgw/a2a/mediate.py", "agentgw/pipeline.py", "agentgw/stages/", "agentgw/exchange.py"),
    ),
    ("agentgw: cards", ("agentgw/a2a/catalog/",)),
    (
        "agentgw: A2A front door (JSON-RPC parse, errors, plane dispatch)",
        ("agentgw/a2a/frontdoor/", "agentgw/a2a/plane.py", "agentgw/a2a/errors.py", "agentgw/a2a/methods.py"),
    ),
    ("agentgw: server, http helpers", ("agentgw/server.py", "agentgw/http.py", "agentgw/frontdoor.py")),
    ("uvicorn (HTTP parsing, response writes)", ("uvicorn/protocols",)),
)


def phase_profile(o: Options, env: A2AEnv) -> dict[str, str]:
    """py-spy (blocking samples, --native) on the gateway under each load, apart from the measured runs."""
    import stacks

    found = py_spy(o.profile)
    if found is None:
        return {}
    spy, outdir = found
    summaries: dict[str, str] = {}
    for name, (agent, mode, c, _, _) in loads(o).items():
        raw = outdir / f"gateway-a2a-{name}.txt"
        load = lambda a=agent, m=mode, c=c: load_run(env, "gateway", a, m, 10_000_000, c, o.profile_seconds)  # noqa: E731
        if profiled(spy, env.pid("gateway"), raw, load):
            summaries[name] = components(raw, COMPONENTS) + "\n" + stacks.report(stacks.load(raw), top=25)
            (outdir / f"gateway-a2a-{name}.md").write_text(summaries[name])
            log(f"profile {name}: {raw} (summary: {outdir / f'gateway-a2a-{name}.md'})")
    return summaries


# -- report ------------------------------------------------------------------------------------------------------


def table(res: dict[str, Any], o: Options) -> str:
    ld, n = res["load"], o.concurrency
    head = ["metric", "direct", "gateway", "unit", "gw ÷ direct", "added", "gw ÷ direct per round (median)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---|---:|---:|---:|"]

    def row(metric: str, load: str, key: str, unit: str, direct: bool = True) -> None:
        d = ld[load]["direct"].get(key) if direct else None
        g = ld[load]["gateway"].get(key)
        ratio = f"{g / d:.2f}×" if d and g is not None else "–"
        added = f"{g - d:+.3f}" if d is not None and g is not None and unit == "ms" else "–"
        # the two targets of one round ran back to back: their ratio is the least exposed to other work's drift
        pairs = zip(ld[load]["direct"]["rounds"], ld[load]["gateway"]["rounds"], strict=True)
        per_round = [gr[key] / dr[key] for dr, gr in pairs if direct and dr.get(key) and key in gr]
        paired = f"{statistics.median(per_round):.2f}×" if per_round else "–"
        lines.append(f"| {metric} | {fmt(d)} | {fmt(g)} | {unit} | {ratio} | {added} | {paired} |")

    row("SendMessage c=1 throughput", "send_c1", "rps", "req/s")
    row("SendMessage c=1 latency p50", "send_c1", "p50_ms", "ms")
    row("SendMessage c=1 latency p99", "send_c1", "p99_ms", "ms")
    row(f"SendMessage c={n} throughput", f"send_c{n}", "rps", "req/s")
    row(f"SendMessage c={n} latency p50", f"send_c{n}", "p50_ms", "ms")
    row(f"SendMessage c={n} latency p99", f"send_c{n}", "p99_ms", "ms")
    row("SendStreamingMessage c=1 first event p50", "stream_c1", "first_p50_ms", "ms")
    row("SendStreamingMessage c=1 first event p99", "stream_c1", "first_p99_ms", "ms")
    row("SendStreamingMessage c=1 whole stream p50", "stream_c1", "p50_ms", "ms")
    row(f"SendStreamingMessage c={n} throughput", f"stream_c{n}", "rps", "streams/s")
    row(f"SendStreamingMessage c={n} events", f"stream_c{n}", "events_per_s", "events/s")
    row(f"SendStreamingMessage c={n} whole stream p99", f"stream_c{n}", "p99_ms", "ms")
    for load in loads(o):
        row(
            f"gateway CPU per call, {load} (gateway + audit writer)",
            load,
            "gateway_cpu_us_per_call",
            "µs",
            False,
        )
        row(f"… of which the gateway process, {load}", load, "gateway_process_cpu_us_per_call", "µs", False)
    for load in loads(o):
        row(f"upstream agent CPU per call, {load}", load, "upstream_cpu_us_per_call", "µs")
    for load in (f"send_c{n}", f"stream_c{n}"):
        row(f"load generator CPU per call, {load}", load, "loadgen_cpu_us_per_call", "µs")
        row(f"load generator busy, {load}", load, "loadgen_cores", "cores")
    rss = res["rss"]
    lines.append(f"| gateway RSS idle (after start) | – | {fmt(rss['idle']['rss_mib'])} | MiB | – | – | – |")
    lines.append(f"| gateway RSS after the loads | – | {fmt(rss['after']['rss_mib'])} | MiB | – | – | – |")
    lines.append(f"| gateway peak RSS (VmHWM) | – | {fmt(rss['after']['peak_rss_mib'])} | MiB | – | – | – |")
    for what, key in (("RSS", "tree_rss_mib"), ("PSS", "tree_pss_mib")):
        lines.append(
            f"| gateway + audit writer {what} idle → after the loads | – | {fmt(rss['idle'][key])} → "
            f"{fmt(rss['after'][key])} | MiB | – | – | – |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["upstream"]:
        ap = argparse.ArgumentParser(prog="a2a_bench.py upstream")
        ap.add_argument("--port", type=int, required=True)
        ap.add_argument("--agent", choices=AGENTS, required=True)
        ap.add_argument("--chunks", type=int, default=5)
        a = ap.parse_args(args[1:])
        serve_upstream(a.port, a.agent, a.chunks)
        return 0
    if args[:1] == ["load"]:
        load_main(args[1:])
        return 0

    o = parse_args(args)
    nofile = raise_nofile()
    env = A2AEnv(Path(tempfile.mkdtemp(prefix="agentgw-bench-a2a-")), o.chunks)
    env.write_config()
    res = header("a2a_bench.py", args, o, nofile)
    log(f"temp dir {env.tmp}")
    with running(env, res, o.keep):
        env.start_upstreams()
        res["gateway_start_s"] = env.start_gateway()
        time.sleep(1.0)
        res["rss"] = {"idle": tree_rss_mib(env.pid("gateway"))}
        res["gateway_tree_pids"] = len(tree(env.pid("gateway")))
        log(f"gateway ready in {res['gateway_start_s']:.2f} s ({res['gateway_tree_pids']} processes)")
        res["load"] = phase_load(o, env)
        res["rss"]["after"] = tree_rss_mib(env.pid("gateway"))
        if o.profile:
            res["profile"] = phase_profile(o, env)
    bg = backgrounds(res["load"])
    res["background_cores"] = {"median": statistics.median(bg), "max": max(bg)}
    print(table(res, o))
    print(
        f"\n{res['machine']}; agentgw {res['agentgw']}; {o.chunks} artifact updates per stream; "
        f"{res['audit_records']} audit records; {res['elapsed_s']:.0f} s"
    )
    by_target = {
        t: statistics.median(r["background_cores"] for ld in res["load"].values() for r in ld[t]["rounds"])
        for t in TARGETS
    }
    print(
        f"background load from other processes during measured runs: median {statistics.median(bg):.2f}, "
        f"max {max(bg):.2f} cores (direct runs {by_target['direct']:.2f}, gateway runs "
        f"{by_target['gateway']:.2f}; before start: {res['background_cores_at_start']:.2f})"
    )
    errors = {
        f"{name}/{t}": r["errors"] for name, ld in res["load"].items() for t, r in ld.items() if r["errors"]
    }
    if errors:
        print(f"errors: {errors}")
    write_json(o.json, res)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
