"""The registry reloads in place (file change or SIGHUP): validated first (a broken file keeps the running registry
and every problem is logged), then applied only where it changed: an MCP server whose entry is the same keeps its
upstream session, and the callers their sessions and calls in flight."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from agentgw.supervisor import Spec, Supervisor
from tests.mcp.support import Upstream, mcp_client, server_entry
from tests.support import MOCK_REGISTRY, TEST_KEY, agentgw_serve, free_port, gateway, serve, write_config

AUTH = {"authorization": f"Bearer {TEST_KEY}"}


def rewrite(tmp: Path, registry: dict[str, Any]) -> None:
    (tmp / "registry" / "main.yaml").write_text(yaml.safe_dump(registry))


async def chat(url: str, model: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as c:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        return await c.post("/v1/chat/completions", json=body, headers=AUTH)


def with_model(registry: dict[str, Any], name: str) -> dict[str, Any]:
    llm = registry["llm"]
    model = {"name": name, "targets": [{"provider": "mock", "model": f"{name}-1"}]}
    return {**registry, "llm": {**llm, "models": [*llm["models"], model]}}


async def test_adding_a_model_keeps_an_mcp_session_and_its_call_in_flight(tmp_path: Path) -> None:
    up = Upstream("one")
    async with serve(up) as u:
        registry = {**MOCK_REGISTRY, "mcp": {"servers": [server_entry("one", u)]}}
        async with gateway(tmp_path, registry) as (url, app), mcp_client(f"{url}/mcp") as client:
            assert app.mcp is not None
            upstream = app.mcp.upstreams.get("one")
            assert (await chat(url, "mock-new")).status_code == 404
            async with anyio.create_task_group() as tg:
                results: list[Any] = []

                async def call() -> None:
                    results.append(await client.call_tool("one__wait_gate", {}))

                tg.start_soon(call)
                with anyio.fail_after(10):
                    await up.tool_started.wait()
                rewrite(tmp_path, with_model(registry, "mock-new"))
                assert await app.registry.reload()
                assert (await chat(url, "mock-new")).status_code == 200  # the new model serves at once
                up.gate.set()
            assert results[0].content[0].text == "opened"  # the call in flight finished
            again = await client.call_tool("one__chatty", {})  # on the same gateway session
            assert again.content[0].text == "said it all"
            assert app.mcp.upstreams.get("one") is upstream
            assert upstream is not None and upstream.connects == 1  # never reconnected


async def test_only_the_mcp_server_whose_entry_changed_is_reconnected(tmp_path: Path) -> None:
    one, two = Upstream("one"), Upstream("two")
    async with serve(one) as u1, serve(two) as u2:
        registry = {"mcp": {"servers": [server_entry("one", u1), server_entry("two", u2)]}}
        async with gateway(tmp_path, registry) as (url, app), mcp_client(f"{url}/mcp") as client:
            assert app.mcp is not None
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"one__chatty", "two__chatty"} <= names
            before = {n: app.mcp.upstreams.get(n) for n in ("one", "two")}
            changed = {"mcp": {"servers": [server_entry("one", u1), server_entry("two", u2, timeout_s=5)]}}
            rewrite(tmp_path, changed)
            assert await app.registry.reload()
            assert app.mcp.upstreams.get("one") is before["one"]
            assert app.mcp.upstreams.get("two") is not before["two"]
            reply = await client.call_tool("two__chatty", {})  # the new connection serves the same session
            assert reply.content[0].text == "said it all"
            assert (await client.call_tool("one__chatty", {})).content[0].text == "said it all"


async def test_a_removed_mcp_server_and_a_new_virtual_server_follow_the_registry(tmp_path: Path) -> None:
    one, two = Upstream("one"), Upstream("two")
    async with serve(one) as u1, serve(two) as u2:
        registry = {"mcp": {"servers": [server_entry("one", u1), server_entry("two", u2)]}}
        async with gateway(tmp_path, registry) as (url, app):
            rewrite(
                tmp_path,
                {
                    "mcp": {
                        "servers": [server_entry("one", u1)],
                        "virtual_servers": [{"name": "calm", "tools": ["one__chatty"]}],
                    }
                },
            )
            assert await app.registry.reload()
            async with mcp_client(f"{url}/mcp") as client:
                names = {t.name for t in (await client.list_tools()).tools}
            async with mcp_client(f"{url}/mcp/calm") as client:
                calm = [t.name for t in (await client.list_tools()).tools]
    assert "one__chatty" in names and not any(n.startswith("two__") for n in names)
    assert calm == ["one__chatty"]


async def test_a_broken_registry_keeps_the_running_one_and_logs_every_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, app):
        broken = with_model(MOCK_REGISTRY, "mock-new")
        broken["llm"]["models"][-1]["targets"][0]["provider"] = "nowhere"
        broken["llm"]["providers"] = [*broken["llm"]["providers"], {"name": "bad", "kind": "nope"}]
        rewrite(tmp_path, broken)
        with caplog.at_level(logging.ERROR, logger="agentgw.registry"):
            assert not await app.registry.reload()
        problems = [r.getMessage() for r in caplog.records if r.getMessage().startswith("registry problem")]
        assert any("unknown provider 'nowhere'" in p for p in problems)
        assert any("llm.providers[1].kind" in p for p in problems)
        assert (await chat(url, "mock-fast")).status_code == 200  # the running registry still serves
        assert (await chat(url, "mock-new")).status_code == 404
        async with httpx.AsyncClient(base_url=url) as c:
            ready = await c.get("/readyz")
        assert ready.status_code == 200
        assert len(ready.json()["registry"]["problems"]) == len(problems)

        rewrite(tmp_path, with_model(MOCK_REGISTRY, "mock-new"))  # fixed: the next reload applies it
        assert await app.registry.reload()
        assert (await chat(url, "mock-new")).status_code == 200


async def test_a_running_gateway_reloads_its_registry_on_file_change_and_on_sighup(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, MOCK_REGISTRY)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    main = tmp_path / "registry" / "main.yaml"
    async with agentgw_serve(cfg, port) as gw:
        rewrite(tmp_path, with_model(MOCK_REGISTRY, "mock-new"))  # seen by the file watch
        await gw.logged("registry reloaded (#1)")
        assert (await chat(url, "mock-new")).status_code == 200
        # Same size, same modification time: invisible to the file watch, so only the signal reloads it.
        seen = main.stat()
        rewrite(tmp_path, with_model(MOCK_REGISTRY, "mock-hup"))
        os.utime(main, ns=(seen.st_atime_ns, seen.st_mtime_ns))
        assert main.stat().st_size == seen.st_size
        gw.process.send_signal(signal.SIGHUP)
        await gw.logged("registry reloaded (#2)")
        assert (await chat(url, "mock-hup")).status_code == 200
        assert (await chat(url, "mock-new")).status_code == 404
        gw.process.send_signal(signal.SIGTERM)


async def test_a_reload_restarts_only_the_supervised_entries_that_changed() -> None:
    def spec(name: str, seconds: str) -> Spec:
        return Spec(name, [sys.executable, "-c", f"import time; time.sleep({seconds})"])

    sup = Supervisor([spec("a2a:same", "3600"), spec("a2a:edited", "3600"), spec("a2a:gone", "3600")])
    await sup.start()
    try:
        with anyio.fail_after(10):
            for w in sup.watched.values():
                await w.running.wait()
        pids = {name: s["pid"] for name, s in sup.status().items()}
        await sup.apply([spec("a2a:same", "3600"), spec("a2a:edited", "3601"), spec("a2a:new", "3600")])
        with anyio.fail_after(10):
            for w in sup.watched.values():
                await w.running.wait()
        now = {name: s["pid"] for name, s in sup.status().items()}
    finally:
        await sup.stop()
    assert set(now) == {"a2a:same", "a2a:edited", "a2a:new"}
    assert now["a2a:same"] == pids["a2a:same"]  # untouched: the same process
    assert now["a2a:edited"] not in (None, pids["a2a:edited"])


async def test_an_llm_stream_in_flight_finishes_across_a_reload(tmp_path: Path) -> None:
    registry = {
        "llm": {
            "providers": [
                {"name": "mock", "kind": "mock", "mock": {"chunk_delay_ms": 50, "replies": ["a b c d e f"]}}
            ],
            "models": [{"name": "slow", "targets": [{"provider": "mock", "model": "slow-1"}]}],
        }
    }
    async with gateway(tmp_path, registry) as (url, app), httpx.AsyncClient(base_url=url) as c:
        body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with c.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
            lines = r.aiter_lines()
            first = await anext(lines)
            assert first.startswith("data: ")
            # The provider entry is untouched; only a model is added.
            rewrite(tmp_path, with_model(registry, "fast"))
            assert await app.registry.reload()
            rest = [line async for line in lines]
        assert (await chat(url, "fast")).status_code == 200
    assert r.status_code == 200
    assert [line for line in rest if line][-1] == "data: [DONE]"


async def test_the_first_mcp_server_added_by_a_reload_serves_and_the_gateway_still_stops_cleanly(
    tmp_path: Path,
) -> None:
    up = Upstream("one")
    async with serve(up) as u:
        async with gateway(tmp_path, MOCK_REGISTRY) as (url, app):
            assert app.mcp is None
            rewrite(tmp_path, {**MOCK_REGISTRY, "mcp": {"servers": [server_entry("one", u)]}})
            assert await app.registry.reload()  # in this test's task: the plane must not belong to it
            assert app.mcp is not None
            async with mcp_client(f"{url}/mcp") as client:
                with anyio.fail_after(20):
                    result = await client.call_tool("one__chatty", {})
            assert result.content[0].text == "said it all"
        # leaving `gateway` shut the plane down from another task than the reload's, without an error
        assert app.mcp is not None and app._mcp_host is not None and app._mcp_host.done()
        assert app._mcp_host.exception() is None
