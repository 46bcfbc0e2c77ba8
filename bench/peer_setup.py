"""The gateways of bench/peers.py: each peer installed on demand from its registry package into its scratch folder,
and agentgw, LiteLLM, Portkey and ContextForge started and configured alike in front of the bench's mock upstreams.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from harness import (
    API_KEY,
    HERE,
    PY,
    UPSTREAM_KEY,
    Env,
    agentgw_cmd,
    free_port,
    gateway_source,
    http_status,
    log,
    spawn,
    stop,
    write_gateway_config,
)
from procs import tree, tree_rss_mib

CACHE = Path(os.environ.get("AGENTGW_BENCH_PEERS", Path.home() / ".cache" / "agentgw-bench-peers"))
PACKAGES = {  # peer → (installer, registry package, distribution whose version is reported)
    "litellm": ("pip", "litellm[proxy]", "litellm"),
    "contextforge": ("pip", "mcp-contextforge-gateway", "mcp-contextforge-gateway"),
    "portkey": ("npm", "@portkey-ai/gateway", "@portkey-ai/gateway"),
}
MASTER_KEY = "sk-litellm-bench-0123456789abcdef"  # LiteLLM's master key: its auth on, as deployed
SECRET = "agentgw-bench-secret-0123456789abcdef0123456789"


# -- peers: installed on demand ---------------------------------------------------------------------------------


def install(peer: str) -> str:
    """Install `peer` into its scratch folder unless it is there; its version."""
    kind, spec, dist = PACKAGES[peer]
    folder = CACHE / peer
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "npm":
        pkg = folder / "node_modules" / dist / "package.json"
        if not pkg.exists():
            log(f"installing {spec} into {folder} (npm)")
            cmd = ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", spec]
            subprocess.run(cmd, check=True, timeout=900, capture_output=True)
        return str(json.loads(pkg.read_text())["version"])
    py = folder / "venv" / "bin" / "python"
    if not py.exists():
        subprocess.run([PY, "-m", "venv", str(folder / "venv")], check=True, timeout=300)
    version = subprocess.run(
        [str(py), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if version.returncode != 0:
        log(f"installing {spec} into {folder}/venv (pip; a few minutes)")
        pip = [str(py), "-m", "pip", "install", "-q", spec]
        subprocess.run(pip, check=True, timeout=1800, capture_output=True)
        return install(peer)
    return version.stdout.strip()


# -- the gateways -----------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """One gateway under test: how to reach each plane it serves, its process and what it is."""

    name: str
    version: str
    proc: subprocess.Popen[bytes]
    start_s: float
    llm: tuple[str, dict[str, str]] | None = None  # chat completions URL, request headers
    mcp: tuple[str, str, str] | None = None  # MCP endpoint, tool name, bearer key
    sessionless: bool = False  # its MCP endpoint answers `initialize` without a session id (stateless)
    rss: dict[str, dict[str, float]] = field(default_factory=dict)


class Bench(Env):
    """The mock upstreams (chat completions, one MCP server) and every gateway, in one temp dir."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, ports={"direct": free_port(), "mcp": free_port()})
        self.gateways: dict[str, Gateway] = {}

    @property
    def llm_base(self) -> str:
        return f"http://127.0.0.1:{self.ports['direct']}/v1"

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mcp']}/mcp"

    def start_mcp(self, prefix: tuple[str, ...] = ()) -> None:
        """The MCP bench's SDK server (Streamable HTTP, JSON answers, one tool `add`), handshake era."""
        port = self.ports["mcp"]
        cmd = [*prefix, PY, str(HERE / "mcp_bench.py"), "upstream", "--port", str(port), "--era", "handshake"]
        ready = lambda: http_status(port, "/") == 404  # noqa: E731
        self.procs["mcp"], _ = spawn(cmd, self._log("mcp.log"), ready, "MCP upstream")

    def add(self, gw: Gateway) -> None:
        self.gateways[gw.name] = gw
        self.procs[gw.name] = gw.proc
        time.sleep(1.0)  # settle before the idle memory
        gw.rss["idle"] = {**tree_rss_mib(gw.proc.pid), "processes": len(tree(gw.proc.pid))}
        log(
            f"{gw.name} {gw.version} ready in {gw.start_s:.2f} s, tree RSS {gw.rss['idle']['tree_rss_mib']:.0f} MiB"
        )

    def close(self) -> None:
        for name in self.gateways:
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop(proc)
        mcp = self.procs.pop("mcp", None)
        if mcp is not None:
            stop(mcp)
        super().close()


