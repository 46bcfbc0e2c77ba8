"""SIGTERM under load on a real `agentgw serve`: every call that completed (the client got its answer) has its
record in the store after the process exits, and the chain verifies."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import httpx

from tests.audit.test_chain import AGENTGW
from tests.support import TEST_KEY, audit_records, free_port, write_config
from tests.test_shutdown import agentgw_serve

WORKERS = 16
PER_WORKER = 400  # bound: the load stops here even if the gateway never went away
SIGNAL_AFTER = 300  # completed calls before SIGTERM


async def test_sigterm_under_load_loses_no_record_of_a_completed_call(tmp_path: Path) -> None:
    registry = {
        "llm": {
            "providers": [{"name": "mock", "kind": "mock", "mock": {"latency_ms": 2}}],
            "models": [{"name": "m", "targets": [{"provider": "mock", "model": "m-1"}]}],
        }
    }
    cfg = write_config(
        tmp_path, registry, {"server": {"graceful_shutdown_s": 10}, "audit": {"batch_wait_ms": 100}}
    )
    port = free_port()
    completed: list[str] = []
    enough = anyio.Event()

    async def worker(n: int, client: httpx.AsyncClient) -> None:
        for i in range(PER_WORKER):
            task = f"load-{n}-{i}"
            body = {"model": "m", "messages": [{"role": "user", "content": f"call {task}"}]}
            try:
                r = await client.post(
                    "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {TEST_KEY}", "x-agentgw-task": task},
                )
            except httpx.HTTPError:
                return  # the gateway stopped taking calls
            if r.status_code != 200:
                return
            completed.append(task)
            if len(completed) >= SIGNAL_AFTER:
                enough.set()

    async with agentgw_serve(cfg, port) as gw:
        limits = httpx.Limits(max_connections=WORKERS)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=20, limits=limits
        ) as client:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for n in range(WORKERS):
                        tg.start_soon(worker, n, client)
                    await enough.wait()
                    gw.process.send_signal(signal.SIGTERM)  # while the workers keep calling
    assert gw.process.returncode == -signal.SIGTERM
    assert any("audit writer closed" in line for line in gw.lines), "\n".join(gw.lines[-20:])
    recorded = {r["task_id"] for r in audit_records(tmp_path)}  # also checks the chain links
    assert len(completed) >= SIGNAL_AFTER
    assert set(completed) <= recorded
    verified = await anyio.run_process([AGENTGW, "audit", "verify", "--config", str(cfg)])
    assert verified.stdout.decode().startswith(f"OK: {len(recorded)} records")
