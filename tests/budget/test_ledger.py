"""Both ledger backends keep the same promises: all-or-nothing reservations over a task and its ancestors,
settle and release that leave nothing reserved, exactness under 1,000 concurrent calls, fixed windows counted
in the same step, child tasks opened with the reservation that delegates to them.
The Redis backend runs against the real Redis on 127.0.0.1:6379 (a failure under CI=true, never a skip)."""

from __future__ import annotations

import contextlib
import os
import random
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest

from agentgw.budget.ledger import Ledger, Rejection, Reservation, Throttled, Window
from agentgw.budget.memory import MemoryLedger
from agentgw.budget.redis import RedisLedger

REDIS_URL = os.environ.get("AGENTGW_TEST_REDIS", "redis://127.0.0.1:6379/15")


@contextlib.asynccontextmanager
async def redis_ledger() -> AsyncIterator[RedisLedger]:
    led = RedisLedger(REDIS_URL, prefix=f"agwtest-{uuid.uuid4().hex[:8]}", task_ttl_s=600)
    try:
        await led.client.ping()
    except Exception as exc:
        await led.aclose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI and is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    try:
        yield led
    finally:
        keys = await led.client.keys(f"{led.prefix}:*")
        if keys:
            await led.client.delete(*keys)
        await led.aclose()