def start_agentgw(b: Bench, name: str, mcp: bool, workers: int = 1, prefix: tuple[str, ...] = ()) -> Gateway:
    """`agentgw serve` as a user deploys it: API key auth, the Casbin policy, audit to SQLite, logging at warning."""
    folder = b.tmp / name
    folder.mkdir()
    provider = {"name": "upstream", "kind": "openai", "base_url": b.llm_base, "api_key": UPSTREAM_KEY}
    models = [{"name": "bench", "targets": [{"provider": "upstream", "model": "bench"}]}]
    registry: dict[str, dict[str, Any]] = {"llm.yaml": {"llm": {"providers": [provider], "models": models}}}
    if mcp:
        server = {"name": "bench", "transport": "streamable-http", "url": b.mcp_url, "timeout_s": 10}
        registry["mcp.yaml"] = {"mcp": {"servers": [server]}}
    port = free_port()
    config = write_gateway_config(folder, port, registry, upstream={"pool_size": 8192})
    cmd = [
        *prefix,
        *agentgw_cmd(),
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = {**os.environ, "AGENTGW_SECRET": SECRET}  # workers share the sealing secret

    def ready() -> bool:
        if http_status(port, "/readyz", 0.5) != 200:
            return False
        if not mcp:
            return True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(json.loads(r.read()).get("mcp", {}).get("bench", {}).get("state") == "ready")

    proc, secs = spawn(cmd, b._log(f"{name}.log"), ready, name, env=env)
    source = gateway_source()
    gw = Gateway(name, f"{source.get('commit', '?')}", proc, secs)
    gw.llm = (f"http://127.0.0.1:{port}/v1/chat/completions", {"Authorization": f"Bearer {API_KEY}"})
    if mcp:
        gw.mcp = (f"http://127.0.0.1:{port}/mcp", "bench__add", API_KEY)
    return gw


def start_litellm(b: Bench) -> Gateway:
    """LiteLLM proxy, one uvicorn worker, its master key on, no database (nothing is spent or stored)."""
    version = install("litellm")
    cfg = {
        "model_list": [
            {
                "model_name": "bench",
                "litellm_params": {"model": "openai/bench", "api_base": b.llm_base, "api_key": UPSTREAM_KEY},
            }
        ],
        "mcp_servers": {"bench": {"url": b.mcp_url, "transport": "http"}},
        "general_settings": {"master_key": MASTER_KEY},
    }
    path = b.tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    port = free_port()
    exe = CACHE / "litellm" / "venv" / "bin" / "litellm"
    cmd = [str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    # offline: the model price map from the package, not fetched at start
    env = {**os.environ, "LITELLM_LOG": "WARNING", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    ready = lambda: http_status(port, "/health/liveliness") == 200  # noqa: E731
    proc, secs = spawn(cmd, b._log("litellm.log"), ready, "litellm", 180, env=env)
    gw = Gateway("litellm", version, proc, secs)
    gw.llm = (f"http://127.0.0.1:{port}/v1/chat/completions", {"Authorization": f"Bearer {MASTER_KEY}"})
    gw.mcp = (f"http://127.0.0.1:{port}/mcp/", "bench-add", MASTER_KEY)
    return gw


def start_portkey(b: Bench) -> Gateway:
    """Portkey's open-source gateway on the machine's node (it has no auth of its own; the client names the
    provider, the upstream and its key in headers)."""
    version = install("portkey")
    port = free_port()
    script = CACHE / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    cmd = ["node", str(script), f"--port={port}", "--headless"]
    env = {**os.environ, "NODE_ENV": "production"}
    ready = lambda: http_status(port, "/") == 200  # noqa: E731
    proc, secs = spawn(cmd, b._log("portkey.log"), ready, "portkey", 60, env=env)
    gw = Gateway("portkey", version, proc, secs)
    headers = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": b.llm_base,
        "Authorization": f"Bearer {UPSTREAM_KEY}",
    }
    gw.llm = (f"http://127.0.0.1:{port}/v1/chat/completions", headers)
    return gw


def start_contextforge(b: Bench) -> Gateway:
    """IBM ContextForge (`mcpgateway`, one uvicorn worker) with its defaults (auth required, SQLite in the temp
    dir), loopback upstreams allowed; the MCP server registered through its API, called with an admin JWT."""
    version = install("contextforge")
    venv = CACHE / "contextforge" / "venv" / "bin"
    folder = b.tmp / "contextforge"
    folder.mkdir()
    jwt_secret = "bench-jwt-secret-0123456789abcdef0123456789abcdef"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{folder}/mcp.db",
        "JWT_SECRET_KEY": jwt_secret,
        "AUTH_ENCRYPTION_SECRET": "bench-enc-secret-0123456789abcdef0123456789abcdef",
        "PLATFORM_ADMIN_PASSWORD": "Bench-Admin-Pass-0123456789!",
        "BASIC_AUTH_PASSWORD": "Bench-Basic-Pass-0123456789!",
        "SSRF_ALLOW_LOCALHOST": "true",  # the mock upstream is on 127.0.0.1; blocked by default
        "RATE_LIMITING_ENABLED": "false",  # 100 tool calls a minute by default; agentgw runs with no limit either
    }
    port = free_port()
    cmd = [str(venv / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)]
    ready = lambda: http_status(port, "/health") == 200  # noqa: E731
    proc, secs = spawn(cmd, b._log("contextforge.log"), ready, "contextforge", 240, env=env, cwd=folder)
    token_cmd = [
        str(venv / "python"),
        "-m",
        "mcpgateway.utils.create_jwt_token",
        "--username",
        "admin@example.com",
    ]
    token_cmd += ["--admin", "--exp", "240", "--secret", jwt_secret]
    out = subprocess.run(token_cmd, capture_output=True, text=True, check=True, timeout=60, env=env)
    token = out.stdout.strip().splitlines()[-1]
    body = {"name": "bench", "url": b.mcp_url, "transport": "STREAMABLEHTTP"}
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/gateways",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    gw = Gateway("contextforge", version, proc, secs)
    gw.mcp = (f"http://127.0.0.1:{port}/mcp/", "bench-add", token)
    gw.sessionless = True
    return gw
