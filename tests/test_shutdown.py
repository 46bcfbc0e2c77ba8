"""Graceful shutdown of `agentgw serve`: on SIGTERM an in-flight stream finishes within
server.graceful_shutdown_s and is audited ok; past the grace period it is cut and audited as cancelled.
Readiness: /readyz is 200 only while the config is loaded and the upstream pool is open."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import orjson

from agentgw import create_app, load_settings
from tests.support import (
    TEST_KEY,
    ServeProcess,
    agentgw_serve,
    audit_records,
    free_port,
    serve,
    write_config,
)

WORDS = " ".join(f"w{i}" for i in range(20))


def slow_registry(chunk_delay_ms: float) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [{"name": "slow", "kind": "mock", "mock": {"chunk_delay_ms": chunk_delay_ms}}],
            "models": [{"name": "slow", "targets": [{"provider": "slow", "model": "slow-1"}]}],
        }
    }


async def stream_during_sigterm(
    tmp: Path, chunk_delay_ms: float, grace_s: float
) -> tuple[str, bool, ServeProcess]:
    """Start a slow stream, SIGTERM the gateway once it is flowing; return the text received, whether the
    stream ended with [DONE], and the gateway (exited)."""
    cfg = write_config(tmp, slow_registry(chunk_delay_ms), {"server": {"graceful_shutdown_s": grace_s}})
    port = free_port()
    text, done, signalled = "", False, False
    async with agentgw_serve(cfg, port) as gw:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            assert (await client.get("/readyz")).json()["ready"] is True
            body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": WORDS}]}
            headers = {"Authorization": f"Bearer {TEST_KEY}"}
            async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status_code == 200
                lines = r.aiter_lines()
                try:
                    async for line in lines:
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: "):
                            choices = orjson.loads(line[6:])["choices"]
                            text += (choices[0]["delta"].get("content") or "") if choices else ""
                            if text and not signalled:
                                signalled = True
                                gw.process.send_signal(signal.SIGTERM)
                                await gw.logged("Waiting for connections to close")  # mid-stream
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    pass  # the gateway cut the stream
    return text, done, gw


def chat_records(tmp: Path) -> list[dict[str, Any]]:
    return [r for r in audit_records(tmp) if r["operation"] == "chat"]


async def test_an_in_flight_stream_finishes_within_the_grace_period_and_is_audited_ok(tmp_path: Path) -> None:
    text, done, gw = await stream_during_sigterm(tmp_path, chunk_delay_ms=20, grace_s=10)
    assert (text, done) == (WORDS, True)
    assert gw.process.returncode == -signal.SIGTERM
    assert not any("Cancel" in line for line in gw.lines)
    [record] = chat_records(tmp_path)
    assert (record["status"], record["stream_cut"], record["principal"]) == ("ok", None, "tester")
    assert record["usage"]["output_tokens"] > 20


async def test_a_stream_longer_than_the_grace_period_is_cut_and_audited_as_cancelled(tmp_path: Path) -> None:
    text, done, gw = await stream_during_sigterm(tmp_path, chunk_delay_ms=100, grace_s=0.2)
    assert not done
    assert WORDS.startswith(text) and len(text) < len(WORDS)
    assert any("timeout graceful shutdown exceeded" in line for line in gw.lines)
    [record] = chat_records(tmp_path)
    assert record["status"] == "cancelled"
    assert record["stream_cut"] == "cancelled"  # cut by the shutdown, not by the client


async def test_readyz_is_ready_only_between_startup_and_shutdown(tmp_path: Path) -> None:
    app = create_app(load_settings(write_config(tmp_path, slow_registry(0))))

    async def readyz() -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client:
            r = await client.get("/readyz")
        return r.status_code, r.json()

    status, body = await readyz()  # no lifespan has run: the upstream pool is not open
    assert (status, body["ready"], body["checks"]["upstream_pool"]) == (503, False, False)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/readyz")
        assert (r.status_code, r.json()["ready"]) == (200, True)
        checks = r.json()["checks"]
        assert checks["config"] is checks["upstream_pool"] is checks["supervised"] is True
        assert all(checks.values())
        assert (await client.get("/healthz")).status_code == 200
    status, body = await readyz()  # shut down: the pool is closed
    assert (status, body["ready"], body["checks"]["upstream_pool"]) == (503, False, False)
