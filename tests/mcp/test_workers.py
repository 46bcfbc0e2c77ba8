"""`agentgw serve --workers 2` behaves like two replicas: MCP sessions whose requests land on either worker (the
client opens a new connection per request) are all served, with no errors, log levels and all, once the
workers share sessions through Redis."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.a2a.test_replicas import REDIS_URL, redis_up
from tests.mcp.support import Upstream, registry, server_entry
from tests.support import AGENTGW, TEST_KEY, ServeProcess, drop_redis_keys, free_port, serve, write_config

SESSIONS = 8
CALLS = 8


async def test_mcp_sessions_spread_over_two_workers_are_served_without_errors(tmp_path: Path) -> None:
    await redis_up()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    port = free_port()
    failures: list[BaseException] = []
    texts: list[str] = []
    try:
        async with serve(Upstream("docs")) as up:
            settings = {
                "secret": "w" * 40,
                "budgets": {"ledger": "redis", "redis_url": REDIS_URL, "key_prefix": prefix},
            }
            cfg = write_config(tmp_path, registry(server_entry("docs", up)), settings)
            process = await anyio.open_process(
                [AGENTGW, "serve", "--config", str(cfg), "--port", str(port), "--workers", "2"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            gw = ServeProcess(process)
            async with anyio.create_task_group() as tg:
                tg.start_soon(gw.pump)
                await gw.logged("Application startup complete")  # a worker listens on the shared socket

                async def session(n: int) -> None:
                    # No keep-alive: every request is a new connection, which either worker may accept.
                    http = httpx2.AsyncClient(
                        headers={"Authorization": f"Bearer {TEST_KEY}"},
                        limits=httpx2.Limits(max_keepalive_connections=0),
                        timeout=httpx2.Timeout(20),
                    )
                    try:
                        async with (
                            http,
                            Client(
                                streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http),
                                mode="legacy",
                            ) as c,
                        ):
                            await c.set_logging_level("warning")

                            async def call(i: int) -> None:
                                result = await c.call_tool("docs__echo", {"text": f"{n}-{i}"})
                                texts.append(result.content[0].text)  # type: ignore[union-attr]

                            async with anyio.create_task_group() as together:  # a session's calls at once
                                for i in range(CALLS):
                                    together.start_soon(call, i)
                    except Exception as exc:
                        failures.append(exc)

                with anyio.fail_after(90):
                    async with anyio.create_task_group() as calls:
                        for n in range(SESSIONS):
                            calls.start_soon(session, n)
                process.terminate()
                with anyio.fail_after(30):
                    await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        await drop_redis_keys(REDIS_URL, prefix)
    assert failures == [], "\n".join(gw.lines[-60:])
    assert sorted(texts) == sorted(f"{n}-{i}" for n in range(SESSIONS) for i in range(CALLS))
    assert any("MCP session revived" in line for line in gw.lines)  # sessions did move between workers
    assert not any("No read stream writer" in line or "Traceback" in line for line in gw.lines)
