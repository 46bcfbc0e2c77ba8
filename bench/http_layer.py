"""Which HTTP layer for the LLM hot path (issue #16): one run, rounds interleaved, on 127.0.0.1. Not a test.

Measures, against the same upstream mock (bench/upstream.py), non-streaming chat completions at c=32 (wrk) and
streaming time-to-first-byte at c=1 (bench/loadgen.py) for:
  direct             client → upstream
  floor-uvicorn      → bench/proxy.py (pure ASGI pass-through, one aiohttp session) on uvicorn + httptools
  floor-granian      → the same ASGI proxy on granian (Rust HTTP server, asyncio app, uvloop)
  floor-raw          → a raw asyncio Protocol + httptools server, aiohttp upstream client
  floor-raw2         → a raw asyncio Protocol + httptools server and a raw keep-alive httptools upstream client
  gateway-uvicorn    → `agentgw serve` (all the bench's stages: authn, authz, audit)
  gateway-granian    → the same agentgw ASGI app and config on granian (bench only: `--with-granian`)
The floors bound what any gateway on that layer can reach; the two gateways measure the swap itself. granian is
not a dependency: install it apart (`pip install --target DIR granian`) and pass `--extra-path DIR`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from harness import (
    CHAT,
    HERE,
    PY,
    Env,
    audit_count,
    http_status,
    log,
    raise_nofile,
    requests_run,
    run_loadgen,
    stop,
    wait_until,
)
from procs import tree, tree_cpu

# -- the raw floors (run as `python http_layer.py raw --port P --upstream URL [--raw-client]`) -------------------


class RawServer(asyncio.Protocol):
    """HTTP/1.1 keep-alive server on httptools: every POST is forwarded to the upstream, the answer relayed."""

    def __init__(self, forward: Any) -> None:
        import httptools

        self.forward = forward
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, headers, body = self.url, self.headers, b"".join(self.body)
        self.url, self.headers, self.body = b"", [], []
        asyncio.get_running_loop().create_task(self._answer(url, headers, body))

    async def _answer(self, url: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        assert self.transport is not None
        if b'"stream":true' in body or b'"stream": true' in body:
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            async for chunk in self.forward.stream(url, body):
                self.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.transport.write(b"0\r\n\r\n")
            return
        status, data = await self.forward.once(url, body)
        head = b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (
            status,
            len(data),
        )
        self.transport.write(head + data)


class AiohttpForward:
    def __init__(self, upstream: str) -> None:
        import aiohttp

        self.upstream = upstream
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        self.headers = {
            "content-type": "application/json",
            "authorization": "Bearer sk-bench-upstream-0123456789",
        }

    async def once(self, url: bytes, body: bytes) -> tuple[int, bytes]:
        async with self.session.post(self.upstream + url.decode(), data=body, headers=self.headers) as r:
            return r.status, await r.read()

    async def stream(self, url: bytes, body: bytes) -> Any:
        async with self.session.post(self.upstream + url.decode(), data=body, headers=self.headers) as r:
            async for chunk in r.content.iter_any():
                yield chunk


class RawClient(asyncio.Protocol):
    """One keep-alive upstream connection; one request at a time; the response parsed by httptools."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.queue.put_nowait(body)

    def on_message_complete(self) -> None:
        self.queue.put_nowait(None)


class RawForward:
    def __init__(self, upstream: str) -> None:
        host, port = upstream.split("//", 1)[1].split(":")
        self.host, self.port = host, int(port)
        self.idle: list[RawClient] = []
        self.auth = b"authorization: Bearer sk-bench-upstream-0123456789\r\n"

    async def _conn(self) -> RawClient:
        if self.idle:
            return self.idle.pop()
        _, proto = await asyncio.get_running_loop().create_connection(RawClient, self.host, self.port)
        return proto

    async def _send(self, url: bytes, body: bytes) -> RawClient:
        c = await self._conn()
        assert c.transport is not None
        c.transport.write(
            b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
            % (url, self.host.encode(), self.auth, len(body), body)
        )
        return c

    async def once(self, url: bytes, body: bytes) -> tuple[int, bytes]:
        c = await self._send(url, body)
        parts = []
        while (chunk := await c.queue.get()) is not None:
            parts.append(chunk)
        status = c.parser.get_status_code()
        self.idle.append(c)
        return status, b"".join(parts)

    async def stream(self, url: bytes, body: bytes) -> Any:
        c = await self._send(url, body)
        while (chunk := await c.queue.get()) is not None:
            yield chunk
        self.idle.append(c)


