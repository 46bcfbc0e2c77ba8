"""The Redis ledger's own connections (agentgw/budget/resp.py) against private redis-servers: a script Redis has
forgotten is loaded again, a password and a database number in the URL are honoured, Unix sockets work, and a
pooled connection the server closed is replaced rather than used."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import redis.asyncio as aioredis

from agentgw.budget.ledger import Reservation
from agentgw.budget.redis import RedisLedger
from tests.budget.test_faults import private_redis
from tests.support import free_port


@contextlib.asynccontextmanager
async def ledger_on(tmp: Path, url_of: str, *extra: str) -> AsyncIterator[tuple[RedisLedger, str]]:
    """A private redis-server (with `extra` options) and a ledger on `url_of` (formatted with port and dir)."""
    port = free_port()
    data = tmp / "redis"
    data.mkdir()
    url = url_of.format(port=port, dir=data)
    async with private_redis(data, port, *(e.format(port=port, dir=data) for e in extra)):
        led = RedisLedger(url, prefix="resp")
        try:
            yield led, url
        finally:
            await led.aclose()


async def reserve_and_settle(led: RedisLedger, op: str) -> None:
    got = await led.reserve(["t"], {"tokens": 5}, {"tokens": 100}, op=op)
    assert isinstance(got, Reservation)
    await led.settle(["t"], {"tokens": 5}, {"tokens": 2}, op=op)


async def test_a_script_redis_forgot_is_loaded_again(tmp_path: Path) -> None:
    async with ledger_on(tmp_path, "redis://127.0.0.1:{port}/0") as (led, url):
        assert led.fast is not None
        await reserve_and_settle(led, "a")
        admin = aioredis.from_url(url)
        await admin.script_flush()
        await admin.aclose()
        await reserve_and_settle(led, "b")
        st = await led.state("t")
    assert st is not None and (st.spent, st.reserved) == ({"tokens": 4}, {"tokens": 0})


async def test_a_password_and_a_database_in_the_url_are_used(tmp_path: Path) -> None:
    async with ledger_on(tmp_path, "redis://:s3cret@127.0.0.1:{port}/3", "--requirepass", "s3cret") as (
        led,
        url,
    ):
        assert led.fast is not None
        await reserve_and_settle(led, "a")
        admin = aioredis.from_url(url)
        in_db3 = await admin.exists("resp:task:t")
        await admin.aclose()
    assert in_db3 == 1


async def test_a_unix_socket_url_works(tmp_path: Path) -> None:
    url = "unix://{dir}/redis.sock?db=2"
    # No TCP listener at all (`--port 0`): no free port to race other processes for.
    async with ledger_on(tmp_path, url, "--unixsocket", "{dir}/redis.sock", "--port", "0") as (led, _):
        assert led.fast is not None
        await reserve_and_settle(led, "a")
        st = await led.state("t")
    assert st is not None and st.spent == {"tokens": 2}


async def test_a_pooled_connection_the_server_closed_is_replaced_not_used(tmp_path: Path) -> None:
    async with ledger_on(tmp_path, "redis://127.0.0.1:{port}/0") as (led, url):
        assert led.fast is not None
        await reserve_and_settle(led, "a")
        assert len(led.fast.idle) == 1
        admin = aioredis.from_url(url)
        killed = await admin.client_kill_filter(_type="normal", skipme=True)
        await admin.aclose()
        with anyio.fail_after(5):  # the kill reaches the idle connection as an end of file
            while not led.fast.idle[0].reader.at_eof():
                await anyio.lowlevel.checkpoint()
        await reserve_and_settle(led, "b")  # on a new connection: the killed one is dropped, never used
        st = await led.state("t")
    assert killed >= 1
    assert st is not None and (st.spent, st.reserved) == ({"tokens": 4}, {"tokens": 0})
