"""Secrets the gateway holds never reach the audit trail, even when an upstream echoes them back: a real MCP
server whose tool returns the Authorization header it received (the registry's token, without its `Bearer `)
and an environment value marked secret. Neither may appear in the store's bytes, `agentgw trace show` or /admin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.server.mcpserver import MCPServer
from starlette.types import Receive, Scope, Send

from agentgw.secrets import Scrubber, credential_parts
from tests.audit.support import store_bytes
from tests.audit.test_admin_api import ADMIN_KEY
from tests.audit.test_admin_api import SETTINGS as ADMIN_SETTINGS
from tests.mcp.support import mcp_client
from tests.support import gateway, serve

AGENTGW = str(Path(sys.executable).parent / "agentgw")
TOKEN = "zq7Upstream4411tokenABCD"  # no known credential shape: only the configuration says it is a secret
MARKED = "db-password-not-named-secret-9931"


class Echo:
    """An MCP server whose tool tells the caller which credentials it was sent."""

    def __init__(self) -> None:
        self.auth = ""
        mcp = MCPServer(name="echo", version="1.0")

        @mcp.tool(description="Say which credentials arrived")
        def whoami() -> str:
            token = self.auth.removeprefix("Bearer ")
            return f'you are {token}; the database says {MARKED}; as JSON: {{"auth": "{self.auth}"}}'

        self.app = mcp.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        await self.app(scope, receive, send)


async def test_an_upstream_echoing_its_token_leaves_no_secret_in_the_store_trace_or_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_UPSTREAM_TOKEN", TOKEN)
    echo = Echo()
    async with serve(echo) as up:
        registry: dict[str, Any] = {
            "mcp": {
                "servers": [
                    {
                        "name": "echo",
                        "transport": "streamable-http",
                        "url": f"{up}/mcp",
                        "headers": {"Authorization": "Bearer ${ECHO_UPSTREAM_TOKEN}"},
                        "env": {"DB_URL": MARKED},
                        "secret_env": ["DB_URL"],
                        "timeout_s": 10,
                    }
                ]
            }
        }
        settings = {
            "auth": ADMIN_SETTINGS["auth"],
            "audit": {"payloads": [{"match": "mcp:*"}]},
        }
        async with gateway(tmp_path, registry, settings) as (url, app):
            async with mcp_client(f"{url}/mcp", headers={"x-agentgw-task": "echo-task"}) as client:
                with anyio.fail_after(20):
                    result = await client.call_tool("echo__whoami", {})
            assert TOKEN in str(result.content)  # the caller gets the answer as the upstream gave it
            assert app.audit is not None
            await app.audit.flush()
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            async with httpx.AsyncClient(base_url=url, headers=admin) as c:
                tree = await c.get("/admin/tasks/echo-task", params={"principal": "tester"})
                record_id = tree.json()["steps"][0]["record_id"]
                record = await c.get(f"/admin/records/{record_id}")
    shown = await anyio.run_process(
        [AGENTGW, "trace", "show", "echo-task", "--json", "--config", str(tmp_path / "agentgw.yaml")]
    )
    raw = store_bytes(tmp_path)
    assert tree.status_code == 200 and record.status_code == 200
    assert b"[secret]" in raw  # the echo was recorded, with the secrets cut out
    for secret in (TOKEN, MARKED):
        assert secret.encode() not in raw
        assert secret not in tree.text and secret not in record.text
        assert secret not in shown.stdout.decode()


def test_credential_parts_cover_the_scheme_less_token_and_basic_credentials() -> None:
    import base64

    basic = "Basic " + base64.b64encode(b"robot:hunter2-long-password").decode()
    parts = credential_parts(basic)
    assert "hunter2-long-password" in parts and "robot:hunter2-long-password" in parts
    assert "abc123token456" in credential_parts("Bearer abc123token456")
    s = Scrubber([*credential_parts("Bearer abc123token456"), "short"])
    assert s.text("x abc123token456 y short") == "x [secret] y short"  # too short to scrub: `short`


def test_a_log_line_carrying_a_configured_secret_is_scrubbed() -> None:
    import io
    import logging

    from agentgw.secrets import ScrubLogs

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ScrubLogs(Scrubber([TOKEN])))
    log = logging.getLogger("agentgw.test.scrub")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("upstream said %s", f"hello {TOKEN}")
        try:
            raise RuntimeError(f"bad token {TOKEN}")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    assert TOKEN not in out.getvalue()
    assert "upstream said hello [secret]" in out.getvalue() and "bad token [secret]" in out.getvalue()


def test_secret_env_must_name_an_env_entry() -> None:
    from pydantic import ValidationError

    from agentgw.registry import MCPServer

    with pytest.raises(ValidationError, match="secret_env names DB_URL, which env does not set"):
        MCPServer.model_validate(
            {"name": "x", "transport": "stdio", "command": ["true"], "env": {}, "secret_env": ["DB_URL"]}
        )
