"""`GET /admin/usage`: calls, tokens, cost, denials and errors by principal, model, tool, agent, plane and status
over time equal a direct count over the stored records, on SQLite and PostgreSQL, for every kind of bucket (minute,
hour, day, a range tiled from several), after pruning, after a restart, and for a store written before the rollup
existed; the top groups are kept and the rest summed; bad parameters get 400; only admins see it."""

from __future__ import annotations

import contextlib
import itertools
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from agentgw.audit.store import AuditStore
from agentgw.audit.usage import GRAINS, GROUPS, segments, usage_query
from agentgw.audit.writer import Writer, open_writer
from agentgw.exchange import Exchange, Principal, Result, Usage, task_from_headers
from agentgw.settings import load_settings
from tests.audit.support import STORES, audit_settings, pg_connect
from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, audit_records, gateway, sha

PRICES = {"echo": (3.0, 15.0), "big": (0.7, 2.9)}  # USD per million input / output tokens
REGISTRY: dict[str, Any] = {
    "llm": {
        "providers": [{"name": "mock", "kind": "mock"}],
        "models": [
            *(
                {
                    "name": name,
                    "pricing": {"input_per_mtok": i, "output_per_mtok": o},
                    "targets": [{"provider": "mock", "model": f"{name}-1"}],
                }
                for name, (i, o) in PRICES.items()
            ),
            {"name": "free", "targets": [{"provider": "mock", "model": "free-1"}]},
        ],
    }
}
CALLS = [  # (plane, operation, target)
    ("llm", "chat", "llm:echo"),
    ("llm", "chat", "llm:big"),
    ("llm", "chat", "llm:free"),
    ("llm", "models", "llm:*"),
    ("mcp", "tools/call", "mcp:docs/search"),
    ("mcp", "tools/call", "mcp:docs/fetch"),
    ("mcp", "prompts/get", "mcp:docs/prompt/review"),
    ("mcp", "tools/list", "mcp:*"),
    ("a2a", "SendMessage", "a2a:planner"),
    ("a2a", "SendMessage", "a2a:coder"),
    ("admin", "approvals/decide", "mcp:docs/search"),  # an approval: no tool was called
]
PRINCIPALS = ["alice", "bob", "carol", "dave"]
STATUSES = ["ok"] * 6 + ["denied", "error", "cancelled"]
DAY = 86400


# -- writing real records ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def priced_writer(tmp: Path, audit: dict[str, Any]) -> AsyncIterator[Writer]:
    """The real writer and store for `audit`, with a registry whose models have prices (records carry cost)."""
    (tmp / "registry.yaml").write_text(yaml.safe_dump(REGISTRY))
    path = tmp / "agentgw.yaml"
    path.write_text(yaml.safe_dump({"registry": ["registry.yaml"], "audit": audit}))
    writer = open_writer(load_settings(path))
    assert writer is not None
    await writer.start()
    try:
        yield writer
    finally:
        await writer.aclose()


