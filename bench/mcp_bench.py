"""The MCP-plane benchmark (`make bench`): `tools/call` direct to an MCP SDK server vs through agentgw, for each
protocol era (2025-11-25: `initialize` handshake, then calls on the session; 2026-07-28: stateless, per-request
`_meta` and routing headers), at c=1 and c=N, in one run on 127.0.0.1. Not a test.

Three kinds of process, each on its own: two upstream MCP servers built with the `mcp` SDK (`MCPServer`, Streamable
HTTP, one tool `add`; `handshake` refuses the 2026-07-28 era the way a pre-2026 server does, so the gateway talks
to it with a session, `modern` is the SDK's dual-era server, which the gateway reaches statelessly), `agentgw serve`
with a generated config whose registry has both (tools `handshake__add`, `modern__add`), and a load generator
(this file's `load` mode: raw JSON-RPC POSTs with aiohttp, one connection and, in the handshake era, one session
per worker). Reports req/s, p50 and p99 per era and concurrency, gateway ÷ direct, the added p50 at c=1, and the
CPU per call of each server process; optionally profiles the gateway with py-spy.

`--scope` measures instead the cost of the upstream session scope (registry `session_scope`): `tools/call` through
the gateway to the `handshake` upstream as `handshake__add` (`principal`, the default: the caller's principal's own
upstream session) and as `shared__add` (the same server registered again with `session_scope: shared`: one
session for every caller), at c=1 and c=N.

Child modes (used by the bench itself): `mcp_bench.py upstream --port P --era handshake|modern` and
`mcp_bench.py load --url U --era E --tool T ...` (prints one JSON result).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
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
from report import Layout, Row, backgrounds, finish, median_of, write_json

ERAS = ("handshake", "modern")  # the upstream server names in the gateway's registry, too
VERSION = {"handshake": "2025-11-25", "modern": "2026-07-28"}
ERA_LABEL = {"handshake": "2025-11-25 session", "modern": "2026-07-28 stateless"}
SCOPES = {"principal": "handshake__add", "shared": "shared__add"}  # --scope: the gateway tool of each scope
TARGETS = ("direct", "gateway")
TOOL = "add"
ARGS = {"a": 2, "b": 3}
EXPECT = "5"
ACCEPT = "application/json, text/event-stream"
CLIENT_INFO = {"name": "agentgw-bench", "version": "0"}


# -- upstream: an MCP SDK server in its own process --------------------------------------------------------------


def serve_upstream(port: int, era: str, sse: bool) -> None:
    """`MCPServer` with one tool on uvicorn (uvloop + httptools). JSON responses unless `sse` (the SDK default
    is SSE for handshake-era requests); `era == "handshake"` refuses 2026-07-28 requests like a pre-2026 server."""
    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    server = MCPServer(name=f"bench-{era}", version="1.0")

    @server.tool(description="Add two integers")
    def add(a: int, b: int) -> int:
        return a + b

    app = server.streamable_http_app(streamable_http_path="/mcp", json_response=not sse, host="127.0.0.1")
    refusal = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": "server-error",
            "error": {"code": -32600, "message": "Bad Request: Missing session ID"},
        }
    )

    async def handshake_only(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            version = next((v for k, v in scope["headers"] if k.lower() == b"mcp-protocol-version"), b"")
            if version.decode("latin-1") in MODERN_PROTOCOL_VERSIONS:  # what a pre-2026 server answers
                headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(refusal))]
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": refusal})
                return
        await app(scope, receive, send)

    uvicorn.run(
        handshake_only if era == "handshake" else app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


# -- load generator: raw JSON-RPC over aiohttp, in its own process ----------------------------------------------


def rpc_message(resp_body: bytes, content_type: str, rid: int) -> dict[str, Any] | None:
    """The JSON-RPC response with id `rid` from a JSON or an SSE body (SSE: the `data:` lines)."""
    if content_type.startswith("application/json"):
        msg = orjson.loads(resp_body)
        return msg if isinstance(msg, dict) and msg.get("id") == rid else None
    for line in resp_body.splitlines():
        if line.startswith(b"data:") and len(line) > 6:
            msg = orjson.loads(line[5:])
            if isinstance(msg, dict) and msg.get("id") == rid and ("result" in msg or "error" in msg):
                return msg
    return None


def _correct(result: Any) -> bool:
    """`add(2, 3)` answered: a successful result whose first content item is the text "5"."""
    if not isinstance(result, dict) or result.get("isError"):
        return False
    content = result.get("content")
    return isinstance(content, list) and bool(content) and content[0].get("text") == EXPECT


async def run_load(
    url: str, era: str, tool: str, key: str | None, n: int, c: int, duration: float, sessionless: bool = False
) -> dict[str, Any]:
    """`c` workers, each with its own keep-alive connection (and, in the handshake era, its own session opened
    before the clock starts), send `tools/call` until `n` calls are done or `duration` seconds pass.
    `sessionless`: a server that answers `initialize` without a session id (stateless mode) is accepted."""
    version = VERSION[era]
    base = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if key:
        base["Authorization"] = f"Bearer {key}"
    timeout = aiohttp.ClientTimeout(total=10)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    ids = itertools.count(2)
    meta = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
    }
    params: dict[str, Any] = {"name": tool, "arguments": ARGS}
    if era == "modern":
        params["_meta"] = meta

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def post(session: aiohttp.ClientSession, body: dict[str, Any], headers: dict[str, str]) -> Any:
        async with session.post(url, data=orjson.dumps(body), headers=headers, timeout=timeout) as resp:
            data = await resp.read()
            return resp, data

    async def open_session(session: aiohttp.ClientSession) -> dict[str, str]:
        """The headers of every call: a session (handshake era) or the routing headers (2026-07-28)."""
        if era == "modern":
            return {**base, "MCP-Protocol-Version": version, "Mcp-Method": "tools/call", "Mcp-Name": tool}
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": CLIENT_INFO},
        }
        resp, data = await post(session, init, base)
        msg = rpc_message(data, resp.headers.get("content-type", ""), 1)
        sid = resp.headers.get("mcp-session-id")
        if resp.status != 200 or msg is None or "result" not in msg or not (sid or sessionless):
            raise RuntimeError(f"initialize failed: HTTP {resp.status} {data[:300]!r}")
        if msg["result"].get("protocolVersion") != version:
            raise RuntimeError(f"initialize negotiated {msg['result'].get('protocolVersion')}, not {version}")
        headers = {**base, "MCP-Protocol-Version": version, **({"Mcp-Session-Id": sid} if sid else {})}
        resp, data = await post(session, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
        if resp.status != 202:
            raise RuntimeError(f"notifications/initialized: HTTP {resp.status} {data[:300]!r}")
        return headers

    async def worker(session: aiohttp.ClientSession, headers: dict[str, str], deadline: float) -> None:
        nonlocal issued
        while issued < n and time.perf_counter() < deadline:
            issued += 1
            rid = next(ids)
            body = orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                    data = await resp.read()
                    status, ctype = resp.status, resp.headers.get("content-type", "")
            except (aiohttp.ClientError, TimeoutError) as exc:
                error(type(exc).__name__)
                continue
            elapsed = time.perf_counter() - t0
            if status != 200:
                error(f"status_{status}")
                continue
            try:
                msg = rpc_message(data, ctype, rid)
            except orjson.JSONDecodeError:
                msg = None
            if msg is None:
                error("no_response")
            elif "error" in msg:
                error(f"rpc_{msg['error'].get('code')}")
            elif not _correct(msg.get("result")):
                error("wrong_result")
            else:
                latencies.append(elapsed)

    sessions = [client(1) for _ in range(c)]
    try:
        headers = await asyncio.wait_for(asyncio.gather(*(open_session(s) for s in sessions)), 30)
        start = time.perf_counter()
        deadline = start + duration
        await asyncio.gather(*(worker(s, h, deadline) for s, h in zip(sessions, headers, strict=True)))
        elapsed = time.perf_counter() - start
        if (
            era == "handshake" and "Mcp-Session-Id" in headers[0]
        ):  # end the sessions (bounded: one DELETE each, 5 s in all)
            close = [
                s.delete(url, headers=h, timeout=aiohttp.ClientTimeout(total=5))
                for s, h in zip(sessions, headers, strict=True)
            ]
            for r in await asyncio.wait_for(asyncio.gather(*close, return_exceptions=True), 5):
                if not isinstance(r, BaseException):
                    r.release()
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    return {
        "requests": len(latencies),
        "errors": errors,
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        **summary_ms(latencies),
    }


def load_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="mcp_bench.py load")
    ap.add_argument("--url", required=True)
    ap.add_argument("--era", choices=ERAS, required=True)
    ap.add_argument("--tool", required=True)
    ap.add_argument("--key", help="API key (the gateway's)")
    ap.add_argument("-n", type=int, default=1000, help="call count bound")
    ap.add_argument("-c", type=int, default=1, help="concurrency (workers, connections, sessions)")
    ap.add_argument("--duration", type=float, default=10.0, help="time bound, seconds")
    ap.add_argument("--sessionless", action="store_true", help="accept a server that opens no session")
    a = ap.parse_args(argv)
    import uvloop

    raise_nofile()
    out = uvloop.run(run_load(a.url, a.era, a.tool, a.key, a.n, a.c, a.duration, a.sessionless))
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")


# -- the bench ---------------------------------------------------------------------------------------------------


@dataclass
class Options(LoadOptions):
    upstream_sse: bool = False  # upstreams answer with SSE (the SDK default) instead of JSON
    strict: bool = False
    scope: bool = False  # measure session_scope principal vs shared instead of direct vs gateway
    workers: int = 1  # gateway worker processes (sessions then move between workers: each revives them)


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = Options()
    load_arguments(ap, d, "smoke run (~30 s): one round, short loads")
    ap.add_argument("--upstream-sse", action="store_true", help="upstreams answer with SSE instead of JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--scope", action="store_true", help="session_scope principal vs shared (handshake era)")
    ap.add_argument("--workers", type=int, default=d.workers, help="gateway worker processes")
    a = ap.parse_args(argv)
    o = Options(**{k: v for k, v in vars(a).items() if k != "quick"})
    if a.quick:
        o.rounds, o.c1_requests, o.c1_seconds = 1, 20_000, 2.0
        o.cN_requests, o.cN_seconds = 50_000, 2.0
        o.warmup_seconds, o.profile_seconds = 0.5, 3.0
    return o


class McpEnv(Env):
    """The temp dir, the two upstream MCP servers (`handshake`, `modern`) and the gateway."""

    def __init__(self, tmp: Path, upstream_sse: bool) -> None:
        super().__init__(tmp, ports={"gateway": free_port(), **{era: free_port() for era in ERAS}})
        self.upstream_sse = upstream_sse

    def url(self, target: str, era: str) -> str:
        return f"http://127.0.0.1:{self.ports['gateway' if target == 'gateway' else era]}/mcp"

    def tool(self, target: str, era: str) -> str:
        return f"{era}__{TOOL}" if target == "gateway" else TOOL

    def write_config(self) -> None:
        """A registry with both upstreams (Streamable HTTP); the bench's API key, Casbin policy and audit file."""
        servers = [
            {"name": era, "transport": "streamable-http", "url": self.url("direct", era), "timeout_s": 10}
            for era in ERAS
        ]
        # --scope: the handshake server once more, with one upstream session for every caller
        servers.append({**servers[0], "name": "shared", "session_scope": "shared"})
        write_gateway_config(self.tmp, self.ports["gateway"], {"mcp.yaml": {"mcp": {"servers": servers}}})

    def start_upstreams(self) -> None:
        for era in ERAS:
            port = self.ports[era]
            cmd = [PY, str(Path(__file__).resolve()), "upstream", "--port", str(port), "--era", era]
            if self.upstream_sse:
                cmd.append("--sse")
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log(f"upstream-{era}.log"))
            self.procs[era] = proc
            wait_until(lambda port=port: http_status(port, "/") == 404, 30, proc, f"upstream {era}")

    def wait_gateway_upstreams(self, timeout: float = 30.0) -> dict[str, Any]:
        """Until /readyz says both MCP servers are connected, each in its own era; their status."""
        status: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal status
            code, body = http_get(self.ports["gateway"], "/readyz")
            status = orjson.loads(body).get("mcp", {}) if code == 200 else {}
            return all(status.get(era, {}).get("state") == "ready" for era in ERAS)

        wait_until(ready, timeout, self.procs["gateway"], "the gateway's MCP upstreams")
        for era in ERAS:
            if status[era]["protocol_version"] != VERSION[era]:
                raise RuntimeError(f"the gateway reached {era!r} with {status[era]['protocol_version']}")
        return status

    def close(self) -> None:
        super().close()
        for era in ERAS:
            proc = self.procs.pop(era, None)
            if proc is not None:
                stop(proc)


