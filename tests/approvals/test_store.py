"""The approval stores (memory, SQLite in the audit file, PostgreSQL): one winner when approvers race, an approval
lets exactly one call through, a pending request reads as expired past its expiry (wherever it is read, also
after a restart), and a retry of the same call finds its open request."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from agentgw.approvals.postgres import PostgresStore
from agentgw.approvals.store import Approval, ApprovalStore, MemoryStore, SQLiteStore
from agentgw.audit.config import PostgresStore as PostgresConfig
from tests.audit.support import PG_DSN, pg_schema

KINDS = ["memory", "sqlite", "postgres"]
T0 = 1_000_000.0


@contextlib.asynccontextmanager
async def opened(kind: str, tmp: Path) -> AsyncIterator[ApprovalStore]:
    if kind == "postgres":
        async with pg_schema() as schema:
            store: ApprovalStore = PostgresStore(PostgresConfig(dsn=PG_DSN, schema_name=schema))
            await store.open()
            try:
                yield store
            finally:
                await store.aclose()
        return
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp / "audit.db")
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


def request(n: int, digest: str = "d1", created: float = T0) -> Approval:
    return Approval(
        id=f"apr_{n}",
        principal="tester",
        target="mcp:docs/echo",
        action="call",
        digest=digest,
        rule="policy.csv:2: p, role:agents, mcp:docs/echo, call, approve",
        created=created,
        expires=created + 300,
        task_id="t-1",
        trace_id="0" * 31 + "1",
        arguments={"text": "hi"},
        extra={"plane": "mcp"},
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_two_approvers_racing_on_one_request_get_exactly_one_winner(kind: str, tmp_path: Path) -> None:
    async with opened(kind, tmp_path) as store:
        await store.insert(request(1))
        results: list[Approval | None] = []

        async def approve(who: str) -> None:
            results.append(await store.decide("apr_1", "approved", who, None, T0 + 1, T0 + 301))

        async with anyio.create_task_group() as tg:
            for who in ("ann", "bob", "cid"):
                tg.start_soon(approve, who)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1 and winners[0].state == "approved"
        stored = await store.get("apr_1")
        assert stored is not None and stored.approver == winners[0].approver
        assert stored.arguments == {"text": "hi"} and stored.extra == {"plane": "mcp"}


@pytest.mark.parametrize("kind", KINDS)
async def test_an_approval_lets_exactly_one_call_through(kind: str, tmp_path: Path) -> None:
    async with opened(kind, tmp_path) as store:
        await store.insert(request(1))
        assert await store.use("apr_1", T0 + 1) is False  # still pending
        await store.decide("apr_1", "approved", "ann", "ok", T0 + 1, T0 + 301)
        assert [await store.use("apr_1", T0 + 2), await store.use("apr_1", T0 + 2)] == [True, False]
        assert await store.find("tester", "mcp:docs/echo", "d1", T0 + 3) is None  # used: not found again


@pytest.mark.parametrize("kind", KINDS)
async def test_a_pending_request_past_its_expiry_reads_as_expired_and_cannot_be_decided(
    kind: str, tmp_path: Path
) -> None:
    async with opened(kind, tmp_path) as store:
        await store.insert(request(1))
        await store.insert(request(2, created=T0 + 10))
        late = T0 + 305  # the first expired at T0 + 300, the second expires at T0 + 310
        assert [a.id for a in await store.list("pending", 10, late)] == ["apr_2"]
        assert [(a.id, a.state) for a in await store.list("expired", 10, late)] == [("apr_1", "expired")]
        assert [(a.id, a.state) for a in await store.list(None, 10, late)] == [
            ("apr_2", "pending"),
            ("apr_1", "expired"),
        ]
        assert await store.decide("apr_1", "approved", "ann", None, late, late + 300) is None
        assert (
            await store.find("tester", "mcp:docs/echo", "d1", late) is not None
        )  # apr_2: same call, still open


@pytest.mark.parametrize("kind", KINDS)
async def test_a_retry_of_the_same_call_finds_its_open_request_and_another_call_does_not(
    kind: str, tmp_path: Path
) -> None:
    async with opened(kind, tmp_path) as store:
        await store.insert(request(1))
        found = await store.find("tester", "mcp:docs/echo", "d1", T0 + 1)
        assert found is not None and found.id == "apr_1"
        assert await store.find("tester", "mcp:docs/echo", "other-args", T0 + 1) is None
        assert await store.find("other", "mcp:docs/echo", "d1", T0 + 1) is None
        await store.decide("apr_1", "denied", "ann", "no", T0 + 2, T0 + 2)
        assert await store.find("tester", "mcp:docs/echo", "d1", T0 + 1.5) is None  # denied: closed


async def test_replicas_starting_together_create_one_schema_without_racing_in_the_catalog() -> None:
    """Three gateways opening their audit and approval stores at once on a fresh schema (as `make cluster`
    does): every open succeeds (without one lock, PostgreSQL's CREATE … IF NOT EXISTS races and one fails)."""
    from agentgw.audit.postgres import PostgresStore as AuditStore

    async with pg_schema() as schema:
        cfg = PostgresConfig(dsn=PG_DSN, schema_name=schema)
        stores: list[AuditStore | PostgresStore] = []
        for _ in range(3):
            stores += [AuditStore(cfg), PostgresStore(cfg)]
        try:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for s in stores:
                        tg.start_soon(s.open)
            assert all(s._pool is not None for s in stores)
        finally:
            for s in stores:
                await s.aclose()