def exchange(
    plane: str, operation: str, target: str, principal: str, status: str, started: float, tokens: int
) -> Exchange:
    headers = {"x-agentgw-task": f"job-{principal}"}
    ex = Exchange(plane, operation, target, headers, "127.0.0.1")
    ex.task = task_from_headers(headers)
    ex.principal = Principal(principal, ("agents",))
    ex.started = started
    ex.status = status
    if plane == "llm":
        ex.payload = {"model": target[4:], "messages": [{"role": "user", "content": "hi"}]}
        if status == "ok":
            ex.usage = Usage(tokens, tokens // 3 + 1)
            ex.result = Result(body=b'{"choices":[{"message":{"role":"assistant","content":"hi"}}]}')
    else:
        ex.payload = {"name": target.rsplit("/", 1)[-1], "arguments": {}}
    return ex


async def write_spread(writer: Writer, n: int, seed: int, days: float = 4.0) -> None:
    """`n` calls of every plane, principal and status, started at random times over the last `days`, roughly
    in order (each up to an hour early or late: writers append calls in the order they finish)."""
    rng = random.Random(seed)
    now = time.time()
    starts = sorted(now - rng.random() * days * DAY for _ in range(n))
    for start in starts:
        plane, operation, target = rng.choice(CALLS)
        ex = exchange(
            plane,
            operation,
            target,
            rng.choice(PRINCIPALS),
            rng.choice(STATUSES),
            min(now, start + rng.uniform(-3600, 3600)),
            rng.randint(1, 5000),
        )
        await writer.submit(ex, time.perf_counter())
    await writer.flush()


# -- the direct count --------------------------------------------------------------------------------------------


async def stored_calls(store: AuditStore) -> list[dict[str, Any]]:
    return [
        rec for row in [r async for r in store.rows()] if (rec := orjson.loads(row.data))["kind"] == "call"
    ]


def key_of(rec: dict[str, Any], group_by: str) -> tuple[bool, str | None]:
    """(counted under this grouping, its key), read off the record as the docs describe it."""
    plane, target = rec["plane"], rec["target"]
    prefix = {"model": ("llm", "llm:"), "tool": ("mcp", "mcp:"), "agent": ("a2a", "a2a:")}.get(group_by)
    if prefix is None:
        return True, rec[group_by]
    if plane == prefix[0] and target.startswith(prefix[1]):
        return True, target[len(prefix[1]) :] or None
    return False, None


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def direct_count(records: list[dict[str, Any]], answer: dict[str, Any]) -> dict[str | None, Any]:
    """{key: (metrics, {bucket start: metrics})} counted over the records in the answer's range."""
    since, until, step = epoch(answer["since"]), epoch(answer["until"]), answer["step"]
    out: dict[str | None, Any] = {}
    for rec in records:
        counted, key = key_of(rec, answer["group_by"])
        if not counted or not since <= rec["ts"] < until:
            continue
        usage, status = rec.get("usage") or {}, rec["status"]
        m = [
            1,
            usage.get("input_tokens", 0),
            usage.get("output_tokens", 0),
            usage.get("total_tokens", 0),
            (rec.get("cost") or {}).get("usd") or 0.0,
            int(status == "denied"),
            int(status == "error"),
        ]
        t = since + (rec["ts"] - since) // step * step if step else since
        total, series = out.setdefault(key, ([0] * 7, {}))
        bucket = series.setdefault(t, [0] * 7)
        for i, v in enumerate(m):
            total[i] += v
            bucket[i] += v
    return out


NAMES = ("calls", "input_tokens", "output_tokens", "total_tokens", "cost", "denied", "errors")


def counted(g: dict[str, Any]) -> tuple[list[Any], dict[float, list[Any]]]:
    """A group of the answer in the direct count's shape (empty buckets left out)."""
    series = {epoch(p["t"]): [p[n] for n in NAMES] for p in g["series"] if p["calls"]}
    return [g[n] for n in NAMES], series


def summed(parts: list[tuple[list[Any], dict[float, list[Any]]]]) -> tuple[list[Any], dict[float, list[Any]]]:
    total: list[Any] = [0] * 7
    series: dict[float, list[Any]] = {}
    for t, s in parts:
        total = [a + b for a, b in zip(total, t, strict=True)]
        for at, m in s.items():
            series[at] = [a + b for a, b in zip(series.get(at, [0] * 7), m, strict=True)]
    return total, series


def assert_same(got: tuple[list[Any], dict[float, list[Any]]], expected: Any, where: Any) -> None:
    assert got[0] == pytest.approx(expected[0], abs=1e-8), where
    assert sorted(got[1]) == sorted(expected[1]), where
    for t, m in expected[1].items():
        assert got[1][t] == pytest.approx(m, abs=1e-8), (where, t)


def assert_equal(answer: dict[str, Any], records: list[dict[str, Any]], limit: int = 1000) -> None:
    """The answer's groups (in order: most tokens, then most calls, then by key), `other` and totals equal the
    direct count over the records."""
    expected = direct_count(records, answer)
    order = sorted(expected, key=lambda k: (-expected[k][0][3], -expected[k][0][0], k or ""))
    top, rest = order[:limit], order[limit:]
    assert [g["key"] for g in answer["groups"]] == top, answer["group_by"]
    for g in answer["groups"]:
        assert_same(counted(g), expected[g["key"]], (answer["group_by"], g["key"]))
    if rest:
        assert answer["other"]["groups"] == len(rest)
        assert_same(
            counted(answer["other"]), summed([expected[k] for k in rest]), (answer["group_by"], "other")
        )
    else:
        assert answer["other"] is None
    sums = summed(list(expected.values()))[0]
    assert [answer["totals"][n] for n in NAMES] == pytest.approx(sums, abs=1e-8)


def iso_ago(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds))


