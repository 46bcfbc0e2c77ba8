"""New approval requests are announced to the configured webhook (a loopback receiver here, allowed by name), under
the same egress rule as A2A push callbacks: a host the rule refuses gets nothing and the refusal is recorded. An
approver then decides with the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
from mcp.shared.exceptions import MCPError

from tests.approvals.support import APPROVER_KEY, Hook, Progress, decide, hold_settings
from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import audit_records, gateway, serve

ROOT = Path(__file__).resolve().parent.parent.parent


async def _cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENTGW_APPROVER_KEY": APPROVER_KEY}
    done = await anyio.run_process(
        [sys.executable, "-m", "agentgw", "approvals", *args], env=env, check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_the_webhook_receives_the_announcement_and_the_cli_approves_the_held_call(
    tmp_path: Path,
) -> None:
    docs, hook, out = Upstream("docs"), Hook(), {}
    async with serve(docs) as up, serve(hook) as hook_url:
        settings = hold_settings(tmp_path, webhook={"url": f"{hook_url}/hook", "allow": ["127.0.0.1"]})
        async with gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, _):
            async with mcp_client(f"{url}/mcp") as client, anyio.create_task_group() as tg:

                async def call() -> None:
                    out["result"] = await client.call_tool("docs__echo", {"text": "hooked"})

                tg.start_soon(call)  # no progress token: the call takes the plane's direct path
                with anyio.fail_after(10):
                    await hook.received.wait()
                approval = hook.bodies[0]["approval"]
                listed = await _cli("list", "--url", url)
                approved = await _cli("approve", approval["id"], "--reason", "by CLI", "--url", url)
            after = await _cli("list", "--state", "approved", "--url", url)
    assert out["result"].content[0].text == "hooked"
    assert hook.bodies[0]["type"] == "approval.requested"
    assert (approval["principal"], approval["target"], approval["arguments"]) == (
        "tester",
        "mcp:docs/echo",
        {"text": "hooked"},
    )
    assert listed[0] == 0 and approval["id"] in listed[1] and "pending" in listed[1]
    assert approved[0] == 0 and "approved" in approved[1] and "by ann" in approved[1]
    assert after[0] == 0 and approval["id"] in after[1]
    [call] = [
        r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/echo" and r.get("plane") == "mcp"
    ]
    assert any("webhook answered 204" in d.get("detail", "") for d in call["decisions"])


async def test_a_webhook_on_a_host_the_egress_rule_refuses_gets_nothing_and_the_refusal_is_recorded(
    tmp_path: Path,
) -> None:
    docs, hook, out = Upstream("docs"), Hook(), {}
    progress = Progress()
    async with serve(docs) as up, serve(hook) as hook_url:
        settings = hold_settings(tmp_path, webhook={"url": f"{hook_url}/hook"})  # loopback, not allowed
        async with gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, _):
            async with mcp_client(f"{url}/mcp") as client, anyio.create_task_group() as tg:

                async def call() -> None:
                    try:
                        await client.call_tool("docs__echo", {"text": "x"}, progress_callback=progress)
                    except MCPError as err:
                        out["error"] = err

                tg.start_soon(call)
                with anyio.fail_after(10):
                    await progress.held.wait()
                await decide(url, progress.approval_id, "deny")
            refused = await _cli("approve", progress.approval_id, "--url", url)
    assert hook.bodies == []
    assert out["error"].data["code"] == "approval_denied"
    assert refused[0] == 1 and "409 approval_decided" in refused[2]
    [call] = [
        r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/echo" and r.get("plane") == "mcp"
    ]
    details = [d.get("detail", "") for d in call["decisions"]]
    assert any(
        "webhook refused by the egress rule: 127.0.0.1 is a special-purpose IPv4 address" in d
        for d in details
    )
