"""Drills on the shared stores, each private to the drill (the machine's Redis and PostgreSQL are never stopped):
Redis restarts under two replicas (budgeted calls fail closed with a clear error, then recover without restarting
any gateway), and the audit store's PostgreSQL stops and comes back (records of calls made meanwhile are retried
by the audit writer and land; the chain verifies; one record per call)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.drills.conftest import PrivatePostgres, PrivateRedis, drill_cluster

AUTH = {"authorization": "Bearer agw-demo-key"}
CHAT = {"model": "mock-fast", "messages": [{"role": "user", "content": "drill"}], "max_tokens": 5}


def chat(url: str, task: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json=CHAT, headers={**AUTH, "x-agentgw-task": task}, timeout=30
    )


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
def test_budgeted_calls_follow_on_ledger_error_while_redis_is_down_and_recover_when_it_is_back(
    private_redis: PrivateRedis, mode: str
) -> None:
    """fail_closed (the default): refused with 503 budget_unavailable; fail_open: answered, unmetered."""
    task = f"drill-{uuid.uuid4().hex[:8]}"

    def on_error(cfg: dict[str, Any], reg: dict[str, Any]) -> None:
        cfg["budgets"]["on_ledger_error"] = mode

    with drill_cluster(2, redis_url=private_redis.url, tweak=on_error) as info:
        replicas = [info["group"].url(i) for i in (1, 2)]
        before = [chat(info["url"], task) for _ in range(2)]
        left_before = int(before[-1].headers["x-agentgw-budget-remaining-tokens"])
        private_redis.stop()
        down = [chat(url, task) for url in [info["url"], *replicas]]
        private_redis.start()
        started = time.monotonic()
        recovered: dict[str, float] = {}
        while len(recovered) < len(replicas) and time.monotonic() - started < 60:
            for url in replicas:
                if url not in recovered and chat(url, task).status_code == 200:
                    recovered[url] = round(time.monotonic() - started, 2)
            time.sleep(0.1)  # Redis coming back is another process's doing: polled, bounded above
        after = chat(info["url"], task)
    print(f"redis drill ({mode}): down answers {[r.status_code for r in down]}: {down[0].json().get('error')}; "
          f"recovered after {recovered}")  # fmt: skip
    assert all(r.status_code == 200 for r in before)
    if mode == "fail_closed":
        assert all(r.status_code == 503 for r in down)
        assert {r.json()["error"]["code"] for r in down} == {"budget_unavailable"}
    else:
        assert all(r.status_code == 200 for r in down)
    assert set(recovered) == set(replicas)  # every replica, none restarted
    # Redis kept its data (appendonly): the task goes on from where it was, not from zero
    assert after.status_code == 200
    assert int(after.headers["x-agentgw-budget-remaining-tokens"]) < left_before


async def audit_calls(dsn: str, schema: str, task: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n = await conn.fetchval(
            f'SELECT count(*) FROM "{schema}".agentgw_audit_records WHERE kind = $1 AND task_id = $2',
            "call",
            task,
        )
        return int(n)
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


def test_audit_records_of_calls_made_while_postgres_is_down_land_when_it_is_back_and_verify(
    private_pg: PrivatePostgres,
) -> None:
    task = f"drill-{uuid.uuid4().hex[:8]}"
    with drill_cluster(2, pg_dsn=private_pg.dsn) as info:
        schema = info["prefix"].replace("-", "_")
        before = [chat(info["url"], task) for _ in range(10)]
        private_pg.stop("fast")
        down_started = time.monotonic()
        during = [chat(info["url"], task) for _ in range(10)]
        down_calls_s = time.monotonic() - down_started
        private_pg.start()
        ok = sum(r.status_code == 200 for r in before + during)
        started, landed = time.monotonic(), 0
        while time.monotonic() - started < 120:
            landed = asyncio.run(audit_calls(private_pg.dsn, schema, task))
            if landed >= ok:
                break
            time.sleep(0.5)  # the writer's backoff decides when; nothing to wait on across processes
        landed_after_s = time.monotonic() - started
        verify = subprocess.run(
            [str(Path(sys.executable).parent / "agentgw"), "audit", "verify", "--config", info["config"]],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        landed = asyncio.run(audit_calls(private_pg.dsn, schema, task))
    print(f"postgres drill: {ok} calls answered (10 while down, in {down_calls_s:.2f} s), {landed} records, "
          f"all landed {landed_after_s:.1f} s after PostgreSQL was back; verify: {verify.stdout.strip()}")  # fmt: skip
    assert all(r.status_code == 200 for r in before + during)  # the audit store is off the hot path
    assert landed == ok == 20
    assert verify.returncode == 0, verify.stdout + verify.stderr