QUERIES: list[dict[str, str]] = [
    {"since": "4d", "step": "1h"},  # hour buckets
    {"since": "5d", "step": "1d"},  # day buckets
    {"since": "90m", "step": "5m"},  # minute buckets
    {"since": "3d", "step": "90m"},  # minutes summed into steps that are not whole hours
    # days, hours and minutes: from 2 days 5:17 ago until 20:43 ago
    {"since": iso_ago(2 * DAY + 5 * 3600 + 17 * 60), "until": iso_ago(20 * 3600 + 43 * 60)},
    {"since": "10d"},  # one bucket over everything
]


async def check_every_grouping(store: AuditStore, records: list[dict[str, Any]]) -> None:
    assert records
    for group_by in GROUPS:
        for params in QUERIES:
            answer = await store.usage(usage_query({**params, "group_by": group_by, "limit": "1000"}))
            assert_equal(answer, records)
            top2 = await store.usage(usage_query({**params, "group_by": group_by, "limit": "2"}))
            assert_equal(top2, records, limit=2)


# -- the tests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
async def test_usage_by_every_grouping_and_bucket_equals_a_direct_count_over_the_records(
    tmp_path: Path, kind: str
) -> None:
    async with audit_settings(kind) as audit, priced_writer(tmp_path, audit) as writer:
        await write_spread(writer, 400, seed=1)
        records = await stored_calls(writer.store)
        await check_every_grouping(writer.store, records)
        everything = await writer.store.usage(usage_query({"since": "10d", "group_by": "plane"}))
    assert everything["totals"]["calls"] == len(records) == 400
    assert everything["totals"]["cost"] > 0 and everything["totals"]["denied"] > 0
    models = {k for r in records if (k := key_of(r, "model"))[0]}
    assert {k for _, k in models} == {"echo", "big", "free", "*"}  # the approval is no tool call: not counted


@pytest.mark.parametrize("kind", STORES)
async def test_the_rollup_stays_equal_to_the_records_after_pruning_and_a_restart(
    tmp_path: Path, kind: str
) -> None:
    async with audit_settings(kind) as audit:
        async with priced_writer(tmp_path, audit) as writer:
            await write_spread(writer, 299, seed=2)
            late = exchange("llm", "chat", "llm:echo", "alice", "ok", time.time() - 3 * DAY, 77)
            await writer.submit(late, time.perf_counter())  # appended last, started before the cutoff
            await writer.flush()
            cutoff = time.time() - 2 * DAY
            pruned = await writer.prune(cutoff)
            kept_older = [r for r in await stored_calls(writer.store) if r["ts"] < cutoff]
            await write_spread(writer, 50, seed=3, days=1)
        # a prefix of the chain went; an older record appended after newer ones stays
        assert pruned > 0 and kept_older
        async with priced_writer(tmp_path, audit) as writer:  # a new process: the same store, opened again
            records = await stored_calls(writer.store)
            assert len(records) == 350 - pruned
            await check_every_grouping(writer.store, records)


async def drop_rollup(tmp: Path, audit: dict[str, Any]) -> None:
    """Make the store what a gateway from before the rollup left: records and no rollup table."""
    if audit["store"] == "sqlite":
        with contextlib.closing(sqlite3.connect(tmp / "audit.db")) as db:
            db.execute("DROP TABLE usage_rollup")
            db.commit()
        return
    conn = await pg_connect()
    try:
        await conn.execute(f'DROP TABLE "{audit["postgres"]["schema_name"]}".agentgw_audit_usage')
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", STORES)
async def test_a_store_written_before_the_rollup_gets_one_counting_its_records_when_opened(
    tmp_path: Path, kind: str
) -> None:
    async with audit_settings(kind) as audit:
        async with priced_writer(tmp_path, audit) as writer:
            await write_spread(writer, 250, seed=4)
        await drop_rollup(tmp_path, audit)
        async with priced_writer(tmp_path, audit) as writer:
            await write_spread(writer, 30, seed=5, days=0.5)  # and it keeps counting what comes after
            records = await stored_calls(writer.store)
            assert len(records) == 280
            await check_every_grouping(writer.store, records)


