"""The trace API under /admin/ (admin role only) and `agentgw trace list`: task lists filtered by principal, time,
status and denials; one task's tree bound to its principal (a shared client-chosen id is ambiguous until the admin
names one principal, or all); single records; bad queries get 400 with a stable code; non-admins see nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from tests.audit.test_chain import AGENTGW
from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, gateway, sha

ADMIN_KEY = "agw-admin-key-0123456789"
SETTINGS: dict[str, Any] = {
    "auth": {
        "api_keys": [
            {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
            {"subject": "other", "roles": [], "sha256": sha(OTHER_KEY)},
            {"subject": "auditor", "roles": ["admins"], "sha256": sha(ADMIN_KEY)},
        ]
    },
    "budgets": {"rules": [{"match": {"roles": ["agents"]}, "task": {"tokens": 100_000}}]},
}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}


async def calls(c: httpx.AsyncClient) -> None:
    for key, task in ((TEST_KEY, "shared"), (TEST_KEY, "shared"), (OTHER_KEY, "shared"), (TEST_KEY, "solo")):
        await c.post(
            "/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {key}", "x-agentgw-task": task},
        )


def tasks(r: httpx.Response) -> list[tuple[str, str, int, int]]:
    assert r.status_code == 200, r.text
    return sorted((t["task_id"], t["principal"], t["records"], t["denied"]) for t in r.json()["tasks"])


async def test_task_lists_filter_by_principal_time_status_and_denials(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, app), httpx.AsyncClient(base_url=url) as c:
        await calls(c)
        assert app.audit is not None
        await app.audit.flush()
        everything = await c.get("/admin/tasks", headers=ADMIN)
        by_other = await c.get("/admin/tasks", params={"principal": "other"}, headers=ADMIN)
        denied = await c.get("/admin/tasks", params={"denied": "true"}, headers=ADMIN)
        ok = await c.get("/admin/tasks", params={"status": "ok"}, headers=ADMIN)
        recent = await c.get("/admin/tasks", params={"since": "1h"}, headers=ADMIN)
        future = await c.get("/admin/tasks", params={"since": "2099-01-01T00:00:00Z"}, headers=ADMIN)
        one = await c.get("/admin/tasks", params={"limit": "1"}, headers=ADMIN)
    assert tasks(everything) == [
        ("shared", "other", 1, 1),
        ("shared", "tester", 2, 0),
        ("solo", "tester", 1, 0),
    ]
    assert tasks(by_other) == tasks(denied) == [("shared", "other", 1, 1)]
    assert tasks(ok) == tasks(recent)[1:]
    assert tasks(recent) == tasks(everything)
    assert tasks(future) == []
    assert [t["task_id"] for t in one.json()["tasks"]] == ["solo"]  # newest first
    started = everything.json()["tasks"][0]["started"]
    assert time.time() - 3600 < started <= time.time()
    cfg = str(tmp_path / "agentgw.yaml")
    listed = await anyio.run_process([AGENTGW, "trace", "list", "--config", cfg, "--denied", "--json"])
    assert [(t["task_id"], t["principal"]) for t in orjson.loads(listed.stdout)["tasks"]] == [
        ("shared", "other")
    ]
    text = (await anyio.run_process([AGENTGW, "trace", "list", "--config", cfg])).stdout.decode()
    assert text.splitlines()[0].startswith("started (UTC)") and len(text.splitlines()) == 4


async def test_a_task_id_two_principals_used_is_shown_for_one_principal_or_explicitly_for_both(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, app), httpx.AsyncClient(base_url=url) as c:
        await calls(c)
        assert app.audit is not None
        await app.audit.flush()
        ambiguous = await c.get("/admin/tasks/shared", headers=ADMIN)
        mine = await c.get("/admin/tasks/shared", params={"principal": "tester"}, headers=ADMIN)
        both = await c.get("/admin/tasks/shared", params={"principal": "*"}, headers=ADMIN)
        solo = await c.get("/admin/tasks/solo", headers=ADMIN)
        record_id = solo.json()["steps"][0]["record_id"]
        record = await c.get(f"/admin/records/{record_id}", headers=ADMIN)
        budget = await c.get("/admin/tasks/shared/budget", params={"principal": "tester"}, headers=ADMIN)
    assert ambiguous.status_code == 409
    assert (
        ambiguous.json()["error"]["code"] == "ambiguous_task"
        and "other, tester" in ambiguous.json()["error"]["message"]
    )
    assert [s["principal"] for s in mine.json()["steps"]] == ["tester", "tester"]
    assert sorted(s["principal"] for s in both.json()["steps"]) == ["other", "tester", "tester"]
    assert both.json()["principal"] == ["other", "tester"]
    assert solo.json()["principal"] == "tester" and solo.json()["totals"]["steps"] == 1
    assert record.json()["record_id"] == record_id and record.json()["task_id"] == "solo"
    assert (
        budget.status_code == 200 and budget.json()["key"] == "tester/shared"
    )  # the budget view still works
    shown = await anyio.run_process(
        [AGENTGW, "trace", "show", "shared", "--config", str(tmp_path / "agentgw.yaml")], check=False
    )
    assert shown.returncode == 2 and b"--principal" in shown.stderr


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/admin/tasks", {"since": "yesterday-ish"}, 400, "invalid_request"),
        ("/admin/tasks", {"status": "weird"}, 400, "invalid_request"),
        ("/admin/tasks", {"denied": "maybe"}, 400, "invalid_request"),
        ("/admin/tasks", {"limit": "lots"}, 400, "invalid_request"),
        ("/admin/tasks", {"limit": "0"}, 400, "invalid_request"),
        ("/admin/tasks/nothing-here", {}, 404, "task_not_found"),
        ("/admin/records/nothing-here", {}, 404, "record_not_found"),
    ],
)
async def test_bad_trace_queries_get_a_stable_error_code(
    tmp_path: Path, path: str, params: dict[str, str], status: int, code: str
) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, _), httpx.AsyncClient(base_url=url) as c:
        r = await c.get(path, params=params, headers=ADMIN)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


async def test_a_principal_without_the_admin_role_sees_nothing(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, app), httpx.AsyncClient(base_url=url) as c:
        await calls(c)
        assert app.audit is not None
        await app.audit.flush()
        solo = (await c.get("/admin/tasks/solo", headers=ADMIN)).json()
        agent = {"authorization": f"Bearer {TEST_KEY}"}
        seen = [
            await c.get(p, headers=h)
            for p in ("/admin/tasks", "/admin/tasks/solo", f"/admin/records/{solo['steps'][0]['record_id']}")
            for h in (agent, {})
        ]
    assert [r.status_code for r in seen] == [403, 401] * 3
    assert all("solo" not in r.text and "steps" not in r.text for r in seen)


async def test_with_audit_disabled_the_trace_api_says_so(tmp_path: Path) -> None:
    settings = {**SETTINGS, "audit": {"enabled": False}}
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/admin/tasks", headers=ADMIN)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "audit_disabled")


async def test_verifying_a_task_finds_its_records_intact_and_then_the_one_edited_in_the_store(
    tmp_path: Path,
) -> None:
    import sqlite3

    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, app), httpx.AsyncClient(base_url=url) as c:
        await calls(c)
        assert app.audit is not None
        await app.audit.flush()
        intact = await c.get("/admin/tasks/solo/verify", headers=ADMIN)
        seq = intact.json()["records"][0]["seq"]
        with sqlite3.connect(tmp_path / "audit.db") as db:  # an insider edits the record in place
            db.execute("UPDATE records SET status = 'denied' WHERE seq = ?", (seq,))
        edited = await c.get("/admin/tasks/solo/verify", headers=ADMIN)
        unknown = await c.get("/admin/tasks/nothing-here/verify", headers=ADMIN)
        agent = await c.get("/admin/tasks/solo/verify", headers={"authorization": f"Bearer {TEST_KEY}"})
    assert intact.status_code == 200, intact.text
    assert intact.json()["ok"] is True and intact.json()["checked"] == 1
    assert edited.json()["ok"] is False
    assert edited.json()["records"][0]["problem"].startswith("edited")
    assert unknown.status_code == 404
    assert agent.status_code == 403


async def test_task_lists_filter_by_target_glob_cost_and_until(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, app), httpx.AsyncClient(base_url=url) as c:
        await calls(c)
        await c.post(  # a task with an embeddings step: the only one on llm:mock-embed
            "/v1/embeddings",
            json={"model": "mock-embed", "input": "hi"},
            headers={"authorization": f"Bearer {TEST_KEY}", "x-agentgw-task": "embed"},
        )
        assert app.audit is not None
        await app.audit.flush()
        embed = await c.get("/admin/tasks", params={"target": "llm:*-embed"}, headers=ADMIN)
        fast = await c.get("/admin/tasks", params={"target": "llm:mock-fast"}, headers=ADMIN)
        literal = await c.get(
            "/admin/tasks", params={"target": "llm:mock_fast"}, headers=ADMIN
        )  # `_` is no wildcard
        costly = await c.get("/admin/tasks", params={"min_cost": "1000"}, headers=ADMIN)
        free = await c.get("/admin/tasks", params={"min_cost": "0"}, headers=ADMIN)
        before = await c.get("/admin/tasks", params={"until": "2000-01-01T00:00:00Z"}, headers=ADMIN)
        bad_cost = await c.get("/admin/tasks", params={"min_cost": "lots"}, headers=ADMIN)
        bad_until = await c.get("/admin/tasks", params={"until": "yesterday-ish"}, headers=ADMIN)
    assert [(t[0], t[1]) for t in tasks(embed)] == [("embed", "tester")]
    assert {t[0] for t in tasks(fast)} == {"shared", "solo"}
    assert tasks(literal) == [] and tasks(costly) == [] and tasks(before) == []
    assert len(tasks(free)) == 4
    assert bad_cost.status_code == bad_until.status_code == 400
    assert "until" in bad_until.json()["error"]["message"]
    cfg = str(tmp_path / "agentgw.yaml")
    listed = await anyio.run_process(
        [AGENTGW, "trace", "list", "--config", cfg, "--target", "llm:*-embed", "--min-cost", "0", "--json"]
    )
    assert [t["task_id"] for t in orjson.loads(listed.stdout)["tasks"]] == ["embed"]
