"""`GET /admin/registry` on a real gateway in front of real upstreams (an OpenAI-compatible server, a dead provider,
a supervised process, an `mcp` SDK server, a2a-sdk agents): every configured provider, model, server, agent and
process with its state, a provider's circuit opening after failures, the audit head moving after calls, the last
checkpoint, and no configured secret anywhere in the answer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from agentgw.app import Gateway
from tests.a2a.agents import run_agent
from tests.mcp.support import UPSTREAM_TOKEN, Upstream, mcp_client, server_entry
from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, free_port, gateway, serve, sha
from tests.upstreams import FakeOpenAI

ADMIN_KEY = "agw-admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
AGENT = {"authorization": f"Bearer {TEST_KEY}"}
PROVIDER_KEY = "sk-registry-provider-secret-0123456789"
ORG_TOKEN = "org-header-secret-0123456789"
URL_PASSWORD = "hunter2-url-password"
ENV_SECRET = "supervised-env-secret-0123456789"
SECRETS = (PROVIDER_KEY, ORG_TOKEN, URL_PASSWORD, ENV_SECRET, UPSTREAM_TOKEN)
KEYS = [
    {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
    {"subject": "other", "roles": [], "sha256": sha(OTHER_KEY)},
    {"subject": "root", "roles": ["admins"], "sha256": sha(ADMIN_KEY)},
]


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


async def registry(c: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    r = await c.get("/admin/registry", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json(), r.text


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


@contextlib.asynccontextmanager
async def upstreams() -> AsyncIterator[tuple[str, str, str, str]]:
    """An OpenAI-compatible provider, an MCP server and an echo agent on loopback: their URLs, and the echo agent's."""
    async with (
        serve(FakeOpenAI().app()) as llm,
        serve(Upstream("docs")) as docs,
        run_agent("echo") as echo,
    ):
        yield llm, docs, echo.url, echo.name


def world(tmp: Path, llm: str, docs: str, echo: str, static_port: int) -> dict[str, Any]:
    """The registry: four providers (one remote with a key and a header, one dead with a password in its URL, one
    supervised, the mock), a model on each, one MCP server, a reachable and an unreachable agent."""
    return {
        "llm": {
            "providers": [
                {
                    "name": "remote",
                    "kind": "openai",
                    "base_url": f"{llm}/v1",
                    "api_key": PROVIDER_KEY,
                    "headers": {"OpenAI-Organization": ORG_TOKEN},
                },
                {"name": "dead", "kind": "openai", "base_url": f"http://ops:{URL_PASSWORD}@127.0.0.1:9/v1"},
                {
                    "name": "static",
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{static_port}/v1",
                    "command": ["python", "-m", "http.server", str(static_port), "--bind", "127.0.0.1"],
                    "env": {"STATIC_API_TOKEN": ENV_SECRET},
                    "cwd": str(tmp),
                },
                *MOCK_REGISTRY["llm"]["providers"],
            ],
            "models": [
                {"name": "up", "targets": [{"provider": "remote", "model": "gpt-up"}]},
                {"name": "flaky", "targets": [{"provider": "dead", "model": "gpt-dead"}]},
                {"name": "local", "targets": [{"provider": "static", "model": "static-1"}]},
                *MOCK_REGISTRY["llm"]["models"],
            ],
        },
        "mcp": {"servers": [server_entry("docs", docs)]},
        "a2a": {"agents": [{"name": "echo", "url": echo}, {"name": "gone", "url": "http://127.0.0.1:9/"}]},
    }


async def ready(app: Gateway) -> None:
    assert app.mcp is not None
    with anyio.fail_after(20):
        await app.mcp.warmed("docs")
        await app.supervisor.watched["llm:static"].running.wait()