@pytest.mark.parametrize("kind", STORES)
async def test_the_top_groups_are_kept_and_the_rest_summed_as_other(tmp_path: Path, kind: str) -> None:
    async with audit_settings(kind) as audit, priced_writer(tmp_path, audit) as writer:
        now = time.time()
        for i, tokens in enumerate([10, 700, 40, 300, 5, 90]):
            ex = exchange("llm", "chat", "llm:echo", f"p{i}", "ok", now - 60 * i, tokens)
            await writer.submit(ex, time.perf_counter())
        await writer.flush()
        top = await writer.store.usage(usage_query({"since": "1h", "step": "15m", "limit": "2"}))
        records = await stored_calls(writer.store)
    assert [g["key"] for g in top["groups"]] == ["p1", "p3"]  # most tokens first
    rest = [r for r in records if r["principal"] not in {"p1", "p3"}]
    other = top["other"]
    assert other["groups"] == 4 and other["calls"] == 4
    assert other["total_tokens"] == sum(r["usage"]["total_tokens"] for r in rest)
    assert sum(p["total_tokens"] for p in other["series"]) == other["total_tokens"]
    assert top["totals"]["total_tokens"] == sum(r["usage"]["total_tokens"] for r in records)
    steps = (epoch(top["until"]) - epoch(top["since"])) / 900  # the hour, widened to whole quarters
    assert top["step"] == 900 and len(top["groups"][0]["series"]) == steps and steps in {4, 5}


@given(lo=st.integers(0, 40 * 1440), length=st.integers(1, 40 * 1440))
def test_a_range_is_tiled_by_whole_days_hours_and_minutes_without_gaps_or_overlaps(
    lo: int, length: int
) -> None:
    start, end = lo * 60, (lo + length) * 60
    parts = segments(start, end)
    assert parts[0][1] == start and parts[-1][2] == end
    assert all(a[2] == b[1] for a, b in itertools.pairwise(parts))
    assert all(g in GRAINS and lo_ % g == 0 and hi % g == 0 and lo_ < hi for g, lo_, hi in parts)
    assert len(parts) <= 5  # minutes, hours, days, hours, minutes


# -- through the gateway -----------------------------------------------------------------------------------------

ADMIN_KEY = "agw-admin-key-0123456789"
SETTINGS: dict[str, Any] = {
    "auth": {
        "api_keys": [
            {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
            {"subject": "other", "roles": [], "sha256": sha(OTHER_KEY)},
            {"subject": "auditor", "roles": ["admins"], "sha256": sha(ADMIN_KEY)},
        ]
    },
}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
BAD = [
    {"group_by": "weather"},
    {"since": "yesterday-ish"},
    {"until": "soon"},
    {"step": "0m"},
    {"step": "90s"},
    {"step": "fortnight"},
    {"since": "1h", "until": "2h"},
    {"since": "365d", "step": "1m"},
    {"limit": "0"},
    {"limit": "lots"},
]


async def test_the_usage_endpoint_answers_admins_with_the_calls_on_record_and_400_for_bad_parameters(
    tmp_path: Path,
) -> None:
    chat = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}
    async with gateway(tmp_path, MOCK_REGISTRY, SETTINGS) as (url, app), httpx.AsyncClient(base_url=url) as c:
        for key in (TEST_KEY, TEST_KEY, TEST_KEY, OTHER_KEY):
            await c.post("/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {key}"})
        assert app.audit is not None
        await app.audit.flush()
        by_principal = await c.get("/admin/usage", params={"since": "1h", "step": "5m"}, headers=ADMIN)
        by_model = await c.get("/admin/usage", params={"group_by": "model", "since": "1h"}, headers=ADMIN)
        agent = await c.get("/admin/usage", headers={"authorization": f"Bearer {TEST_KEY}"})
        bad = [await c.get("/admin/usage", params=p, headers=ADMIN) for p in BAD]
    records = audit_records(tmp_path)
    assert by_principal.status_code == 200, by_principal.text
    assert_equal(by_principal.json(), records)
    assert_equal(by_model.json(), records)
    shown = {g["key"]: (g["calls"], g["denied"]) for g in by_principal.json()["groups"]}
    assert shown == {"tester": (3, 0), "other": (1, 1)}
    assert [g["key"] for g in by_model.json()["groups"]] == ["mock-fast"]
    assert by_model.json()["groups"][0]["total_tokens"] > 0
    assert len(by_principal.json()["groups"][0]["series"]) in {12, 13}  # the hour, widened to whole steps
    assert agent.status_code == 403
    assert [(r.status_code, r.json()["error"]["code"]) for r in bad] == [(400, "invalid_request")] * len(BAD)
    assert all(r.json()["error"]["message"] for r in bad)
