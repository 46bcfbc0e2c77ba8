"""Registry entries with `command:` are launched and watched: their output goes to the gateway log under the
entry name, a process that dies is restarted with backoff, and shutdown is SIGTERM, then SIGKILL."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from agentgw.settings import load_settings
from agentgw.supervisor import Spec, Supervisor
from tests.support import free_port, gateway, write_config

FLAKY = """\
import pathlib, signal, sys
counter = pathlib.Path(sys.argv[1])
run = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(run + 1))
print(f"run {run}")
if run < int(sys.argv[2]):
    sys.exit(7)
signal.signal(signal.SIGTERM, lambda *_: (print("got SIGTERM"), sys.exit(0)))
print("staying up")
while True:
    signal.pause()
"""

CHATTY = """\
import sys
print("to stdout")
print("to stderr", file=sys.stderr)
print("no newline at the end", end="")
"""

STUBBORN = """\
import signal, subprocess
child = subprocess.Popen(["sleep", "3600"])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"child {child.pid}")
while True:
    signal.pause()
"""

LATE_LISTENER = """\
import socket, sys
gate, port = sys.argv[1], int(sys.argv[2])
print("waiting")
with open(gate) as f:
    f.read()
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen()
print("listening")
while True:
    server.accept()[0].close()
"""


class LogWatch(logging.Handler):
    """Collects supervisor log lines; `wait_for` returns once a condition on them holds."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._waiters: list[tuple[Callable[[list[str]], bool], anyio.Event]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        for cond, event in self._waiters:
            if cond(self.lines):
                event.set()

    async def wait_for(self, cond: Callable[[list[str]], bool]) -> None:
        event = anyio.Event()
        self._waiters.append((cond, event))
        try:
            with anyio.fail_after(10):
                if not cond(self.lines):
                    await event.wait()
        finally:
            self._waiters.remove((cond, event))

    async def line(self, text: str) -> None:
        await self.wait_for(lambda lines: text in lines)


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    logger = logging.getLogger("agentgw.supervisor")
    watch, level = LogWatch(), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(level)


def script(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("backoff_s", "max_backoff_s", "stable_after_s", "delays"),
    [
        (0.05, 1.0, 60.0, ["0.05", "0.10", "0.20"]),  # doubles on each consecutive crash
        (0.05, 0.08, 60.0, ["0.05", "0.08", "0.08"]),  # capped at max_backoff_s
        (0.05, 1.0, 0.0, ["0.05", "0.05", "0.05"]),  # a run that lasted stable_after_s starts it over
    ],
)
async def test_a_process_that_dies_is_restarted_with_backoff_until_it_stays_up(
    tmp_path: Path,
    logs: LogWatch,
    backoff_s: float,
    max_backoff_s: float,
    stable_after_s: float,
    delays: list[str],
) -> None:
    command = [sys.executable, script(tmp_path, "flaky.py", FLAKY), str(tmp_path / "runs"), "3"]
    sup = Supervisor(
        [Spec("llm:flaky", command, cwd=tmp_path)],
        backoff_s=backoff_s,
        max_backoff_s=max_backoff_s,
        stable_after_s=stable_after_s,
    )
    await sup.start()
    try:
        await logs.line("[llm:flaky] staying up")
        assert sup.ready
        assert sup.status()["llm:flaky"]["restarts"] == 3
    finally:
        await sup.stop()
    assert [line for line in logs.lines if "exited" in line] == [
        f"[llm:flaky] exited with code 7; restarting in {d}s" for d in delays
    ]
    assert [line for line in logs.lines if line.startswith("[llm:flaky] run ")] == [
        f"[llm:flaky] run {i}" for i in range(4)
    ]
    assert logs.lines[-2:] == ["[llm:flaky] got SIGTERM", "[llm:flaky] stopped (exit code 0)"]
    assert not sup.ready and sup.status()["llm:flaky"]["pid"] is None


async def test_stdout_and_stderr_lines_go_to_the_log_prefixed_with_the_entry_name(
    tmp_path: Path, logs: LogWatch
) -> None:
    sup = Supervisor(
        [Spec("mcp:docs", [sys.executable, script(tmp_path, "chatty.py", CHATTY)])], backoff_s=60
    )
    await sup.start()
    try:
        await logs.line("[mcp:docs] exited with code 0; restarting in 60.00s")
    finally:
        await sup.stop()
    assert logs.lines[1:4] == [
        "[mcp:docs] to stdout",
        "[mcp:docs] to stderr",
        "[mcp:docs] no newline at the end",  # the last, unterminated line is logged when the output ends
    ]


