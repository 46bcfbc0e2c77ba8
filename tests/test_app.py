"""The app's own routes: health, readiness, and /mcp on a gateway without MCP servers (the MCP SDK is not
even loaded then), which still authenticates before saying there is nothing to serve."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from tests.support import MOCK_REGISTRY, TEST_KEY, gateway


async def test_without_mcp_servers_mcp_authenticates_first_then_says_there_is_nothing(tmp_path: Path) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, app), httpx.AsyncClient() as c:
        anonymous = await c.post(f"{url}/mcp", json=body)
        known = await c.post(f"{url}/mcp", json=body, headers={"authorization": f"Bearer {TEST_KEY}"})
    assert app.mcp is None
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == -32010
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert known.status_code == 404
    assert known.json()["error"] == {
        "code": -32601,
        "message": "No MCP servers are configured.",
        "data": {"code": "no_mcp_servers", "status": 404},
    }


async def test_health_is_public_and_readiness_reports_its_checks(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY) as (url, _), httpx.AsyncClient() as c:
        health = await c.get(f"{url}/healthz")
        ready = await c.get(f"{url}/readyz")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "config": True,
        "policy": True,
        "upstream_pool": True,
        "supervised": True,
        "mcp_servers": True,
    }
    assert ready.json()["left_out"] == []


def test_importing_the_package_does_not_load_the_mcp_sdk() -> None:
    import subprocess

    code = "import agentgw, agentgw.app, sys; print('mcp.server' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