def http_get(port: int, path: str, timeout: float = 1.0) -> tuple[int | None, bytes]:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return None, b""


def load_run(
    env: McpEnv, target: str, era: str, n: int, c: int, seconds: float, tool: str | None = None
) -> dict[str, Any]:
    """One bounded load in its own process (`mcp_bench.py load`)."""
    cmd = [PY, str(Path(__file__).resolve()), "load", "--url", env.url(target, era), "--era", era]
    cmd += ["--tool", tool or env.tool(target, era), "-n", str(n), "-c", str(c), "--duration", str(seconds)]
    if target == "gateway":
        cmd += ["--key", API_KEY]
    return _json_out(cmd, seconds + 60)


def measured(
    env: McpEnv, target: str, era: str, n: int, c: int, seconds: float, tool: str | None = None
) -> dict[str, Any]:
    """One load (see load_run), plus the CPU per call of the gateway, the upstream and the load generator."""
    watch = CpuWatch(env)
    r = load_run(env, target, era, n, c, seconds, tool)
    cpu = watch.done()
    calls = max(1, r.get("requests", 0))
    if target == "gateway":
        r["gateway_cpu_us_per_call"] = cpu["gateway_cpu_s"] / calls * 1e6
    r["upstream_cpu_us_per_call"] = cpu[f"{era}_cpu_s"] / calls * 1e6
    r["loadgen_cpu_us_per_call"] = cpu["loadgen_cpu_s"] / calls * 1e6
    r["background_cores"] = cpu["background_cores"]
    return r