async def test_a_process_ignoring_sigterm_is_killed_with_its_children_after_the_stop_timeout(
    tmp_path: Path, logs: LogWatch
) -> None:
    sup = Supervisor(
        [Spec("a2a:stubborn", [sys.executable, script(tmp_path, "stubborn.py", STUBBORN)])],
        stop_timeout_s=0.2,
    )
    await sup.start()
    try:
        await logs.wait_for(lambda lines: any(line.startswith("[a2a:stubborn] child ") for line in lines))
        child = int(next(line for line in logs.lines if "child" in line).split()[-1])
        pidfd = os.pidfd_open(child)
    finally:
        await sup.stop()
    try:
        with anyio.fail_after(5):
            await anyio.wait_readable(pidfd)  # readable once the grandchild has exited
    finally:
        os.close(pidfd)
    assert "[a2a:stubborn] did not stop within 0.2s of SIGTERM; killing it" in logs.lines
    assert logs.lines[-1] == "[a2a:stubborn] stopped (exit code -9)"


async def test_a_command_that_cannot_start_is_logged_retried_and_never_ready(logs: LogWatch) -> None:
    sup = Supervisor([Spec("a2a:ghost", ["/nonexistent/agw-agent"])], backoff_s=0.01)
    await sup.start()
    try:
        await logs.wait_for(lambda lines: sum("cannot start" in line for line in lines) >= 2)
        assert not sup.ready
    finally:
        await sup.stop()
    assert logs.lines[0] == "[a2a:ghost] cannot start /nonexistent/agw-agent: No such file or directory"


async def test_an_entry_with_a_url_is_running_only_once_its_port_accepts_connections(
    tmp_path: Path, logs: LogWatch
) -> None:
    port, gate = free_port(), tmp_path / "gate"
    os.mkfifo(gate)
    command = [sys.executable, script(tmp_path, "late.py", LATE_LISTENER), str(gate), str(port)]
    cfg = write_config(
        tmp_path,
        {"a2a": {"agents": [{"name": "late", "url": f"http://127.0.0.1:{port}/", "command": command}]}},
        {"supervisor": {"backoff_s": 0.01, "stop_timeout_s": 1}},
    )
    sup = Supervisor.from_settings(load_settings(cfg))
    await sup.start()
    try:
        await logs.line("[a2a:late] waiting")
        assert not sup.ready
        assert sup.status()["a2a:late"]["running"] is False
        await anyio.to_thread.run_sync(gate.write_text, "go")
        await logs.line(f"[a2a:late] ready on 127.0.0.1:{port}")
        assert sup.ready
    finally:
        await sup.stop()


async def test_the_gateway_runs_supervised_entries_and_is_ready_only_while_they_run(
    tmp_path: Path, logs: LogWatch
) -> None:
    port = free_port()
    gate = tmp_path / "gate"
    gate.write_text("open")  # a regular file: the agent listens at once
    command = [sys.executable, script(tmp_path, "agent.py", LATE_LISTENER), str(gate), str(port)]
    registry = {"a2a": {"agents": [{"name": "echo", "url": f"http://127.0.0.1:{port}/", "command": command}]}}
    async with gateway(tmp_path, registry) as (url, app):
        with anyio.fail_after(10):
            await app.supervisor.watched["a2a:echo"].running.wait()
        await logs.line("[a2a:echo] listening")
        async with httpx.AsyncClient(base_url=url) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["processes"]["a2a:echo"]["running"] is True
    assert logs.lines[-1].startswith("[a2a:echo] stopped (exit code ")
    assert app.supervisor.status()["a2a:echo"]["pid"] is None


async def test_readyz_is_503_while_a_supervised_entry_is_not_running(tmp_path: Path, logs: LogWatch) -> None:
    registry = {
        "a2a": {"agents": [{"name": "ghost", "url": "http://127.0.0.1:9/", "command": ["/nonexistent/x"]}]}
    }
    async with gateway(tmp_path, registry) as (url, _):
        await logs.wait_for(lambda lines: any("cannot start" in line for line in lines))
        async with httpx.AsyncClient(base_url=url) as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False
    assert body["checks"]["supervised"] is False
    assert body["processes"]["a2a:ghost"]["running"] is False
    assert [(e["upstream"], e["state"]) for e in body["left_out"]] == [("a2a:ghost", "not_running")]
