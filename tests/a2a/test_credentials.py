"""What reaches an agent: the registry's credentials and the gateway's headers, never the caller's key."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.a2a.test_plane_smoke import V1, echo_app, send
from tests.support import TEST_KEY, free_port, gateway, serve


class Seen:
    """ASGI wrapper keeping the headers of every request the agent received."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


async def test_an_agent_gets_the_registry_credential_and_never_the_callers_key(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    agent = Seen(echo_app(base))
    async with serve(agent, port=port):
        entry = {"name": "echo", "url": base, "headers": {"Authorization": "Bearer registry-token-for-echo"}}
        async with gateway(tmp_path, {"a2a": {"agents": [entry]}}) as (gw, _):
            async with httpx.AsyncClient(base_url=gw) as http:
                with anyio.fail_after(20):
                    sent = await http.post(
                        "/a2a/echo",
                        json=send("hi"),
                        headers={**V1, "x-api-key": TEST_KEY, "cookie": f"k={TEST_KEY}"},
                    )
                    card = await http.get("/a2a/echo/.well-known/agent-card.json", headers=V1)
    assert sent.status_code == 200 and card.status_code == 200
    assert agent.headers, "the agent was never called"
    for headers in agent.headers:
        assert TEST_KEY not in str(headers)
        assert headers.get("authorization") == "Bearer registry-token-for-echo"
        assert "cookie" not in headers and "x-api-key" not in headers
    calls = [h for h in agent.headers if h.get("a2a-version")]
    assert calls and all(h["a2a-version"] == "1.0" and h.get("traceparent") for h in calls)
