"""Two gateways sharing Redis: a task created through one belongs to its creator on the other, and to nobody
else (ownership lives in Redis when the gateway runs with Redis)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.a2a.test_plane_smoke import echo_app, send
from tests.support import TEST_KEY, drop_redis_keys, free_port, gateway, serve, sha

REDIS_URL = os.environ.get("AGENTGW_TEST_REDIS", "redis://127.0.0.1:6379/15")
MALLORY_KEY = "agw-mallory-key-0123456789"


async def redis_up() -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"Redis not reachable: {exc}")
    finally:
        await client.aclose()


def settings(prefix: str) -> dict[str, Any]:
    return {
        "auth": {
            "api_keys": [
                {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
                {"subject": "mallory", "roles": ["agents"], "sha256": sha(MALLORY_KEY)},
            ]
        },
        "a2a": {"ownership": "redis", "redis_url": REDIS_URL},
        "budgets": {"redis_url": REDIS_URL, "key_prefix": prefix},
    }


def rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}


async def test_a_task_created_through_one_replica_is_its_owners_on_another_and_nobody_elses(
    tmp_path: Path,
) -> None:
    await redis_up()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    reg = {"a2a": {"agents": [{"name": "echo", "url": base}]}}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    mine = {"A2A-Version": "1.0", "Authorization": f"Bearer {TEST_KEY}"}
    theirs = {"A2A-Version": "1.0", "Authorization": f"Bearer {MALLORY_KEY}"}
    try:
        async with (
            serve(echo_app(base), port=port),
            gateway(tmp_path / "one", reg, settings(prefix)) as (gw1, _),
            gateway(tmp_path / "two", reg, settings(prefix)) as (gw2, _),
            httpx.AsyncClient() as http,
        ):
            with anyio.fail_after(20):
                r = await http.post(f"{gw1}/a2a/echo", json=send("hello"), headers=mine)
                task = r.json()["result"]["task"]
                get = rpc("GetTask", {"id": task["id"]})
                there = await http.post(f"{gw2}/a2a/echo", json=get, headers=mine)
                assert there.json()["result"]["id"] == task["id"]
                stolen = await http.post(f"{gw2}/a2a/echo", json=get, headers=theirs)
                assert stolen.status_code == 200
                assert stolen.json()["error"]["code"] == -32001  # TaskNotFound: existence is not revealed
                listed = await http.post(f"{gw2}/a2a/echo", json=rpc("ListTasks", {}), headers=theirs)
                assert task["id"] not in [t["id"] for t in listed.json()["result"]["tasks"]]
                cancel = rpc("CancelTask", {"id": task["id"]})
                refused = await http.post(f"{gw1}/a2a/echo", json=cancel, headers=theirs)
                assert refused.json()["error"]["code"] == -32001
                # continuing the owner's context from the other principal is refused too
                msg = send("me too")
                msg["params"]["message"]["contextId"] = task["contextId"]
                hijack = await http.post(f"{gw2}/a2a/echo", json=msg, headers=theirs)
                assert hijack.json()["error"]["code"] == -32001
    finally:
        await drop_redis_keys(REDIS_URL, prefix)
