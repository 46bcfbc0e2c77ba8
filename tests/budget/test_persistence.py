"""A Redis ledger without persistence would silently reset every task's spending when Redis restarts: the gateway
says so at start (a warning in the log) and in `/readyz` (`budgets.persistent: false` with the warning). The
machine's Redis runs without persistence; a private redis-server with append-only files is persistent."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from agentgw import create_app, load_settings
from tests.budget.test_budgets import REDIS_URL, REGISTRY, budgets, inproc
from tests.budget.test_faults import private_redis
from tests.support import drop_redis_keys, free_port, write_config


async def test_a_redis_ledger_without_persistence_is_flagged_at_start_and_in_readyz(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"agwtest-{uuid.uuid4().hex[:8]}"
    cfg = budgets({"tokens": 100}, ledger="redis", redis_url=REDIS_URL, key_prefix=prefix)
    app = create_app(load_settings(write_config(tmp_path, REGISTRY, cfg)))
    with caplog.at_level(logging.WARNING, logger="agentgw.budget"):
        async with inproc(app) as c:
            r = await c.get("/readyz")
    await drop_redis_keys(REDIS_URL, prefix)
    assert (
        r.status_code == 200
    )  # a warning, not a failure: the gateway works, budgets are exact until Redis restarts
    budgets_state = r.json()["budgets"]
    assert (budgets_state["ledger"], budgets_state["persistent"]) == ("redis", False)
    assert "restart" in budgets_state["warning"] and "appendonly" in budgets_state["warning"]
    assert any("appendonly" in rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING)


async def test_a_redis_ledger_with_append_only_files_is_reported_persistent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    cfg = budgets({"tokens": 100}, ledger="redis", redis_url=f"redis://127.0.0.1:{port}/0")
    app = create_app(load_settings(write_config(tmp_path, REGISTRY, cfg)))
    with caplog.at_level(logging.WARNING, logger="agentgw.budget"):
        async with private_redis(data, port), inproc(app) as c:
            r = await c.get("/readyz")
    assert r.json()["budgets"] == {"ledger": "redis", "persistent": True}
    assert not [rec for rec in caplog.records if "persist" in rec.getMessage()]


async def test_the_memory_ledger_is_reported_as_what_it_is(tmp_path: Path) -> None:
    app = create_app(load_settings(write_config(tmp_path, REGISTRY, budgets({"tokens": 100}))))
    async with inproc(app) as c:
        r = await c.get("/readyz")
    assert r.json()["budgets"] == {"ledger": "memory", "persistent": False}


async def test_a_redis_that_hides_its_config_and_keeps_no_append_only_file_is_flagged_as_unknown(
    tmp_path: Path,
) -> None:
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    cfg = budgets({"tokens": 100}, ledger="redis", redis_url=f"redis://127.0.0.1:{port}/0")
    app = create_app(load_settings(write_config(tmp_path, REGISTRY, cfg)))
    async with private_redis(
        data, port, "--appendonly", "no", "--rename-command", "CONFIG", ""
    ):  # like managed Redis
        async with inproc(app) as c:
            r = await c.get("/readyz")
    state = r.json()["budgets"]
    assert (state["ledger"], state["persistent"]) == ("redis", None)
    assert "does not say whether it saves snapshots" in state["warning"]
