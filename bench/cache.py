"""The response cache benchmark: latency (p50/p99 at c=1) and throughput (at c=N) through a running gateway of a
miss to the mock upstream (cache off, and an exact-cache miss), an exact-cache hit, a semantic-cache hit and a
semantic-cache miss. Not a test. Bounded counts; prints a markdown table.

    .venv/bin/python bench/cache.py [--requests 400] [--concurrency 16] [--load-requests 2000] [--dims 1536]

Processes (loopback): bench/upstream.py (chat completions), an embeddings upstream (this file with
`--embed-server`: texts containing `#same` get one fixed vector, any other text a vector from its hash) and
`agentgw serve` (one worker, SQLite audit), started once per cache mode. Each request of a run carries its own text
where the scenario needs an exact miss; a semantic hit is a new text whose vector is the primed entry's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from harness import (
    API_KEY,
    PY,
    UPSTREAM_KEY,
    Env,
    free_port,
    http_status,
    log,
    raise_nofile,
    stop,
    wait_until,
    write_gateway_config,
)
from loadgen import percentile
from upstream import lifespan

HERE = Path(__file__).resolve().parent


# -- the embeddings upstream ------------------------------------------------------------------------------------


def embed_app(dims: int) -> Any:
    import numpy as np

    same = np.zeros(dims, dtype=np.float32)
    same[0] = 1.0

    def answer(text: str) -> bytes:
        if "#same" in text:
            vector = same
        else:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).normal(size=dims).astype(np.float32)
        data = [{"object": "embedding", "index": 0, "embedding": vector}]
        usage = {"prompt_tokens": 8, "total_tokens": 8}
        out = {"object": "list", "data": data, "model": "embed", "usage": usage}
        return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if scope["method"] != "POST" or not scope["path"].endswith("/embeddings"):
            status, out = 404, b'{"error":{"message":"not found"}}'
        else:
            status, out = 200, answer(str(orjson.loads(body)["input"]))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def serve_embeddings(port: int, dims: int) -> None:
    import uvicorn

    uvicorn.run(
        embed_app(dims), host="127.0.0.1", port=port, loop="uvloop", log_level="warning", access_log=False
    )


# -- the load ---------------------------------------------------------------------------------------------------


async def load(
    url: str, body: Callable[[int], bytes], n: int, c: int, expect: str, first: int = 0
) -> dict[str, Any]:
    """`n` requests by `c` workers (request i has body(first + i)); latency, throughput and how many answered with
    the expected `x-agentgw-cache`."""
    import aiohttp

    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    latencies: list[float] = []
    matched, failed, nxt = 0, 0, 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal matched, failed, nxt
        while nxt < n:
            i, nxt = nxt, nxt + 1
            data = body(first + i)
            t0 = time.perf_counter()
            async with session.post(url, data=data, headers=headers) as resp:
                await resp.read()
                latencies.append(time.perf_counter() - t0)
                failed += resp.status != 200
                matched += resp.headers.get("x-agentgw-cache", "none") == expect

    connector = aiohttp.TCPConnector(limit=c)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(c)))
        wall = time.perf_counter() - t0
    return {
        "n": n,
        "rps": n / wall,
        "p50_ms": percentile(sorted(latencies), 50) * 1000,
        "p99_ms": percentile(sorted(latencies), 99) * 1000,
        "expected": matched / n,
        "errors": failed,
    }


def chat(model: str, text: str) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}]})


# Scenario → (gateway cache mode, model, the text of request i, the expected x-agentgw-cache, a priming text).
SCENARIOS: dict[str, tuple[str, str, Callable[[int], str], str, str | None]] = {
    "miss, cache off": ("exact", "plain", lambda i: f"Say hello, please. {i}", "none", None),
    "exact miss": ("exact", "cached", lambda i: f"Say hello, please. {i}", "miss", None),
    "exact hit": ("exact", "cached", lambda i: "Say hello, please.", "hit", "Say hello, please."),
    "semantic miss": ("semantic", "cached", lambda i: f"Say hello, please. {i}", "miss", None),
    "semantic hit": (
        "semantic",
        "cached",
        lambda i: f"Say hello #same {i}",
        "semantic-hit",
        "Hi there #same",
    ),
}


def gateway_config(env: Env, mode: str, embed_port: int) -> None:
    upstream = {
        "name": "upstream",
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{env.ports['direct']}/v1",
        "api_key": UPSTREAM_KEY,
    }
    embedder = {"name": "embedder", "kind": "openai", "base_url": f"http://127.0.0.1:{embed_port}/v1"}
    target = [{"provider": "upstream", "model": "bench"}]
    models = [
        {"name": "plain", "targets": target},
        {"name": "cached", "targets": target},
        {"name": "embed", "targets": [{"provider": "embedder", "model": "embed"}]},
    ]
    cache: dict[str, Any] = {"mode": mode, "models": ["cached"], "max_entries": 100_000}
    if mode == "semantic":
        cache["semantic"] = {"embedding_model": "embed", "max_entries": 1000}
    reg = {"llm.yaml": {"llm": {"providers": [upstream, embedder], "models": models}}}
    extra = {"upstream": {"pool_size": 1024}, "llm": {"cache": cache}}
    write_gateway_config(env.tmp, env.ports["gateway"], reg, **extra)


def run(o: argparse.Namespace) -> dict[str, dict[str, Any]]:
    env = Env(Path(tempfile.mkdtemp(prefix="agentgw-cache-bench-")))
    embed_port = free_port()
    cmd = [PY, str(Path(__file__).resolve()), "--embed-server", str(embed_port), "--dims", str(o.dims)]
    embed = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, dict[str, Any]] = {}
    try:
        env.start_upstream()
        wait_until(lambda: http_status(embed_port, "/") == 404, 20, embed, "embeddings upstream")
        for mode in ("exact", "semantic"):
            gateway_config(env, mode, embed_port)
            env.start_gateway()
            log(f"gateway up, llm.cache.mode {mode}")
            url = f"http://127.0.0.1:{env.ports['gateway']}/v1/chat/completions"
            for name, (m, model, text, expect, prime) in SCENARIOS.items():
                if m != mode:
                    continue

                def body(i: int, model: str = model, text: Callable[[int], str] = text) -> bytes:
                    return chat(model, text(i))

                if prime is not None:
                    primed = chat(model, prime)
                    asyncio.run(load(url, lambda _, b=primed: b, 1, 1, "miss"))
                asyncio.run(load(url, body, min(50, o.requests), 1, expect, first=10**6))  # warm-up
                one = asyncio.run(load(url, body, o.requests, 1, expect))
                many = asyncio.run(load(url, body, o.load_requests, o.concurrency, expect, first=10**7))
                results[name] = {"c1": one, "cN": many}
                log(f"{name}: c=1 p50 {one['p50_ms']:.2f} ms, c={o.concurrency} {many['rps']:.0f} req/s")
            env.stop_gateway()
    finally:
        env.close()
        stop(embed)
        shutil.rmtree(env.tmp, ignore_errors=True)
    return results


def table(results: dict[str, dict[str, Any]], c: int) -> str:
    head = [
        "scenario",
        "c=1 p50 ms",
        "c=1 p99 ms",
        f"c={c} req/s",
        f"c={c} p50 ms",
        f"c={c} p99 ms",
        "as expected",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        one, many = r["c1"], r["cN"]
        ok = min(one["expected"], many["expected"]) * 100
        cells = [
            name,
            f"{one['p50_ms']:.2f}",
            f"{one['p99_ms']:.2f}",
            f"{many['rps']:.0f}",
            f"{many['p50_ms']:.2f}",
            f"{many['p99_ms']:.2f}",
            f"{ok:.0f}%"
            + (f" ({one['errors'] + many['errors']} errors)" if one["errors"] + many["errors"] else ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400, help="sequential requests per scenario (c=1)")
    ap.add_argument("--load-requests", type=int, default=2000, help="requests per scenario at c=N")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--dims", type=int, default=1536, help="embedding dimensions")
    ap.add_argument("--embed-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o.embed_server:
        serve_embeddings(o.embed_server, o.dims)
        return 0
    raise_nofile()
    started = time.perf_counter()
    results = run(o)
    print(table(results, o.concurrency))
    print(
        f"\n{o.dims}-dim embeddings from a local upstream; one gateway worker, SQLite audit; "
        f"{time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