def serve_raw(port: int, upstream: str, raw_client: bool) -> None:
    import uvloop

    async def run() -> None:
        fwd = RawForward(upstream) if raw_client else AiohttpForward(upstream)
        server = await asyncio.get_running_loop().create_server(lambda: RawServer(fwd), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(run())


def floor_app() -> Any:
    """granian's factory for the floor: bench/proxy.py's ASGI proxy."""
    from proxy import Proxy

    return Proxy(os.environ["FLOOR_UPSTREAM"])


# -- the run ---------------------------------------------------------------------------------------------------


class Servers:
    def __init__(
        self, env: Env, extra_path: str | None, with_granian: bool, compare: str | None, only: str | None
    ) -> None:
        self.env, self.procs, self.ports = env, {}, {}
        self.compare = compare
        self.only = set(only.split(",")) if only else None
        self.extra = extra_path
        self.with_granian = with_granian
        self.up = f"http://127.0.0.1:{env.ports['direct']}"

    def _start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, ready: str = "/") -> None:
        from harness import free_port

        if self.only is not None and name not in self.only:
            return
        port = free_port()
        cmd = [c.replace("{port}", str(port)) for c in cmd]
        fh = open(self.env.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, env=env or dict(os.environ), cwd=HERE)
        self.procs[name], self.ports[name] = proc, port
        wait_until(lambda: http_status(port, ready) not in (None, 503), 60, proc, name)

    def start_all(self) -> None:
        pypath = os.pathsep.join(p for p in (str(HERE), self.extra, os.environ.get("PYTHONPATH")) if p)
        genv = {**os.environ, "PYTHONPATH": pypath, "FLOOR_UPSTREAM": self.up}
        granian = [PY, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--workers", "1"]
        granian += ["--runtime-mode", "st", "--no-log", "--host", "127.0.0.1", "--port", "{port}"]
        self._start("floor-uvicorn", [PY, str(HERE / "proxy.py"), "--port", "{port}", "--upstream", self.up])
        if self.extra:
            self._start("floor-granian", [*granian, "--factory", "http_layer:floor_app"], genv)
        raw = [PY, str(HERE / "http_layer.py"), "raw", "--port", "{port}", "--upstream", self.up]
        self._start("floor-raw", raw)
        self._start("floor-raw2", [*raw, "--raw-client"])
        exe = str(Path(PY).parent / "agentgw")
        self._start("gateway-uvicorn", [exe, "serve", "--config", str(self.env.config), "--port", "{port}"])
        if self.compare:
            cfg = yaml.safe_load(self.env.config.read_text())
            cfg["audit"] = {"sqlite": {"path": "audit-compare.db"}}
            path = self.env.tmp / "agentgw-compare.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            cenv = {**os.environ, "PYTHONPATH": self.compare}
            self._start("gateway-compare", [exe, "serve", "--config", str(path), "--port", "{port}"], cenv)
        if self.extra and self.with_granian:
            cfg = yaml.safe_load(self.env.config.read_text())
            cfg["audit"] = {"sqlite": {"path": "audit-granian.db"}}
            path = self.env.tmp / "agentgw-granian.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            self._start(
                "gateway-granian",
                [*granian, "--factory", "agentgw.cli:app_from_env"],
                {**genv, "AGENTGW_CONFIG": str(path)},
                "/readyz",
            )

    def url(self, name: str) -> str:
        port = self.env.ports["direct"] if name == "direct" else self.ports[name]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    def pid(self, name: str) -> int:
        return self.env.procs["upstream"].pid if name == "direct" else self.procs[name].pid

    def close(self) -> None:
        for p in self.procs.values():
            stop(p)


def profile(srv: Servers, outdir: Path, seconds: float, extra: str | None) -> None:
    """py-spy (native frames, 200 Hz) on each gateway under c=32; bench/stacks.py summarises by layer."""
    from stacks import load, report

    spy = shutil.which("py-spy") or next((str(Path(d) / "bin" / "py-spy") for d in (extra,) if d), "")
    if not spy or not Path(spy).exists():
        log("py-spy not found: no profile")
        return
    outdir.mkdir(parents=True, exist_ok=True)
    for name in [n for n in srv.procs if n.startswith("gateway")]:
        raw = outdir / f"{name}.txt"
        pid = srv.pid(name)
        if name == "gateway-granian":  # the app runs in granian's worker process
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                pid = int(fh.read().split()[0])
        cmd = [spy, "record", "-p", str(pid), "-r", "200", "--native", "--format", "raw", "-o", str(raw)]
        spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        requests_run("wrk", srv.url(name), 10**7, 32, seconds)
        spy_proc.send_signal(signal.SIGINT)
        spy_proc.wait(30)
        if raw.exists():
            (outdir / f"{name}.md").write_text(report(load(raw)))
            log(f"profile {name}: {outdir / f'{name}.md'}")