def phase_load(o: Options, env: McpEnv) -> dict[str, Any]:
    """Every (era, concurrency, target) load for `rounds` rounds, the target order rotated each round."""
    c = o.concurrency
    loads = {"c1": (1, o.c1_requests, o.c1_seconds), f"c{c}": (c, o.cN_requests, o.cN_seconds)}
    log(f"warm-up ({o.warmup_seconds} s per target and era)")
    for era in ERAS:
        for t in TARGETS:
            r = load_run(env, t, era, 1_000_000, c, o.warmup_seconds)
            if r["requests"] == 0 or r["errors"]:
                raise RuntimeError(f"warm-up {era} {t}: {r['requests']} calls, errors {r['errors']}")
    out: dict[str, Any] = {}
    for era in ERAS:
        for name, (conc, n, secs) in loads.items():
            runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TARGETS}
            for rnd in range(o.rounds):
                order = TARGETS[rnd % 2 :] + TARGETS[: rnd % 2]
                for t in order:
                    res = measured(env, t, era, n, conc, secs)
                    runs[t].append(res)
                    log(
                        f"round {rnd + 1} {era:9s} {name:4s} {t:7s}: {res['rps']:,.0f} calls/s, p50 "
                        f"{res['p50_ms']:.3f} ms, p99 {res['p99_ms']:.3f} ms, errors {res['errors'] or 0}, "
                        f"background {res['background_cores']:.2f} cores"
                    )
            out.setdefault(era, {})[name] = {t: {**median_of(rs), "rounds": rs} for t, rs in runs.items()}
    return out


