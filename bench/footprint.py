"""Footprint and cold start as a user sees them (`make bench`): `agentgw serve` with every plane configured (the
quickstart: LLM models, MCP servers, A2A agents, budgets, guardrails, policies, audit on), timed from spawn to the
first 200 from /readyz, then the idle memory of its whole process tree (RSS and PSS summed over the main process,
the audit writer and any other child, from /proc/<pid>/smaps_rollup). Not a test.

The quickstart's demo upstreams (the docs MCP server, the planner and researcher agents) run as separate
processes started here, not by the gateway, so they are not counted; the stdio `time` server (a child of the
gateway by nature) is left out. Memory is also reported after one call on each plane, so what an import deferred
to first use costs is visible too.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from harness import HERE, MIB, PY, free_port, http_status, log, stop, wait_until
from procs import tree, tree_cpu

ROOT = HERE.parent
QUICKSTART = ROOT / "examples" / "quickstart" / "agentgw.yaml"
DEMO_KEY = "agw-demo-key"
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "footprint", "version": "1"},
    },
}


# -- the process tree ------------------------------------------------------------------------------------------


def rollup(pid: int) -> dict[str, float]:
    """Rss / Pss / Anonymous of one process, MiB (smaps_rollup). PSS splits a page among every process that maps
    it, the gateway's or not: other Python processes using the same files on this machine lower it. Anonymous
    memory (the heaps: the writer is exec'd, not forked, so none is shared) does not depend on them."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Anonymous", "Private_Dirty"):
                out[key.lower()] = int(rest.split()[0]) * 1024 / MIB
    return out


def thread_cpu(pid: int, tid: int) -> float:
    """utime + stime of one thread of a process, seconds (the main thread: tid == pid)."""
    with open(f"/proc/{pid}/task/{tid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()


def tree_memory(pid: int) -> dict[str, Any]:
    procs = []
    for p in tree(pid):
        try:
            procs.append({"pid": p, "cmd": cmdline(p)[:120], **rollup(p)})
        except OSError:
            continue
    return {
        "processes": procs,
        "rss_mib": sum(p["rss"] for p in procs),
        "pss_mib": sum(p["pss"] for p in procs),
        "anon_mib": sum(p["anonymous"] for p in procs),
    }


# -- the setup -------------------------------------------------------------------------------------------------


def write_config(tmp: Path, ports: dict[str, int], llm: str) -> Path:
    """The quickstart's agentgw.yaml and registry in `tmp`, with the upstreams' `command:`s and the stdio server
    taken out (they run on their own, see start_upstreams), and the audit store in `tmp`. `llm`: `mock` keeps the
    quickstart's mock providers (the gateway loads the tokenizer at start for them); `openai` points the same
    models at an OpenAI-kind provider on a port where nothing listens (a deployment's shape: nothing to count)."""
    cfg = yaml.safe_load(QUICKSTART.read_text())
    reg = tmp / "registry"
    reg.mkdir()
    for src in sorted((ROOT / "registry").glob("*.yaml")):
        doc = yaml.safe_load(src.read_text())
        for plane, key in (("mcp", "servers"), ("a2a", "agents")):
            entries = (doc.get(plane) or {}).get(key) or []
            kept = [{k: v for k, v in e.items() if k not in ("command", "env")} for e in entries]
            if plane in doc:
                doc[plane][key] = [e for e in kept if e.get("transport") != "stdio"]
        if "mcp" in doc:  # the virtual server named the stdio server's tool
            for v in doc["mcp"].get("virtual_servers", []):
                v["tools"] = [t for t in v["tools"] if not t.startswith("time__")]
        if "llm" in doc and llm == "openai":  # a provider kind that counts nothing: no tokenizer warm-up
            doc["llm"]["providers"] = [
                {
                    "name": p["name"],
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{ports['dead']}/v1",
                    "api_key": "sk-footprint-0123456789",
                }
                for p in doc["llm"]["providers"]
            ]
        (reg / src.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg["registry"] = ["registry/*.yaml"]
    cfg["policies"] = {k: str(ROOT / "policies" / Path(v).name) for k, v in cfg["policies"].items()}
    cfg["auth"]["keys_file"] = str(tmp / "keys.yaml")
    cfg["audit"] = {"sqlite": {"path": str(tmp / "audit.db")}}
    cfg["logging"] = {"level": "warning"}
    path = tmp / "agentgw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def port_env(ports: dict[str, int]) -> dict[str, str]:
    return {
        **os.environ,
        "PORT": str(ports["gateway"]),
        "DOCS_PORT": str(ports["docs"]),
        "PLANNER_PORT": str(ports["planner"]),
        "RESEARCHER_PORT": str(ports["researcher"]),
    }


def start_upstreams(ports: dict[str, int], logs: Path) -> list[subprocess.Popen[bytes]]:
    env = {**port_env(ports), "DOCS_TOKEN": "quickstart-docs-token"}
    agents = ROOT / "examples" / "agents"
    gw = f"http://127.0.0.1:{ports['gateway']}"
    cmds = {
        "docs": ([PY, str(ROOT / "examples" / "servers" / "docs_server.py")], env),
        "planner": (
            [PY, str(agents / "planner.py"), "--port", str(ports["planner"])],
            {**env, "AGENTGW_URL": gw, "AGENTGW_KEY": "agw-demo-planner-key"},
        ),
        "researcher": (
            [PY, str(agents / "researcher.py"), "--port", str(ports["researcher"])],
            {**env, "AGENTGW_URL": gw, "AGENTGW_KEY": "agw-demo-researcher-key"},
        ),
    }
    procs = []
    for name, (cmd, e) in cmds.items():
        fh = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        procs.append(subprocess.Popen(cmd, env=e, stdout=fh, stderr=fh))
    for (name, _), proc in zip(cmds.items(), procs, strict=True):
        port = ports[name]
        wait_until(lambda port=port: http_status(port, "/") is not None, 30, proc, name)  # type: ignore[misc]
    return procs


def start_gateway(
    config: Path, ports: dict[str, int], logs: Path, extra_env: dict[str, str]
) -> tuple[Any, float, float, float]:
    exe = Path(PY).parent / "agentgw"
    cmd = [str(exe)] if exe.exists() else [PY, "-m", "agentgw"]
    cmd += ["serve", "--config", str(config)]
    fh = open(logs / "gateway.log", "ab")  # noqa: SIM115 - the child keeps it
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**port_env(ports), **extra_env}, stdout=fh, stderr=fh)
    port = ports["gateway"]
    wait_until(lambda: http_status(port, "/readyz", 0.5) == 200, 60, proc, "gateway")
    return proc, time.perf_counter() - t0, tree_cpu(tree(proc.pid)), thread_cpu(proc.pid, proc.pid)


def post(port: int, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, orjson.dumps(body), headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def one_call_per_plane(port: int) -> dict[str, int]:
    """A chat completion, an MCP initialize + tools/list, an A2A directory read: each plane's first use."""
    auth = {"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"}
    chat = {"model": "mock-fast", "messages": [{"role": "user", "content": "hello"}]}
    out = {"llm": post(port, "/v1/chat/completions", chat, auth)[0]}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/mcp", orjson.dumps(MCP_INIT), {**auth, **MCP_HEADERS})
        resp = conn.getresponse()
        resp.read()
        out["mcp_initialize"] = resp.status
        sid = resp.getheader("mcp-session-id") or ""
        ver = {"mcp-protocol-version": "2025-06-18"}
        conn.request(
            "POST",
            "/mcp",
            orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            {**auth, **MCP_HEADERS, "mcp-session-id": sid, **ver},
        )
        conn.getresponse().read()
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        conn.request(
            "POST", "/mcp", orjson.dumps(listing), {**auth, **MCP_HEADERS, "mcp-session-id": sid, **ver}
        )
        resp = conn.getresponse()
        resp.read()
        out["mcp_tools_list"] = resp.status
        conn.request("GET", "/a2a", headers=auth)
        resp = conn.getresponse()
        resp.read()
        out["a2a_directory"] = resp.status
    finally:
        conn.close()
    return out


# -- the run ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="cold starts (the median is reported)")
    ap.add_argument(
        "--settle", type=float, default=2.0, help="seconds idle after /readyz before memory is read"
    )
    ap.add_argument(
        "--llm", choices=["mock", "openai"], default="mock", help="the providers' kind (write_config)"
    )
    ap.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="extra environment for the gateway"
    )
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs)")
    a = ap.parse_args(argv)
    extra_env = dict(kv.split("=", 1) for kv in a.env)
    tmp = Path(tempfile.mkdtemp(prefix="agentgw-footprint-"))
    ports = {name: free_port() for name in ("gateway", "docs", "planner", "researcher", "dead")}
    config = write_config(tmp, ports, a.llm)
    load0 = os.getloadavg()[0]
    upstreams = start_upstreams(ports, tmp)
    runs: list[dict[str, Any]] = []
    try:
        for i in range(max(1, a.runs)):
            gw, ready_s, ready_cpu, main_cpu = start_gateway(config, ports, tmp, extra_env)
            try:
                time.sleep(a.settle)
                idle = tree_memory(gw.pid)
                run: dict[str, Any] = {
                    "ready_s": ready_s,
                    "ready_cpu_s": ready_cpu,
                    "main_thread_cpu_s": main_cpu,
                    "idle": idle,
                }
                if i == 0:  # first use of every plane, once
                    run["calls"] = one_call_per_plane(ports["gateway"])
                    time.sleep(a.settle)
                    run["after_calls"] = tree_memory(gw.pid)
                runs.append(run)
                log(
                    f"run {i + 1}: ready in {ready_s:.3f} s ({ready_cpu:.2f} CPU s, main thread {main_cpu:.2f}); idle tree {len(idle['processes'])} processes, "
                    f"RSS {idle['rss_mib']:.1f} MiB, PSS {idle['pss_mib']:.1f} MiB"
                )
            finally:
                stop(gw)
    finally:
        for p in upstreams:
            stop(p)
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    first = runs[0]
    res = {
        "command": " ".join(
            [".venv/bin/python", "bench/footprint.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "nproc": os.cpu_count(),
        "loadavg_1m_before": load0,
        "loadavg_1m_after": os.getloadavg()[0],
        "ready_s": [r["ready_s"] for r in runs],
        "ready_median_s": statistics.median(r["ready_s"] for r in runs),
        "ready_cpu_median_s": statistics.median(r["ready_cpu_s"] for r in runs),
        "main_thread_cpu_median_s": statistics.median(r["main_thread_cpu_s"] for r in runs),
        "idle_rss_median_mib": statistics.median(r["idle"]["rss_mib"] for r in runs),
        "idle_pss_median_mib": statistics.median(r["idle"]["pss_mib"] for r in runs),
        "idle_anon_median_mib": statistics.median(r["idle"]["anon_mib"] for r in runs),
        "runs": runs,
    }
    print("| process (idle, first run) | RSS MiB | PSS MiB | anonymous MiB |\n|---|---|---|---|")
    for p in first["idle"]["processes"]:
        print(f"| {p['cmd'][:70]} | {p['rss']:.1f} | {p['pss']:.1f} | {p['anonymous']:.1f} |")
    print()
    after = first["after_calls"]
    print("| metric | value | target |\n|---|---|---|")
    print(
        f"| cold start, spawn → 200 /readyz (median of {len(runs)}) | {res['ready_median_s']:.3f} s | ≤ 1.0 s |"
    )
    print(f"| CPU used by the tree until ready (median) | {res['ready_cpu_median_s']:.3f} s | |")
    print(f"| CPU of the main thread until ready (median) | {res['main_thread_cpu_median_s']:.3f} s | |")
    print(f"| idle process tree RSS (median) | {res['idle_rss_median_mib']:.1f} MiB | ≤ 100 MiB |")
    print(f"| idle process tree PSS (median) | {res['idle_pss_median_mib']:.1f} MiB | |")
    print(f"| idle process tree anonymous memory (median) | {res['idle_anon_median_mib']:.1f} MiB | |")
    print(
        f"| tree RSS / PSS after one call per plane | {after['rss_mib']:.1f} / {after['pss_mib']:.1f} MiB | |"
    )
    print(
        f"\ncold starts {', '.join(f'{s:.3f}' for s in res['ready_s'])} s; calls {first['calls']}; "
        f"{res['nproc']} cores, load average {load0:.2f} before, {res['loadavg_1m_after']:.2f} after"
    )
    if a.json:
        Path(a.json).write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