def main(argv: list[str] | None = None) -> int:
    if (argv or sys.argv[1:])[:1] == ["raw"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("raw")
        ap.add_argument("--port", type=int, required=True)
        ap.add_argument("--upstream", required=True)
        ap.add_argument("--raw-client", action="store_true")
        a = ap.parse_args(argv)
        serve_raw(a.port, a.upstream, a.raw_client)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="c=32 run length")
    ap.add_argument("--ttfb-requests", type=int, default=1000)
    ap.add_argument("--extra-path", help="a folder with granian installed (pip install --target)")
    ap.add_argument("--with-granian", action="store_true", help="also run the gateway on granian")
    ap.add_argument("--compare-path", metavar="DIR", help="also run the gateway from another checkout (A/B)")
    ap.add_argument("--only", help="comma-separated targets to run (default: all)")
    ap.add_argument(
        "--profile", metavar="DIR", help="py-spy the gateways under c=32 into DIR (apart from the runs)"
    )
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args(argv)
    raise_nofile()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk)")
    env = Env(Path(tempfile.mkdtemp(prefix="agentgw-httplayer-")))
    env.write_config()
    env.start_upstream()
    srv = Servers(env, a.extra_path, a.with_granian, a.compare_path, a.only)
    stream_body = orjson.dumps({**CHAT, "stream": True, "bench": {"chunks": 5, "delay_ms": 0}})
    res: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        srv.start_all()
        names = ["direct", *srv.procs]
        for n in names:  # warm-up
            requests_run("wrk", srv.url(n), 10**6, 32, 1.0)
        for r in range(a.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n in order:
                pid = srv.pid(n)
                cpu0 = tree_cpu(tree(pid))
                cN = requests_run("wrk", srv.url(n), 10**7, 32, a.seconds)
                cN["cpu_us_per_req"] = (tree_cpu(tree(pid)) - cpu0) / max(1, cN["requests"]) * 1e6
                args = ["-n", str(a.ttfb_requests), "--duration", "3"]
                tt = run_loadgen("ttfb", srv.url(n), stream_body, args, 40)
                res.setdefault(n, {"c32": [], "ttfb": []})
                res[n]["c32"].append(cN)
                res[n]["ttfb"].append(tt)
                log(
                    f"round {r + 1} {n:16s} c=32 {cN['rps']:8,.0f} req/s p99 {cN['p99_ms']:.2f} ms "
                    f"{cN['cpu_us_per_req']:.0f} µs CPU/req; TTFB c=1 p50 {tt['ttfb_p50_ms']:.3f} ms"
                )
        if a.profile:
            profile(srv, Path(a.profile), a.seconds, a.extra_path)
    finally:
        srv.close()
        env.close()
        audits = {
            n: audit_count(env.tmp / f) for n, f in (("uvicorn", "audit.db"), ("granian", "audit-granian.db"))
        }
        shutil.rmtree(env.tmp, ignore_errors=True)
    med = {
        n: {
            "rps": statistics.median(x["rps"] for x in v["c32"]),
            "p99_ms": statistics.median(x["p99_ms"] for x in v["c32"]),
            "cpu_us": statistics.median(x["cpu_us_per_req"] for x in v["c32"]),
            "ttfb_p50_ms": statistics.median(x["ttfb_p50_ms"] for x in v["ttfb"]),
            "ttfb_p99_ms": statistics.median(x["ttfb_p99_ms"] for x in v["ttfb"]),
            "errors": sum(sum(x["errors"].values()) for x in v["c32"]),
        }
        for n, v in res.items()
    }
    d = med["direct"]
    print(
        "| target | c=32 req/s | ÷ direct | p99 ms | server CPU µs/req | TTFB c=1 p50 ms | added | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, m in med.items():
        print(
            f"| {n} | {m['rps']:,.0f} | {m['rps'] / d['rps']:.3f}× | {m['p99_ms']:.2f} | {m['cpu_us']:.0f} | "
            f"{m['ttfb_p50_ms']:.3f} | {m['ttfb_p50_ms'] - d['ttfb_p50_ms']:+.3f} | {m['errors']} |"
        )
    print(f"\naudit records written by the gateways: {audits}")
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()}; {a.rounds} rounds of {a.seconds} s")
    if a.json:
        Path(a.json).write_bytes(orjson.dumps({"medians": med, "rounds": res}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