def phase_scope(o: Options, env: McpEnv) -> dict[str, Any]:
    """`--scope`: the handshake server through the gateway under each session scope, at c=1 and c=N, `rounds`
    rounds with the order rotated; one API key, so `principal` is one upstream session shared by the workers."""
    c = o.concurrency
    loads = {"c1": (1, o.c1_requests, o.c1_seconds), f"c{c}": (c, o.cN_requests, o.cN_seconds)}
    names = list(SCOPES)
    for scope in names:
        r = load_run(env, "gateway", "handshake", 1_000_000, c, o.warmup_seconds, SCOPES[scope])
        if r["requests"] == 0 or r["errors"]:
            raise RuntimeError(f"warm-up {scope}: {r['requests']} calls, errors {r['errors']}")
    out: dict[str, Any] = {}
    for name, (conc, n, secs) in loads.items():
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in names}
        for rnd in range(o.rounds):
            for scope in names[rnd % 2 :] + names[: rnd % 2]:
                res = measured(env, "gateway", "handshake", n, conc, secs, SCOPES[scope])
                runs[scope].append(res)
                log(
                    f"round {rnd + 1} {name:4s} {scope:9s}: {res['rps']:,.0f} calls/s, p50 {res['p50_ms']:.3f} ms, "
                    f"gateway {res['gateway_cpu_us_per_call']:,.0f} µs/call, errors {res['errors'] or 0}, "
                    f"background {res['background_cores']:.2f} cores"
                )
        out[name] = {s: {**median_of(rs), "rounds": rs} for s, rs in runs.items()}
    return out


