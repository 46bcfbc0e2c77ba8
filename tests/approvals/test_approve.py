"""Policy effect `approve` end to end: a real gateway, the real `mcp` client (both eras) against an MCP SDK server,
an approver deciding through the HTTP admin API while the call waits (events, no sleeps)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tests.approvals.support import (
    ADMIN_KEY,
    APPROVER_KEY,
    SELF_KEY,
    Progress,
    decide,
    hold_settings,
    listing,
)
from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import OTHER_KEY, TEST_KEY, audit_records, gateway, serve

CLIENT_MODES = ["legacy", "2026-07-28"]
PERMISSION_DENIED = -32011


def _stored(tmp: Path) -> bytes:
    """Every byte the SQLite store holds: the file and its WAL."""
    return b"".join(f.read_bytes() for f in tmp.glob("audit.db*"))


async def _held_call(
    client: Any, progress: Progress, out: dict[str, Any], tool: str = "docs__echo", **args: Any
) -> None:
    try:
        out["result"] = await client.call_tool(tool, args or {"text": "hello"}, progress_callback=progress)
    except MCPError as err:
        out["error"] = err


@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_an_approver_approves_a_held_call_through_the_admin_api_and_the_call_returns_the_tools_result(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs")
    progress, out = Progress(), {}
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client, anyio.create_task_group() as tg:
            tg.start_soon(_held_call, client, progress, out)
            with anyio.fail_after(10):
                await progress.held.wait()
            pending = (await listing(url)).json()["approvals"]
            answer = await decide(url, progress.approval_id, "approve", reason="looks fine")
    assert "error" not in out
    assert out["result"].content[0].text == "hello"
    [request] = pending
    assert request["id"] == progress.approval_id and request["state"] == "pending"
    assert (request["principal"], request["target"], request["arguments"]) == (
        "tester",
        "mcp:docs/echo",
        {"text": "hello"},
    )
    assert request["rule"] == "policy.csv:2: p, role:agents, mcp:docs/echo, call, approve"
    assert request["task"] and request["trace"]
    assert answer.status_code == 200
    assert (answer.json()["state"], answer.json()["approver"], answer.json()["reason"]) == (
        "approved",
        "ann",
        "looks fine",
    )
    records = audit_records(tmp_path)
    [call] = [r for r in records if r["target"] == "mcp:docs/echo" and r.get("plane") == "mcp"]
    holds = [d for d in call["decisions"] if d["stage"] == "hold"]
    assert holds[0]["outcome"] == "info" and "requested" in holds[0]["detail"]
    assert holds[-1]["outcome"] == "allow" and "approved by ann: looks fine" in holds[-1]["detail"]
    [decided] = [r for r in records if r.get("plane") == "admin"]
    assert decided["principal"] == "ann" and decided["task_id"] == call["task_id"]
    assert "approved by ann (looks fine)" in decided["decisions"][0]["detail"]


@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_a_denied_call_gets_permission_denied_naming_the_approver_and_the_reason(
    tmp_path: Path, client_mode: str
) -> None:
    docs = Upstream("docs")
    progress, out = Progress(), {}
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp", mode=client_mode) as client, anyio.create_task_group() as tg:
            tg.start_soon(_held_call, client, progress, out)
            with anyio.fail_after(10):
                await progress.held.wait()
            answer = await decide(url, progress.approval_id, "deny", reason="not on a Friday")
            again = await decide(url, progress.approval_id, "approve")
    err = out["error"]
    assert (err.code, err.data["code"]) == (PERMISSION_DENIED, "approval_denied")
    assert "ann" in err.message and "not on a Friday" in err.message
    assert answer.json()["state"] == "denied"
    assert (again.status_code, again.json()["error"]["code"]) == (409, "approval_decided")
    [call] = [
        r for r in audit_records(tmp_path) if r["target"] == "mcp:docs/echo" and r.get("plane") == "mcp"
    ]
    assert call["status"] == "denied"
    assert "denied by ann: not on a Friday" in call["decisions"][-1]["detail"]


async def test_a_call_nobody_decides_is_denied_when_the_approval_times_out(tmp_path: Path) -> None:
    docs = Upstream("docs")
    settings = hold_settings(tmp_path, timeout_s=0.3)
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, _):
        async with mcp_client(f"{url}/mcp") as client:
            with pytest.raises(MCPError) as err, anyio.fail_after(10):
                await client.call_tool("docs__echo", {"text": "late"})
        expired = (await listing(url, state="expired")).json()["approvals"]
        late = await decide(url, expired[0]["id"], "approve")
    assert (err.value.code, err.value.data["code"]) == (PERMISSION_DENIED, "approval_timeout")
    assert [a["state"] for a in expired] == ["expired"]
    assert (late.status_code, late.json()["error"]["code"]) == (409, "approval_decided")


async def test_progress_notifications_keep_arriving_while_the_call_waits(tmp_path: Path) -> None:
    docs = Upstream("docs")
    progress, out = Progress(), {}
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp") as client, anyio.create_task_group() as tg:
            tg.start_soon(_held_call, client, progress, out)
            with anyio.fail_after(10):
                await progress.held.wait()
                while len(progress.messages) < 3:  # every progress_interval_s (0.05 s here) while it waits
                    seen = len(progress.messages)
                    progress.held = anyio.Event()
                    await progress.held.wait()
                    assert len(progress.messages) > seen
            await decide(url, progress.approval_id, "approve")
    assert out["result"].content[0].text == "hello"
    assert progress.messages[0].startswith(f"Waiting for approval {progress.approval_id} of mcp:docs/echo")
    assert all(m.startswith(f"Waiting for approval {progress.approval_id}") for m in progress.messages)


async def test_the_caller_cannot_approve_its_own_request_and_a_non_approver_gets_403(tmp_path: Path) -> None:
    docs = Upstream("docs")
    progress, out = Progress(), {}
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp", key=SELF_KEY) as client, anyio.create_task_group() as tg:
            tg.start_soon(_held_call, client, progress, out)
            with anyio.fail_after(10):
                await progress.held.wait()
            own = await decide(url, progress.approval_id, "approve", key=SELF_KEY)
            caller = await decide(url, progress.approval_id, "approve", key=TEST_KEY)
            nobody = await decide(url, progress.approval_id, "approve", key=OTHER_KEY)
            admin = await decide(url, progress.approval_id, "approve", key=ADMIN_KEY)
            admin_list = await listing(url, key=ADMIN_KEY)
            agent_list = await listing(url, key=TEST_KEY)
            await decide(url, progress.approval_id, "deny", key=APPROVER_KEY)
    assert (own.status_code, own.json()["error"]["code"]) == (403, "own_request")
    assert (caller.status_code, caller.json()["error"]["code"]) == (403, "not_an_approver")
    assert (nobody.status_code, nobody.json()["error"]["code"]) == (403, "not_an_approver")
    # admins may look at the requests, not decide them (only `approvals.approver_roles` decide)
    assert (admin.status_code, admin.json()["error"]["code"]) == (403, "not_an_approver")
    assert admin_list.status_code == 200 and len(admin_list.json()["approvals"]) == 1
    assert (agent_list.status_code, agent_list.json()["error"]["code"]) == (403, "not_an_approver")
    assert out["error"].data["code"] == "approval_denied"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_request"),
        (b'{"decision": "maybe"}', 400, "invalid_request"),
        (b'{"decision": "approve", "reason": 7}', 400, "invalid_request"),
        (b'{"decision": "approve", "extra": 1}', 400, "invalid_request"),
        (b"[]", 400, "invalid_request"),
    ],
)
async def test_a_bad_decision_body_is_400_and_an_unknown_id_is_404(
    tmp_path: Path, body: bytes, status: int, code: str
) -> None:
    import httpx

    docs = Upstream("docs")
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {APPROVER_KEY}"}
        ) as http:
            bad = await http.post("/admin/approvals/apr_nope", content=body)
            unknown = await http.post("/admin/approvals/apr_nope", json={"decision": "approve"})
            shown = await http.get("/admin/approvals/apr_nope")
            state = await http.get("/admin/approvals", params={"state": "weird"})
            anonymous = await http.get("/admin/approvals", headers={"Authorization": ""})
    assert (bad.status_code, bad.json()["error"]["code"]) == (status, code)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "approval_not_found")
    assert (shown.status_code, shown.json()["error"]["code"]) == (404, "approval_not_found")
    assert state.status_code == 400
    assert anonymous.status_code == 401


async def test_an_approve_line_with_a_condition_holds_only_the_calls_whose_arguments_match(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    settings = hold_settings(tmp_path)
    (tmp_path / "policy.csv").write_text(
        "p, role:agents, mcp:*, *, allow\n"
        'p, role:agents, mcp:docs/echo, call, approve, args.text.startsWith("rm ")\n'
    )
    progress, out = Progress(), {}
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up)), settings) as (url, _):
        async with mcp_client(f"{url}/mcp") as client:
            harmless = await client.call_tool("docs__echo", {"text": "ls"})  # no hold: the condition is false
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(_held_call, client, progress, out, text="rm -rf /tmp/x"))
                with anyio.fail_after(10):
                    await progress.held.wait()
                [pending] = (await listing(url)).json()["approvals"]
                await decide(url, pending["id"], "approve")
    assert harmless.content[0].text == "ls"
    assert pending["arguments"] == {"text": "rm -rf /tmp/x"}
    assert pending["rule"].startswith("policy.csv:2: p, role:agents, mcp:docs/echo, call, approve, args.text")
    assert out["result"].content[0].text == "rm -rf /tmp/x"


async def test_secrets_in_the_arguments_and_in_the_approvers_reason_are_redacted_as_in_the_audit_record(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    secret = "sk-live0123456789abcdefghij"
    progress, out = Progress(), {}
    async with (
        serve(docs) as up,
        gateway(tmp_path, registry(server_entry("docs", up)), hold_settings(tmp_path)) as (
            url,
            _,
        ),
    ):
        async with mcp_client(f"{url}/mcp") as client, anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(_held_call, client, progress, out, text=f"use key {secret}"))
            with anyio.fail_after(10):
                await progress.held.wait()
            [pending] = (await listing(url)).json()["approvals"]
            answer = await decide(url, progress.approval_id, "deny", reason=f"never paste {secret}")
    assert pending["arguments"] == {"text": "use key [secret]"}
    assert answer.json()["reason"] == "never paste [secret]"
    assert secret not in out["error"].message
    stored = _stored(tmp_path)
    assert b"use key [secret]" in stored and secret.encode() not in stored