@pytest.fixture(params=["memory", "redis"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    async with redis_ledger() as led:
        yield led


async def test_a_reservation_within_the_limit_is_granted_and_counted_as_reserved(ledger: Ledger) -> None:
    got = await ledger.reserve(["t"], {"tokens": 60}, {"tokens": 100})
    assert got == Reservation({"tokens": 60}, {"tokens": 40})
    st = await ledger.state("t")
    assert st is not None
    assert (st.reserved["tokens"], st.remaining("tokens")) == (60, 40)


async def test_a_reservation_over_the_limit_is_refused_and_names_what_ran_out(ledger: Ledger) -> None:
    assert isinstance(
        await ledger.reserve(["t"], {"tokens": 60}, {"tokens": 100, "tool_calls": 1}), Reservation
    )
    rej = await ledger.reserve(["t"], {"tokens": 50}, {})
    assert isinstance(rej, Rejection)
    assert (rej.task, rej.metric, rej.limit, rej.reserved, rej.asked) == ("t", "tokens", 100, 60, 50)
    st = await ledger.state("t")
    assert st is not None and st.reserved["tokens"] == 60  # nothing of the refused call was kept


async def test_a_child_charges_every_ancestor_and_cannot_spend_more_than_its_parent_has_left(
    ledger: Ledger,
) -> None:
    assert isinstance(await ledger.reserve(["root"], {}, {"tokens": 100}), Reservation)
    assert isinstance(await ledger.reserve(["child", "root"], {}, {"tokens": 1000}), Reservation)
    chain = ["grandchild", "child", "root"]
    assert isinstance(await ledger.reserve(chain, {"tokens": 70}, {}), Reservation)
    await ledger.settle(chain, {"tokens": 70}, {"tokens": 65})
    for task in chain:
        st = await ledger.state(task)
        assert st is not None
        assert (st.spent.get("tokens"), st.reserved.get("tokens", 0)) == (65, 0)
    rej = await ledger.reserve(chain, {"tokens": 40}, {})
    assert isinstance(rej, Rejection) and rej.task == "root"
    st = await ledger.state("grandchild")
    assert st is not None and st.chain == [
        "child",
        "root",
    ]  # the child's own limit is larger; the parent's is not


async def test_release_gives_the_whole_reservation_back(ledger: Ledger) -> None:
    assert isinstance(
        await ledger.reserve(["t"], {"tokens": 10, "tool_calls": 1}, {"tokens": 10, "tool_calls": 2}),
        Reservation,
    )
    await ledger.release(["t"], {"tokens": 10, "tool_calls": 1})
    st = await ledger.state("t")
    assert st is not None
    assert (st.reserved.get("tokens"), st.reserved.get("tool_calls"), st.spent.get("tokens", 0)) == (0, 0, 0)


async def test_limits_are_fixed_by_the_first_reservation(ledger: Ledger) -> None:
    await ledger.reserve(["t"], {}, {"tokens": 10})
    await ledger.reserve(["t"], {}, {"tokens": 10_000})  # a later request cannot raise it
    st = await ledger.state("t")
    assert st is not None and st.limits["tokens"] == 10


async def test_an_unlimited_metric_is_never_refused(ledger: Ledger) -> None:
    assert isinstance(await ledger.reserve(["t"], {"tool_calls": 10_000}, {"tokens": 10}), Reservation)


async def test_a_thousand_concurrent_calls_never_overspend_and_account_every_token(ledger: Ledger) -> None:
    limit, max_call = 50_000, 200
    await ledger.reserve(["t"], {}, {"tokens": limit})
    rng = random.Random(7)
    settled: list[int] = []

    async def call() -> None:
        ask = rng.randint(50, max_call)
        if isinstance(await ledger.reserve(["t"], {"tokens": ask}, {}), Rejection):
            return
        await anyio.lowlevel.checkpoint()
        used = rng.randint(0, ask)  # the provider reports at most what was reserved (max_tokens)
        if rng.random() < 0.1:
            await ledger.release(["t"], {"tokens": ask})  # an error: nothing spent
            return
        await ledger.settle(["t"], {"tokens": ask}, {"tokens": used})
        settled.append(used)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(call)
    st = await ledger.state("t")
    assert st is not None
    assert st.reserved.get("tokens", 0) == 0
    assert st.spent["tokens"] == sum(settled)
    assert st.spent["tokens"] <= limit


async def test_a_window_refuses_past_its_limit_and_says_when_it_resets(ledger: Ledger) -> None:
    rpm = Window(f"rpm:{uuid.uuid4().hex}", 1, 2, 60)
    assert isinstance(await ledger.reserve([], {}, {}, windows=[rpm]), Reservation)
    assert isinstance(await ledger.reserve([], {}, {}, windows=[rpm]), Reservation)
    full = await ledger.reserve(["t"], {"tokens": 1}, {"tokens": 10}, windows=[rpm])
    assert isinstance(full, Throttled) and full.window == rpm
    assert 0 < full.retry_after <= 60
    assert await ledger.state("t") is None  # a throttled call reserves nothing, and opens no task


async def test_a_refused_reservation_counts_in_no_window(ledger: Ledger) -> None:
    tpd = Window(f"tpd:{uuid.uuid4().hex}", 50, 50, 86400)
    refused = await ledger.reserve(["t"], {"tokens": 50}, {"tokens": 10}, windows=[tpd])
    assert isinstance(refused, Rejection)
    assert isinstance(await ledger.reserve([], {}, {}, windows=[tpd]), Reservation)  # all 50 still free


async def test_reserving_the_rest_takes_everything_left_but_not_less_than_asked(ledger: Ledger) -> None:
    await ledger.reserve(["root"], {}, {"tokens": 100})
    first = await ledger.reserve(["child", "root"], {"tokens": 30}, {"tokens": 500}, rest="tokens")
    assert isinstance(first, Reservation)
    assert first.amount == {"tokens": 100}  # the parent's 100 is the least left in the chain
    second = await ledger.reserve(["child", "root"], {"tokens": 1}, {}, rest="tokens")
    assert isinstance(second, Rejection) and second.task == "root"
    await ledger.settle(["child", "root"], {"tokens": 100}, {"tokens": 40})
    third = await ledger.reserve(["child", "root"], {"tokens": 10}, {}, rest="tokens")
    assert isinstance(third, Reservation) and third.amount == {"tokens": 60}


async def test_window_corrections_apply_to_the_current_window(ledger: Ledger) -> None:
    key = f"tpd:{uuid.uuid4().hex}"
    assert isinstance(await ledger.reserve([], {}, {}, windows=[Window(key, 80, 100, 86400)]), Reservation)
    await ledger.settle([], {}, {}, windows=[Window(key, -50, 0, 86400)])  # the estimate was 50 too high
    assert isinstance(await ledger.reserve([], {}, {}, windows=[Window(key, 60, 100, 86400)]), Reservation)
    assert isinstance(await ledger.reserve([], {}, {}, windows=[Window(key, 20, 100, 86400)]), Throttled)


async def test_a_reservation_opens_the_child_task_it_delegates_to_and_a_refused_one_does_not(
    ledger: Ledger,
) -> None:
    got = await ledger.reserve(["root"], {"tool_calls": 1}, {"tool_calls": 1}, child="kid")
    assert isinstance(got, Reservation)
    refused = await ledger.reserve(["root"], {"tool_calls": 1}, {}, child="kid-2")
    assert isinstance(refused, Rejection)
    kid = await ledger.state("kid")
    assert kid is not None and kid.chain == ["root"]
    assert await ledger.state("kid-2") is None
    assert await ledger.children("root") == ["kid"]


async def test_settling_a_one_request_task_with_forget_leaves_nothing_behind(ledger: Ledger) -> None:
    assert isinstance(await ledger.reserve(["once"], {"tokens": 5}, {"tokens": 10}), Reservation)
    await ledger.settle(["once"], {"tokens": 5}, {"tokens": 3}, forget=True)
    assert await ledger.state("once") is None


async def test_undo_gives_back_what_a_reservation_whose_reply_was_lost_took_once() -> None:
    async with redis_ledger() as led:
        rpm = Window(f"rpm:{uuid.uuid4().hex}", 1, 1, 86400)
        lost = await led.reserve(["t"], {"tokens": 5}, {"tokens": 10}, op="lost-1", windows=[rpm])
        assert isinstance(lost, Reservation)
        await led.undo(["t"], "lost-1")
        await led.undo(["t"], "lost-1")  # a second undo (a retry) changes nothing
        st = await led.state("t")
        assert st is not None and st.reserved == {"tokens": 0}
        assert isinstance(await led.reserve([], {}, {}, windows=[rpm]), Reservation)  # the window is free


async def test_the_memory_ledger_expires_idle_tasks_like_redis_keys_expire() -> None:
    led = MemoryLedger(task_ttl_s=0)
    await led.reserve(["old"], {"tokens": 1}, {"tokens": 10})
    for i in range(10_000):  # expiry is amortised over reservations
        await led.reserve([f"t{i}"], {}, {})
    assert "old" not in led.tasks


async def test_a_settle_applies_once_and_leaves_only_the_task_behind() -> None:
    async with redis_ledger() as led:
        tpd = Window(f"tpd:{uuid.uuid4().hex}", 5, 100, 86400)
        got = await led.reserve(["t"], {"tokens": 5}, {"tokens": 10}, op="call-1", windows=[tpd])
        assert isinstance(got, Reservation)
        await led.settle(["t"], {"tokens": 5}, {"tokens": 3}, op="call-1")
        await led.settle(["t"], {"tokens": 5}, {"tokens": 3}, op="call-1")  # a retry after a lost reply
        st = await led.state("t")
        assert st is not None and (st.spent, st.reserved) == ({"tokens": 3}, {"tokens": 0})
        keys = sorted(k.split(":", 2)[1] for k in await led.client.keys(f"{led.prefix}:*"))
        assert keys == ["task", "win"]  # no per-call record outlives its settle
