"""The stores inside the gateway: two replicas writing one PostgreSQL chain (one task's steps spread over both
show as one tree, and the chain verifies); retention configured in `audit.retention` prunes old records at
startup behind a checkpoint, and the rest still verifies."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
import pytest

from agentgw.audit.record import record_id
from tests.audit.support import STORES, audit_settings, check, running_writer, write
from tests.audit.test_chain import AGENTGW
from tests.support import MOCK_REGISTRY, TEST_KEY, audit_records, gateway

CHAT = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {TEST_KEY}", "x-agentgw-task": "spread"}


async def test_two_replicas_write_one_postgres_chain_and_one_tree(tmp_path: Path) -> None:
    async with audit_settings("postgres", batch_wait_ms=0) as audit:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        async with (
            gateway(tmp_path / "a", MOCK_REGISTRY, {"audit": audit}) as (url_a, app_a),
            gateway(tmp_path / "b", MOCK_REGISTRY, {"audit": audit}) as (url_b, _),
            httpx.AsyncClient() as c,
        ):
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i in range(40):
                        url = url_a if i % 2 else url_b
                        tg.start_soon(
                            lambda u=url: c.post(f"{u}/v1/chat/completions", json=CHAT, headers=AUTH)
                        )
        cfg = str(tmp_path / "a" / "agentgw.yaml")
        verified = await anyio.run_process([AGENTGW, "audit", "verify", "--config", cfg])
        shown = await anyio.run_process([AGENTGW, "trace", "show", "spread", "--config", cfg])
    assert verified.stdout.decode().startswith("OK: 40 records verified")
    assert shown.stdout.decode().splitlines()[0].startswith("task spread  principal tester  40 steps")
    assert app_a.audit is not None and app_a.audit.written > 0


async def test_retention_prunes_old_records_at_startup_and_the_chain_still_verifies(tmp_path: Path) -> None:
    async with audit_settings("sqlite") as audit, running_writer(tmp_path, audit) as w:
        await write(w, 5, started=time.time() - 10 * 86400)
        await write(w, 2)
    retention = {"audit": {**audit, "retention": {"max_age_days": 7}}}
    async with (
        gateway(tmp_path, MOCK_REGISTRY, retention) as (url, app),
        httpx.AsyncClient(base_url=url) as c,
    ):
        assert app.audit is not None
        w = app.audit
        with anyio.fail_after(20):
            await w.until(lambda: w.prunes >= 1)
        assert w.pruned == 5
        await c.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert [r["task_id"] for r in audit_records(tmp_path)] == ["job", "job", "spread"]
    async with running_writer(tmp_path, audit) as w:
        v = await check(w)
    assert v.ok and v.count == 4 and v.first_seq == 6


@pytest.mark.parametrize("kind", STORES)
async def test_a_store_says_which_of_a_list_of_record_ids_it_holds(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        await write(w, 3)
        ids = [str(r.columns[0]) async for r in w.store.rows()]
        missing = record_id(time.time())  # a well-formed id of a record never written
        found = await w.store.present([missing, *ids])
        empty = await w.store.present([])
    assert found == set(ids) and len(ids) == 3
    assert empty == set()


@pytest.mark.parametrize("kind", STORES)
async def test_a_store_lists_the_tasks_with_a_step_on_a_target_glob(tmp_path: Path, kind: str) -> None:
    from agentgw.audit.store import TaskFilter

    async with audit_settings(kind) as audit, running_writer(tmp_path, audit) as w:
        await write(w, 2, task="chat", target="llm:gpt-5")
        await write(w, 1, task="tools", target="mcp:docs/search_docs")
        await write(w, 1, task="odd", target="mcp:docs/search%docs")
        gpt = await w.store.tasks(TaskFilter(target="llm:gpt-*"))
        docs = await w.store.tasks(TaskFilter(target="mcp:docs/*"))
        literal = await w.store.tasks(TaskFilter(target="mcp:docs/search%docs"))  # `%` is no wildcard
        none = await w.store.tasks(TaskFilter(target="a2a:*"))
    assert [(t["task_id"], t["records"]) for t in gpt] == [("chat", 2)]
    assert sorted(t["task_id"] for t in docs) == ["odd", "tools"]
    assert [t["task_id"] for t in literal] == ["odd"]
    assert none == []
