"""A real agentgw in front of real agents, as the end-to-end tests meet it: `run_plane(tmp, agents...)` writes the
config (keys for alice, bob, carol and the agents' own key; a policy of its own), serves the gateway on loopback
and yields a `Plane` with raw httpx access and a2a-sdk clients per principal."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from a2a.client import Client, ClientConfig, create_client

from agentgw.app import Gateway
from tests.a2a.agents import Agent
from tests.support import MOCK_REGISTRY, POLICIES, gateway, sha

KEYS = {
    "alice": "agw-alice-key-0123456789",
    "bob": "agw-bob-key-0123456789",
    "carol": "agw-carol-key-0123456789",  # may use only the agent named `echo`
    "agent": "agw-agent-key-0123456789",  # what the agents themselves call the gateway back with
    "admin": "agw-admin-key-0123456789",  # the admin API (traces)
}
POLICY = """\
p, role:agents, a2a:*, *, allow
p, role:agents, llm:*, call, allow
p, user:carol, a2a:echo, *, allow
"""


def rpc(method: str, params: dict[str, Any] | None = None, rid: int | str = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}


def message(text: str, mid: str = "m1", **ids: str) -> dict[str, Any]:
    """An A2A 1.0 user message as JSON (taskId/contextId given continue a task or conversation)."""
    return {"messageId": mid, "role": "ROLE_USER", "parts": [{"text": text}], **ids}


def sse_data(text: str) -> list[dict[str, Any]]:
    """The JSON of each `data:` line of an SSE body."""
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


@dataclass
class Plane:
    url: str
    app: Gateway
    http: httpx.AsyncClient  # no credentials of its own: pass headers(who)
    tmp: Path

    @staticmethod
    def headers(who: str = "alice", version: str | None = "1.0", **extra: str) -> dict[str, str]:
        out = {"Authorization": f"Bearer {KEYS[who]}", **extra}
        if version is not None:
            out["A2A-Version"] = version
        return out

    async def call(
        self, agent: str, method: str, params: dict[str, Any] | None = None, who: str = "alice"
    ) -> Any:
        """A JSON-RPC 1.0 call; its `result` (asserting there was one)."""
        r = await self.http.post(f"/a2a/{agent}", json=rpc(method, params), headers=self.headers(who))
        assert r.status_code == 200 and "result" in r.json(), r.text
        return r.json()["result"]

    @contextlib.asynccontextmanager
    async def client(
        self, agent: str, who: str = "alice", binding: str = "JSONRPC", streaming: bool = True
    ) -> AsyncIterator[Client]:
        """An a2a-sdk client for `agent` through the gateway, as docs/a2a.md tells users to make one."""
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEYS[who]}"}, timeout=20) as http:
            config = ClientConfig(
                httpx_client=http, streaming=streaming, supported_protocol_bindings=[binding]
            )
            client = await create_client(f"{self.url}/a2a/{agent}", client_config=config)
            try:
                yield client
            finally:
                await client.close()


def settings_for(tmp: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    (tmp / "policy.csv").write_text(POLICY)
    keys = [
        {"subject": "alice", "roles": ["agents"], "sha256": sha(KEYS["alice"])},
        {"subject": "bob", "roles": ["agents"], "sha256": sha(KEYS["bob"])},
        {"subject": "carol", "roles": [], "sha256": sha(KEYS["carol"])},
        {"subject": "agent", "roles": ["agents"], "sha256": sha(KEYS["agent"])},
        {"subject": "admin", "roles": ["admins"], "sha256": sha(KEYS["admin"])},
    ]
    out: dict[str, Any] = {
        "auth": {"api_keys": keys},
        "policies": {"model": str(POLICIES / "model.conf"), "policy": str(tmp / "policy.csv")},
    }
    for key, value in (extra or {}).items():
        out[key] = (
            {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@contextlib.asynccontextmanager
async def run_plane(
    tmp: Path, *agents: Agent, settings: dict[str, Any] | None = None
) -> AsyncIterator[Plane]:
    """The gateway serving `agents` (by their names) and the mock LLM (for agents that call back); an agent of
    kind `caller` is told the gateway's URL and its key."""
    registry = {**MOCK_REGISTRY, "a2a": {"agents": [{"name": a.name, "url": a.url} for a in agents]}}
    async with gateway(tmp, registry, settings_for(tmp, settings)) as (url, app):
        for a in agents:
            a.gateway = (url, KEYS["agent"])
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            yield Plane(url, app, http, tmp)
