"""Pending approvals live in the audit store's database (SQLite file, PostgreSQL), so they survive a restart of the
gateway: still listed with their original expiry, still decidable, and the caller's retry of the same call goes
ahead on the approval given after the restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.approvals.support import Progress, decide, hold_settings, listing
from tests.audit.support import audit_settings
from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import audit_records, gateway, serve


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_pending_approval_survives_a_gateway_restart_and_the_retried_call_goes_ahead_on_it(
    tmp_path: Path, kind: str
) -> None:
    docs = Upstream("docs")
    progress = Progress()
    async with audit_settings(kind, writer="inline") as audit, serve(docs) as up:
        settings: dict[str, Any] = {**hold_settings(tmp_path), "audit": audit}
        reg = registry(server_entry("docs", up))
        async with gateway(tmp_path, reg, settings) as (url, _):
            async with mcp_client(f"{url}/mcp") as client, anyio.create_task_group() as tg:

                async def call() -> None:
                    await client.call_tool("docs__echo", {"text": "again"}, progress_callback=progress)

                tg.start_soon(call)
                with anyio.fail_after(10):
                    await progress.held.wait()
                [before] = (await listing(url)).json()["approvals"]
                tg.cancel_scope.cancel()  # the caller gives up; then the gateway stops
        async with gateway(tmp_path, reg, settings) as (url, _):
            [after] = (await listing(url)).json()["approvals"]
            answer = await decide(url, before["id"], "approve", reason="after the restart")
            async with mcp_client(f"{url}/mcp") as client:
                with anyio.fail_after(10):
                    result = await client.call_tool("docs__echo", {"text": "again"})
                    other = await decide(url, before["id"], "deny")
            left = (await listing(url, state="all")).json()["approvals"]
    assert before["id"] == progress.approval_id
    assert after == before  # same request, same expiry: the timeout still applies
    assert answer.status_code == 200 and answer.json()["state"] == "approved"
    assert result.content[0].text == "again"
    assert other.status_code == 409
    assert [(a["id"], a["state"], a["used"]) for a in left] == [(before["id"], "approved", True)]
    if kind == "sqlite":
        calls = [
            r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/echo" and r.get("plane") == "mcp"
        ]
        assert calls[-1]["status"] == "ok"
        assert any("found for this call" in d.get("detail", "") for d in calls[-1]["decisions"])


async def test_a_decision_made_through_another_gateway_process_reaches_the_waiting_call_through_the_store(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    progress, out = Progress(), {}
    settings = hold_settings(tmp_path)  # both gateways share the audit file, as workers and replicas do
    async with serve(docs) as up:
        reg = registry(server_entry("docs", up))
        async with (
            gateway(tmp_path, reg, settings) as (held_at, _),
            gateway(tmp_path, reg, settings) as (other, _),
        ):
            async with mcp_client(f"{held_at}/mcp") as client, anyio.create_task_group() as tg:

                async def call() -> None:
                    out["result"] = await client.call_tool(
                        "docs__echo", {"text": "far"}, progress_callback=progress
                    )

                tg.start_soon(call)
                with anyio.fail_after(10):
                    await progress.held.wait()
                listed = (await listing(other)).json()["approvals"]
                answer = await decide(other, progress.approval_id, "approve")
    assert [a["id"] for a in listed] == [progress.approval_id]
    assert answer.status_code == 200
    assert (
        out["result"].content[0].text == "far"
    )  # woken by its poll of the store (approvals.poll_interval_s)
