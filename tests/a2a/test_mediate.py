"""The stream relay's parts: keep-alive ticks that never lose the pending read, and reading ids and states out of
A2A 1.0 objects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from agentgw.a2a.mediate import ids_of, ticks


async def test_an_idle_stream_ticks_and_the_event_after_the_tick_is_not_lost() -> None:
    release = anyio.Event()
    closed = anyio.Event()

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"n": 1}
            await release.wait()
            yield {"n": 2}
        finally:
            closed.set()

    got: list[dict[str, Any] | None] = []
    with anyio.fail_after(10):
        async for ev in ticks(events(), 0.01):
            got.append(ev)
            if ev is None:
                release.set()
        await closed.wait()
    assert got[0] == {"n": 1} and got[-1] == {"n": 2}
    assert None in got[1:-1]


async def test_closing_the_relay_closes_the_agents_stream() -> None:
    closed = anyio.Event()
    never = anyio.Event()

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"n": 1}
            await never.wait()
            yield {"n": 2}
        finally:
            closed.set()

    relay = ticks(events(), 60)
    with anyio.fail_after(10):
        assert await anext(relay) == {"n": 1}
        await relay.aclose()
        await closed.wait()
    assert closed.is_set()


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {"task": {"id": "t", "contextId": "c", "status": {"state": "TASK_STATE_WORKING"}}},
            ("t", "c", "TASK_STATE_WORKING"),
        ),
        (
            {"message": {"messageId": "m", "contextId": "c", "role": "ROLE_AGENT", "parts": []}},
            (None, "c", None),
        ),
        ({"message": {"messageId": "m", "taskId": "t", "role": "ROLE_AGENT"}}, ("t", None, None)),
        (
            {"statusUpdate": {"taskId": "t", "contextId": "c", "status": {"state": "TASK_STATE_COMPLETED"}}},
            ("t", "c", "TASK_STATE_COMPLETED"),
        ),
        ({"artifactUpdate": {"taskId": "t", "contextId": "c", "artifact": {}}}, ("t", "c", None)),
        (
            {"id": "t", "contextId": "c", "status": {"state": "TASK_STATE_CANCELED"}},
            ("t", "c", "TASK_STATE_CANCELED"),
        ),
        ("not an object", (None, None, None)),
        ({"task": {"id": 5, "contextId": ["x"]}}, (None, None, None)),
    ],
)
def test_ids_and_state_are_read_from_every_a2a_shape(obj: Any, expected: tuple[Any, ...]) -> None:
    assert ids_of(obj) == expected