async def test_the_registry_shows_every_upstream_with_its_state_and_no_secret(tmp_path: Path) -> None:
    lock = {
        "version": 1,
        "servers": {"docs": {"add": {"fingerprint": "sha256:00", "definition": {"name": "add"}}}},
    }
    (tmp_path / "tools.lock.yaml").write_text(yaml.safe_dump(lock))
    settings = {
        "auth": {"api_keys": KEYS},
        "upstream": {
            "retry": {"attempts": 1, "backoff_ms": 0},
            "circuit_breaker": {"failures": 2, "cooldown_s": 3600},
        },
        "tool_pinning": {"mode": "warn", "lock_file": "tools.lock.yaml"},
    }
    static_port = free_port()
    async with upstreams() as (llm, docs, echo, _):
        async with mcp_client(f"{docs}/mcp") as direct:  # what the server offers, asked without the gateway
            offered = len((await direct.list_tools()).tools)
        reg = world(tmp_path, llm, docs, echo, static_port)
        async with (
            gateway(tmp_path, reg, settings) as (url, app),
            httpx.AsyncClient(base_url=url, timeout=30) as c,
        ):
            await ready(app)
            before, before_text = await registry(c)
            assert (await c.post("/v1/chat/completions", json=chat("up"), headers=AGENT)).status_code == 200
            for _ in range(2):  # connection refused twice: the dead provider's circuit opens
                assert (
                    await c.post("/v1/chat/completions", json=chat("flaky"), headers=AGENT)
                ).status_code == 502
            refused = await c.post("/v1/chat/completions", json=chat("flaky"), headers=AGENT)
            assert (await c.get("/a2a/echo/.well-known/agent-card.json", headers=AGENT)).status_code == 200
            assert (await c.get("/a2a/gone/.well-known/agent-card.json", headers=AGENT)).status_code >= 500
            approved = await c.post("/admin/tools/docs__echo/approve", headers=ADMIN)
            assert approved.status_code == 200, approved.text
            assert app.audit is not None
            await app.audit.flush()
            after, after_text = await registry(c)

    providers = by_name(after["llm"]["providers"])
    assert {name: (p["kind"], p["circuit"]) for name, p in providers.items()} == {
        "remote": ("openai", "closed"),
        "dead": ("openai", "open"),
        "static": ("openai", "closed"),
        "mock": ("mock", "closed"),
    }
    assert all(p["circuit"] == "closed" for p in before["llm"]["providers"])
    assert providers["remote"]["base_url"] == f"{llm}/v1"
    assert providers["dead"]["base_url"] == "http://127.0.0.1:9/v1"  # the URL's credentials are left out
    assert providers["static"]["supervised"] is True
    models = by_name(after["llm"]["models"])
    assert set(models) == {"up", "flaky", "local", "mock-fast", "mock-embed"}
    (dead,) = models["flaky"]["targets"]
    assert (dead["provider"], dead["model"], dead["circuit"], dead["failures"]) == (
        "dead",
        "gpt-dead",
        "open",
        2,
    )
    assert 3500 < dead["retry_in_s"] <= 3600
    assert refused.status_code == 502  # an open circuit sends nothing: the call fails at once
    assert models["up"]["targets"][0]["circuit"] == "closed"

    (server,) = after["mcp"]["servers"]
    assert (server["name"], server["state"], server["ready"], server["transport"]) == (
        "docs",
        "ready",
        True,
        "streamable-http",
    )
    assert server["era"] in ("modern", "handshake") and server["url"] == f"{docs}/mcp"
    assert server["tools"] == offered > 2
    assert server["pins"] == {"pinned": 1, "changed": 1, "added": offered - 2, "removed": 0}
    assert before["mcp"]["servers"][0]["pins"]["pinned"] == 0  # echo was approved in between
    assert after["mcp"]["pinning"] == {"mode": "warn", "scan": "off", "lock_error": None}

    agents = by_name(after["a2a"]["agents"])
    assert by_name(before["a2a"]["agents"])["echo"]["state"] == "unknown"  # nothing asked for its card yet
    assert (agents["echo"]["state"], agents["echo"]["url"], agents["echo"]["card_fresh"]) == (
        "reachable",
        echo,
        True,
    )
    assert agents["gone"]["state"] == "unreachable" and agents["gone"]["error"]

    (process,) = after["processes"]
    assert (process["name"], process["state"], process["restarts"]) == ("llm:static", "running", 0)
    assert isinstance(process["pid"], int)

    writer = after["audit"]["writer"]
    assert (writer["mode"], writer["state"], writer["store"], writer["last_error"]) == (
        "process",
        "running",
        "sqlite",
        None,
    )
    assert isinstance(writer["pid"], int) and writer["written"] >= 5
    head, old = after["audit"]["head"], before["audit"]["head"]
    assert head["seq"] > (old["seq"] if old else 0) and head["hash"] != (old["hash"] if old else None)
    assert after["audit"]["checkpoint"] == {
        "sink": None,
        "every_records": 1000,
        "every_s": 60.0,
        "last": None,
        "error": None,
    }
    for text in (before_text, after_text):
        for secret in SECRETS:
            assert secret not in text


async def test_the_registry_shows_the_newest_checkpoint_and_an_inline_writer(tmp_path: Path) -> None:
    settings = {
        "auth": {"api_keys": KEYS},
        "audit": {
            "writer": "inline",
            "hmac_key": "registry-test-audit-key-0123456789",
            "checkpoints": {"sink": "checkpoints.jsonl", "every_records": 1},
        },
    }
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, app), httpx.AsyncClient(base_url=url) as c:
        for _ in range(3):
            assert (
                await c.post("/v1/chat/completions", json=chat("mock-fast"), headers=AGENT)
            ).status_code == 200
        assert app.audit is not None
        await (
            app.audit.flush()
        )  # inline: the checkpoint of the last batch is written before its records count
        body, text = await registry(c)
    audit = body["audit"]
    assert (audit["writer"]["mode"], audit["writer"]["state"], audit["writer"]["pid"]) == (
        "inline",
        "running",
        None,
    )
    assert audit["keyed"] is True
    last = audit["checkpoint"]["last"]
    assert audit["checkpoint"]["sink"] == "file" and audit["checkpoint"]["error"] is None
    assert (last["seq"], last["hash"], last["authentic"], last["behind_head"]) == (
        audit["head"]["seq"],
        audit["head"]["hash"],
        True,
        0,
    )
    assert "registry-test-audit-key" not in text
    assert body["mcp"] == {"servers": [], "virtual_servers": [], "pinning": None}  # no MCP server configured
    assert body["a2a"] == {"agents": []} and body["processes"] == []


@pytest.mark.parametrize(
    ("key", "method", "status", "code"),
    [
        (TEST_KEY, "GET", 403, "admin_role_required"),
        (ADMIN_KEY, "POST", 405, "method_not_allowed"),
    ],
)
async def test_only_an_admin_reads_the_registry(
    tmp_path: Path, key: str, method: str, status: int, code: str
) -> None:
    settings = {"auth": {"api_keys": KEYS}}
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient(base_url=url) as c:
        r = await c.request(method, "/admin/registry", headers={"authorization": f"Bearer {key}"})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
