"""Task ownership, in memory and in the real Redis on 127.0.0.1:6379 (a failure under CI=true, never a skip): the
first binder wins, a task and its context bind together or not at all, ids are per agent, bindings expire and are
refreshed by their owner, memory is bounded, replicas share Redis bindings, and a Redis that is gone fails closed."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from agentgw.a2a.ownership import (
    MemoryOwnership,
    Ownership,
    OwnershipUnavailable,
    RedisOwnership,
    make_ownership,
)
from agentgw.budget.config import Budgets
from agentgw.settings import A2ASettings, Settings
from tests.support import drop_redis_keys, free_port

REDIS_URL = os.environ.get("AGENTGW_TEST_REDIS", "redis://127.0.0.1:6379/15")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def redis_ownership(count: int = 1, ttl_s: float = 600.0) -> AsyncIterator[list[RedisOwnership]]:
    """`count` stores sharing one unique prefix: replicas of one gateway."""
    base = f"agwtest-{uuid.uuid4().hex[:8]}"
    stores = [RedisOwnership(REDIS_URL, f"{base}:a2a:", ttl_s) for _ in range(count)]
    try:
        await stores[0].client.ping()
    except Exception as exc:
        for s in stores:
            await s.aclose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI and is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    for s in stores:
        await s.start()
    try:
        yield stores
    finally:
        await drop_redis_keys(REDIS_URL, base)
        for s in stores:
            await s.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Ownership]:
    if request.param == "memory":
        yield MemoryOwnership()
        return
    async with redis_ownership() as (one,):
        yield one


async def test_the_first_binder_of_a_task_owns_it_and_a_second_principal_cannot_take_it(
    store: Ownership,
) -> None:
    assert await store.bind("alice", "echo", task_id="t1") is True
    assert await store.bind("bob", "echo", task_id="t1") is False
    assert await store.owner("echo", task_id="t1") == "alice"
    assert await store.bind("alice", "echo", task_id="t1") is True  # the owner again: still hers


async def test_an_unbound_id_has_no_owner(store: Ownership) -> None:
    assert await store.owner("echo", task_id="nope") is None
    assert await store.owner("echo", context_id="nope") is None


async def test_ids_are_per_agent_and_tasks_and_contexts_are_separate_name_spaces(store: Ownership) -> None:
    assert await store.bind("alice", "echo", task_id="x")
    assert await store.bind("bob", "other", task_id="x")  # another agent's task of the same id
    assert await store.bind("carol", "echo", context_id="x")  # a context id equal to a task id
    assert await store.owner("echo", task_id="x") == "alice"
    assert await store.owner("other", task_id="x") == "bob"
    assert await store.owner("echo", context_id="x") == "carol"


async def test_agent_and_id_cannot_be_confused_by_a_colon_in_either(store: Ownership) -> None:
    assert await store.bind("alice", "a:b", task_id="c")
    assert await store.owner("a", task_id="b:c") is None
    assert await store.bind("bob", "a", task_id="b:c")
    assert await store.owner("a:b", task_id="c") == "alice"


async def test_a_task_and_its_context_are_bound_together(store: Ownership) -> None:
    assert await store.bind("alice", "echo", task_id="t1", context_id="c1")
    assert await store.owner("echo", task_id="t1") == "alice"
    assert await store.owner("echo", context_id="c1") == "alice"
    assert await store.owner("echo", task_id="t1", context_id="c1") == "alice"


async def test_a_pair_whose_context_belongs_to_another_binds_nothing(store: Ownership) -> None:
    assert await store.bind("alice", "echo", context_id="c1")
    assert await store.bind("bob", "echo", task_id="t2", context_id="c1") is False
    assert await store.owner("echo", task_id="t2") is None  # no half-bound pair
    assert await store.bind("bob", "echo", task_id="t3", context_id="c3")
    assert await store.bind("alice", "echo", task_id="t3", context_id="c4") is False
    assert await store.owner("echo", context_id="c4") is None


async def test_owner_of_a_pair_is_none_when_its_ids_belong_to_different_principals(store: Ownership) -> None:
    assert await store.bind("alice", "echo", task_id="t1")
    assert await store.bind("bob", "echo", context_id="c1")
    assert await store.owner("echo", task_id="t1", context_id="c1") is None
    assert await store.owner("echo", task_id="t1", context_id="unbound") is None


async def test_owner_needs_an_id(store: Ownership) -> None:
    with pytest.raises(ValueError, match="task_id or a context_id"):
        await store.owner("echo")


async def test_owners_answers_for_a_batch_of_tasks(store: Ownership) -> None:
    for i in range(5):
        assert await store.bind("alice" if i % 2 == 0 else "bob", "echo", task_id=f"t{i}")
    got = await store.owners("echo", ["t0", "t1", "t2", "t3", "t4", "missing"])
    assert got == {"t0": "alice", "t1": "bob", "t2": "alice", "t3": "bob", "t4": "alice", "missing": None}
    assert await store.owners("echo", []) == {}
    assert await store.owners("other", ["t0"]) == {"t0": None}


async def test_a_memory_binding_expires_after_its_ttl_and_a_rebind_by_its_owner_refreshes_it() -> None:
    clock = Clock()
    store = MemoryOwnership(ttl_s=100.0, clock=clock)
    assert await store.bind("alice", "echo", task_id="t1")
    assert await store.bind("alice", "echo", task_id="t2")
    clock.now += 60
    assert await store.bind("alice", "echo", task_id="t1")  # refreshed: 100 s from now
    clock.now += 60
    assert await store.owner("echo", task_id="t1") == "alice"
    assert await store.owner("echo", task_id="t2") is None  # expired
    assert await store.bind("bob", "echo", task_id="t2")  # an expired id is free again
    clock.now += 41
    assert await store.owners("echo", ["t1", "t2"]) == {"t1": None, "t2": "bob"}
    assert len(store) == 2  # expired entries are not counted once a bind purges them
    assert await store.bind("carol", "echo", task_id="t3")
    assert len(store) == 2


async def test_a_refused_bind_does_not_refresh_the_owners_binding() -> None:
    clock = Clock()
    store = MemoryOwnership(ttl_s=100.0, clock=clock)
    assert await store.bind("alice", "echo", task_id="t1")
    clock.now += 90
    assert await store.bind("bob", "echo", task_id="t1") is False
    clock.now += 20
    assert await store.owner("echo", task_id="t1") is None


async def test_memory_is_bounded_and_evicts_the_oldest_binding_first() -> None:
    store = MemoryOwnership(max_entries=3, clock=Clock())
    for i in range(3):
        assert await store.bind("alice", "echo", task_id=f"t{i}")
    assert await store.bind("alice", "echo", task_id="t0")  # refreshed: now the newest
    assert await store.bind("alice", "echo", task_id="t3")
    assert len(store) == 3
    got = await store.owners("echo", ["t0", "t1", "t2", "t3"])
    assert got == {"t0": "alice", "t1": None, "t2": "alice", "t3": "alice"}


async def test_a_redis_binding_carries_the_ttl_and_a_rebind_by_its_owner_refreshes_it() -> None:
    async with redis_ownership(ttl_s=30.0) as (store,):
        assert await store.bind("alice", "echo", task_id="t1", context_id="c1")
        tkey, ckey = store.key("echo", "t", "t1"), store.key("echo", "c", "c1")
        for key in (tkey, ckey):
            assert 0 < await store.client.pttl(key) <= 30_000
        await store.client.pexpire(tkey, 500)
        assert await store.bind("bob", "echo", task_id="t1") is False
        assert await store.client.pttl(tkey) <= 500  # a refused bind refreshes nothing
        assert await store.bind("alice", "echo", task_id="t1")
        assert 20_000 < await store.client.pttl(tkey) <= 30_000


async def test_an_expired_redis_binding_frees_the_id() -> None:
    async with redis_ownership() as (store,):
        assert await store.bind("alice", "echo", task_id="t1")
        await store.client.delete(store.key("echo", "t", "t1"))  # what the expiry does
        assert await store.owner("echo", task_id="t1") is None
        assert await store.bind("bob", "echo", task_id="t1")


async def test_two_replicas_see_each_others_bindings() -> None:
    async with redis_ownership(count=2) as (one, two):
        assert await one.bind("alice", "echo", task_id="t1", context_id="c1")
        assert await two.owner("echo", task_id="t1") == "alice"
        assert await two.bind("bob", "echo", task_id="t1") is False
        assert await two.bind("bob", "echo", task_id="t2")
        assert await one.owners("echo", ["t1", "t2"]) == {"t1": "alice", "t2": "bob"}


async def test_replicas_racing_to_bind_one_task_have_exactly_one_winner() -> None:
    import anyio

    async with redis_ownership(count=2) as (one, two):
        won: list[str] = []

        async def claim(store: RedisOwnership, who: str) -> None:
            if await store.bind(who, "echo", task_id="race", context_id=f"ctx-{who}"):
                won.append(who)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(claim, one if i % 2 else two, f"p{i}")
        assert len(won) == 1
        assert await one.owner("echo", task_id="race") == won[0]
        losers_contexts = await one.client.keys(f"{one.prefix}c:*")
        assert len(losers_contexts) == 1  # the losers bound no context


async def test_an_unreachable_redis_fails_closed_with_503_ownership_unavailable() -> None:
    store = RedisOwnership(f"redis://127.0.0.1:{free_port()}/0")
    await store.start()  # starting does not fail: the calls do
    try:
        for call in (
            store.bind("alice", "echo", task_id="t1"),
            store.owner("echo", task_id="t1"),
            store.owners("echo", ["t1"]),
        ):
            with pytest.raises(OwnershipUnavailable) as err:
                await call
            assert (err.value.status, err.value.code) == (503, "ownership_unavailable")
            assert "127.0.0.1" not in err.value.message
    finally:
        await store.aclose()


async def test_make_ownership_follows_the_ledger_unless_told() -> None:
    memory = make_ownership(Settings())
    assert isinstance(memory, MemoryOwnership)
    redis_budgets = Budgets(ledger="redis", redis_url="redis://127.0.0.1:6379/3", key_prefix="gw")
    shared = make_ownership(Settings(budgets=redis_budgets, a2a=A2ASettings(ownership_ttl_s=60)))
    assert isinstance(shared, RedisOwnership)
    assert shared.prefix == "gw:a2a:" and shared.ttl_ms == 60_000
    assert shared.client.connection_pool.connection_kwargs["db"] == 3
    own = make_ownership(
        Settings(
            budgets=redis_budgets, a2a=A2ASettings(ownership="redis", redis_url="redis://127.0.0.1:6379/4")
        )
    )
    assert isinstance(own, RedisOwnership) and own.client.connection_pool.connection_kwargs["db"] == 4
    forced = make_ownership(Settings(budgets=redis_budgets, a2a=A2ASettings(ownership="memory")))
    assert isinstance(forced, MemoryOwnership)
    for s in (memory, shared, own, forced):
        await s.aclose()