def scope_table(scope: dict[str, Any]) -> str:
    lines = [
        "| load | scope | calls/s | p50 ms | p99 ms | gateway CPU µs/call |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for load, by_scope in scope.items():
        for name, r in by_scope.items():
            lines.append(
                f"| {load} | {name} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r['gateway_cpu_us_per_call']:,.0f} |"
            )
    return "\n".join(lines)


# The profile summary's layers: the MCP SDK's parts first (bench/stacks.py knows the LLM plane's stack only).
MCP_LAYERS: tuple[tuple[str, str], ...] = (
    ("/agentgw/mcp/", "agentgw: mcp plane"),
    ("/mcp/server/", "mcp SDK: server (session manager, transports)"),
    ("/mcp/shared/", "mcp SDK: shared (dispatcher, inbound checks)"),
    ("/mcp/client/", "mcp SDK: client (upstream sessions)"),
    ("/mcp_types/", "mcp SDK: types"),
    ("/mcp/", "mcp SDK: other"),
    ("/httpx2/", "httpx2 + httpcore (upstream HTTP)"),
    ("/httpcore", "httpx2 + httpcore (upstream HTTP)"),
    ("/h11/", "httpx2 + httpcore (upstream HTTP)"),
    ("/pydantic", "pydantic (validation, models)"),
    ("/anyio/", "anyio (task groups, memory streams)"),
    ("/starlette/", "starlette (Request, Response)"),
    ("/sse_starlette/", "starlette (Request, Response)"),
    ("/json/", "stdlib json"),
    ("/opentelemetry/", "opentelemetry"),
)


# Exclusive attribution of the gateway's busy samples to the parts of one mediated call: the first rule whose
# fragment occurs anywhere in a sample's stack takes it (so agentgw's handlers, which the SDK server calls, count as
# agentgw, and the upstream leg, which they await, as the upstream leg). The fragments follow the module layout
# of agentgw/mcp/ (the upstream client in upstream/upstream.py); adjust them when that changes.
# First match wins, so the deeper parts of a call come first: a sample inside aiohttp under the endpoint's
# handler counts as the upstream leg, one in the handler's own frames as agentgw.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("garbage collector", ("gc_collect_main",)),
    (
        "upstream leg: aiohttp request and answer (agentgw/mcp/upstream/leg.py)",
        ("aiohttp/", "agentgw/mcp/upstream/leg.py"),
    ),
    (
        "upstream leg: httpx2 (the SDK client's negotiation, GET and listen streams)",
        ("stream_within_origin", "Response.aread", "AsyncClient.send"),
    ),
    ("upstream leg: the SDK client (dispatcher, streams)", ("mcp/client/",)),
    ("agentgw: audit (record building, store)", ("agentgw/audit/", "agentgw/stages/audit.py")),
    (
        "agentgw: endpoint handlers + pipeline (Exchange, stages, direct path, upstream stamping)",
        (
            "agentgw/pipeline.py",
            "agentgw/mcp/front/endpoint.py",
            "agentgw/mcp/front/direct.py",
            "agentgw/mcp/front/mediate.py",
            "agentgw/mcp/bridges/roundtrip.py",
            "agentgw/mcp/upstream/upstream.py",
            "agentgw/stages/",
        ),
    ),
    (
        "downstream SDK server (session manager, transport, SSE response, ServerRunner, validation)",
        ("mcp/server/", "mcp/shared/", "sse_starlette/"),
    ),
    (
        "agentgw: front door (Host/Origin, API key, task, response headers)",
        ("agentgw/mcp/plane.py", "agentgw/frontdoor.py", "agentgw/server.py"),
    ),
    ("uvicorn (HTTP parsing, response writes)", ("uvicorn/protocols",)),
)


