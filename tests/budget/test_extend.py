"""A reservation topped up (`Ledger.extend`, what a stream that used up its reservation asks for): it takes what
the task and every ancestor have left, up to a bound and never less than asked, in one atomic step with the token
windows; its settle gives back all it took; concurrent top-ups never take more than a task has. Both ledgers."""

from __future__ import annotations

import uuid

import anyio

from agentgw.budget.ledger import Ledger, Rejection, Reservation, Throttled, Window
from tests.budget.test_ledger import ledger, redis_ledger  # noqa: F401 - the memory and Redis ledger fixture


async def reserved(led: Ledger, task: str) -> int:
    st = await led.state(task)
    assert st is not None
    return st.reserved.get("tokens", 0)


async def test_a_top_up_takes_up_to_its_bound_of_what_the_chain_has_left_and_the_settle_gives_it_all_back(
    ledger: Ledger,  # noqa: F811
) -> None:
    await ledger.reserve(["root"], {}, {"tokens": 100})
    first = await ledger.reserve(["kid", "root"], {"tokens": 30}, {"tokens": 1000}, op="s-1")
    assert isinstance(first, Reservation)
    more = await ledger.extend(["kid", "root"], {"tokens": 1}, "tokens", 50, op="s-1")
    assert isinstance(more, Reservation) and more.amount == {"tokens": 50}
    assert more.remaining == {"tokens": 20}  # the parent's 100 bounds the child's 1,000
    last = await ledger.extend(["kid", "root"], {"tokens": 1}, "tokens", 50, op="s-1")
    assert isinstance(last, Reservation) and last.amount == {"tokens": 20}  # what is left, being less
    await ledger.settle(["kid", "root"], {"tokens": 100}, {"tokens": 97}, op="s-1")
    assert (await reserved(ledger, "kid"), await reserved(ledger, "root")) == (0, 0)
    root = await ledger.state("root")
    assert root is not None and root.spent == {"tokens": 97}


async def test_a_top_up_no_task_of_the_chain_can_afford_is_refused_naming_it_and_takes_nothing(
    ledger: Ledger,  # noqa: F811
) -> None:
    await ledger.reserve(["root"], {}, {"tokens": 40})
    assert isinstance(await ledger.reserve(["kid", "root"], {"tokens": 38}, {}, op="s-2"), Reservation)
    refused = await ledger.extend(["kid", "root"], {"tokens": 3}, "tokens", 10, op="s-2")
    assert isinstance(refused, Rejection)
    assert (refused.task, refused.limit, refused.asked) == ("root", 40, 3)
    assert (await reserved(ledger, "kid"), await reserved(ledger, "root")) == (38, 38)


async def test_a_top_up_takes_its_other_metrics_with_it_or_nothing(ledger: Ledger) -> None:  # noqa: F811
    limits = {"tokens": 1000, "usd_micros": 50}
    assert isinstance(
        await ledger.reserve(["t"], {"tokens": 10, "usd_micros": 20}, limits, op="s-5"), Reservation
    )
    more = await ledger.extend(["t"], {"tokens": 1, "usd_micros": 20}, "tokens", 40, op="s-5")
    assert isinstance(more, Reservation) and more.amount == {"tokens": 40, "usd_micros": 20}
    refused = await ledger.extend(["t"], {"tokens": 1, "usd_micros": 20}, "tokens", 40, op="s-5")
    assert isinstance(refused, Rejection) and refused.metric == "usd_micros"
    st = await ledger.state("t")
    assert st is not None and st.reserved == {
        "tokens": 50,
        "usd_micros": 40,
    }  # the refused one took no tokens


async def test_a_top_up_counts_in_the_token_windows_and_a_full_window_refuses_it(
    ledger: Ledger,  # noqa: F811
) -> None:
    key = f"tpm:{uuid.uuid4().hex}"
    assert isinstance(
        await ledger.reserve(
            ["t"], {"tokens": 10}, {"tokens": 1000}, op="s-3", windows=[Window(key, 10, 30, 60)]
        ),
        Reservation,
    )
    assert isinstance(
        await ledger.extend(["t"], {"tokens": 15}, "tokens", 100, "s-3", [Window(key, 15, 30, 60)]),
        Reservation,
    )
    throttled = await ledger.extend(["t"], {"tokens": 15}, "tokens", 100, "s-3", [Window(key, 15, 30, 60)])
    assert isinstance(throttled, Throttled)
    assert await reserved(ledger, "t") == 110  # the refused top-up took nothing


async def test_a_settled_reservation_cannot_be_topped_up(ledger: Ledger) -> None:  # noqa: F811
    assert isinstance(await ledger.reserve(["t"], {"tokens": 5}, {"tokens": 100}, op="s-4"), Reservation)
    await ledger.settle(["t"], {"tokens": 5}, {"tokens": 5}, op="s-4")
    assert await ledger.extend(["t"], {"tokens": 1}, "tokens", 10, op="s-4") is None
    assert await reserved(ledger, "t") == 0


async def test_concurrent_top_ups_never_take_more_than_the_task_has(ledger: Ledger) -> None:  # noqa: F811
    limit, streams = 2_000, 40
    for i in range(streams):
        assert isinstance(
            await ledger.reserve(["t"], {"tokens": 10}, {"tokens": limit}, op=f"c-{i}"), Reservation
        )
    took = [10] * streams

    async def stream(i: int) -> None:
        while True:
            got = await ledger.extend(["t"], {"tokens": 1}, "tokens", 37, op=f"c-{i}")
            if not isinstance(got, Reservation):
                assert isinstance(got, Rejection)
                return
            took[i] += got.amount["tokens"]

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(streams):
                tg.start_soon(stream, i)
    assert sum(took) == limit == await reserved(ledger, "t")  # every token taken once, none past the limit
    for i in range(streams):
        await ledger.settle(["t"], {"tokens": took[i]}, {"tokens": took[i]}, op=f"c-{i}")
    st = await ledger.state("t")
    assert st is not None and (st.spent, st.reserved) == ({"tokens": limit}, {"tokens": 0})


async def test_a_redis_settle_gives_back_a_top_up_whose_reply_was_lost_and_undo_gives_back_all() -> None:
    async with redis_ledger() as led:
        assert isinstance(await led.reserve(["t"], {"tokens": 10}, {"tokens": 100}, op="lost-1"), Reservation)
        assert isinstance(await led.extend(["t"], {"tokens": 1}, "tokens", 20, op="lost-1"), Reservation)
        # The caller never heard of the top-up (its reply was lost): it settles the 10 it knows of.
        await led.settle(["t"], {"tokens": 10}, {"tokens": 12}, op="lost-1")
        st = await led.state("t")
        assert st is not None and (st.spent, st.reserved) == ({"tokens": 12}, {"tokens": 0})
        assert isinstance(await led.reserve(["t"], {"tokens": 10}, {}, op="lost-2"), Reservation)
        assert isinstance(await led.extend(["t"], {"tokens": 1}, "tokens", 20, op="lost-2"), Reservation)
        await led.undo(["t"], "lost-2")
        assert await reserved(led, "t") == 0