def components(raw: Path, rules: tuple[tuple[str, tuple[str, ...]], ...] = COMPONENTS) -> str:
    """A markdown table: the share of the gateway's busy samples (py-spy raw format) per component of `rules`."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if ("concurrent/futures/thread.py" in stack and "_WorkItem" not in stack) or (
            "WorkerThread.run" in stack and "Queue.get" in stack
        ):
            continue  # an idle pool thread
        total += int(count)
        name = next((n for n, frags in rules if any(f in stack for f in frags)), "event loop, other")
        counts[name] = counts.get(name, 0) + int(count)
    out = [f"{total} busy samples\n", "| component (exclusive) | % |", "|---|---:|"]
    out += [
        f"| {n} | {c * 100 / max(1, total):.1f} |" for n, c in sorted(counts.items(), key=lambda x: -x[1])
    ]
    return "\n".join(out) + "\n"


def phase_profile(o: Options, env: McpEnv) -> dict[str, str]:
    """py-spy (blocking samples, --native) on the gateway, per era at c=1 and c=N, apart from the measured runs."""
    import stacks

    found = py_spy(o.profile)
    if found is None:
        return {}
    spy, outdir = found
    stacks.LAYERS = MCP_LAYERS + stacks.LAYERS
    summaries: dict[str, str] = {}
    for era in ERAS:
        for c in (1, o.concurrency):
            name = f"{era}-c{c}"
            raw = outdir / f"gateway-mcp-{name}.txt"
            load = lambda era=era, c=c: load_run(env, "gateway", era, 10_000_000, c, o.profile_seconds)  # noqa: E731
            if profiled(spy, env.pid("gateway"), raw, load):
                summaries[name] = components(raw) + "\n" + stacks.report(stacks.load(raw), top=25)
                (outdir / f"gateway-mcp-{name}.md").write_text(summaries[name])
                log(f"profile {name}: {raw} (summary: {outdir / f'gateway-mcp-{name}.md'})")
    return summaries


# -- report ------------------------------------------------------------------------------------------------------


def rows(res: dict[str, Any], o: Options) -> list[Row]:
    out: list[Row] = []
    n = o.concurrency
    for era in ERAS:
        load = res["load"][era]
        label = ERA_LABEL[era]

        def m(name: str, key: str, load: dict[str, Any] = load) -> dict[str, float | None]:
            return {t: load[name][t].get(key) for t in TARGETS}

        c1p50, cn = m("c1", "p50_ms"), m(f"c{n}", "rps")
        added = (c1p50["gateway"] or 0.0) - (c1p50["direct"] or 0.0)
        half = (cn["gateway"] or 0.0) >= 0.5 * (cn["direct"] or 0.0)

        def gw(key: str, load: dict[str, Any] = load) -> dict[str, float | None]:
            return {"gateway": load[key]["gateway"].get("gateway_cpu_us_per_call")}

        out += [
            Row(f"{label}: c=1 throughput", "calls/s", m("c1", "rps")),
            Row(f"{label}: c=1 latency p50", "ms", c1p50, "added ≤ 2 ms", added <= 2.0),
            Row(f"{label}: c=1 latency p99", "ms", m("c1", "p99_ms")),
            Row(f"{label}: c={n} throughput", "calls/s", cn, "≥ 0.5× direct", half),
            Row(f"{label}: c={n} latency p50", "ms", m(f"c{n}", "p50_ms")),
            Row(f"{label}: c={n} latency p99", "ms", m(f"c{n}", "p99_ms")),
            Row(f"{label}: gateway CPU per call, c=1", "µs", gw("c1")),
            Row(f"{label}: gateway CPU per call, c={n}", "µs", gw(f"c{n}")),
            Row(f"{label}: upstream CPU per call, c={n}", "µs", m(f"c{n}", "upstream_cpu_us_per_call")),
        ]
    return out


LAYOUT = Layout(TARGETS)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["upstream"]:
        ap = argparse.ArgumentParser(prog="mcp_bench.py upstream")
        ap.add_argument("--port", type=int, required=True)
        ap.add_argument("--era", choices=ERAS, required=True)
        ap.add_argument("--sse", action="store_true")
        a = ap.parse_args(args[1:])
        serve_upstream(a.port, a.era, a.sse)
        return 0
    if args[:1] == ["load"]:
        load_main(args[1:])
        return 0

    o = parse_args(args)
    nofile = raise_nofile()
    env = McpEnv(Path(tempfile.mkdtemp(prefix="agentgw-bench-mcp-")), o.upstream_sse)
    env.write_config()
    res = header("mcp_bench.py", args, o, nofile)
    log(f"temp dir {env.tmp}")
    with running(env, res, o.keep):
        env.start_upstreams()
        res["gateway_start_s"] = env.start_gateway(o.workers)
        res["upstreams"] = env.wait_gateway_upstreams()
        log(f"gateway ready in {res['gateway_start_s']:.2f} s; upstreams {res['upstreams']}")
        if o.scope:
            res["scope"] = phase_scope(o, env)
        else:
            res["load"] = phase_load(o, env)
        if o.profile:
            res["profile"] = phase_profile(o, env)
    if o.scope:
        bg = backgrounds(res["scope"])
        print(scope_table(res["scope"]))
        print(f"\n{res['machine']}; agentgw {res['agentgw']}; {res['elapsed_s']:.0f} s")
        print(
            f"background load from other processes: median {statistics.median(bg):.2f}, max {max(bg):.2f} cores"
        )
        write_json(o.json, res)
        return 0
    footer = (
        f"{res['machine']}; agentgw {res['agentgw']}; upstream responses {'SSE' if o.upstream_sse else 'JSON'}; "
        f"{res['audit_records']} audit records; {res['elapsed_s']:.0f} s"
    )
    return finish(res, LAYOUT, rows(res, o), footer, o.strict, o.json)


if __name__ == "__main__":
    sys.exit(main())
