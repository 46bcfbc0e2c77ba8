"""A crashed gateway leaves no supervised process behind: children die with it (parent-death signal), and the next
start reaps, from the run file, any child that still outlived it; it never touches a process it did not start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import orjson
import pytest

from agentgw.orphans import identity
from agentgw.supervisor import Supervisor
from tests.support import agentgw_serve, free_port, write_config

DOCS_SERVER = Path(__file__).resolve().parent.parent / "examples" / "servers" / "docs_server.py"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


async def gone(pidfd: int) -> None:
    """Wait until the process behind `pidfd` has ended (not our child: its pidfd turns readable), bounded."""
    try:
        with anyio.fail_after(15):
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def recorded(tmp: Path) -> list[dict[str, object]]:
    files = list((tmp / ".agentgw").glob("supervised-*.json"))
    return [c for f in files for c in orjson.loads(f.read_bytes())["children"]]


async def test_a_killed_gateway_takes_its_supervised_mcp_server_with_it_and_restarts_ready(
    tmp_path: Path,
) -> None:
    mcp_port = free_port()
    registry = {
        "mcp": {
            "servers": [
                {
                    "name": "docs",
                    "url": f"http://127.0.0.1:{mcp_port}/mcp",
                    "command": ["python", str(DOCS_SERVER)],
                    "env": {"DOCS_PORT": mcp_port},
                }
            ]
        }
    }
    cfg = write_config(tmp_path, registry)
    port = free_port()
    async with agentgw_serve(cfg, port) as gw:
        await gw.logged(f"[mcp:docs] ready on 127.0.0.1:{mcp_port}")
        started = next(line for line in gw.lines if "[mcp:docs] started pid " in line)
        pid = int(started.rsplit(" ", 1)[1])
        assert [c["pid"] for c in recorded(tmp_path)] == [pid]
        pidfd = os.pidfd_open(pid)
        gw.process.send_signal(signal.SIGKILL)
    await gone(pidfd)  # and its port is free again

    async with agentgw_serve(cfg, port) as gw:
        await gw.logged(f"[mcp:docs] ready on 127.0.0.1:{mcp_port}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            # the gateway connects to the server and lists it once the server is up: ready follows, bounded
            with anyio.fail_after(30):
                for _ in range(600):  # bounded poll: readiness is state the gateway reports, not an event
                    if (ready := await client.get("/readyz")).status_code == 200:
                        break
                    await anyio.sleep(0.05)
        assert ready.json()["left_out"] == [], ready.text
        gw.process.send_signal(signal.SIGTERM)
    assert recorded(tmp_path) == []  # a clean stop leaves no record behind


def stale_record(tmp: Path, owner: subprocess.Popen[bytes], child: subprocess.Popen[bytes]) -> None:
    """A run file as a crashed gateway (`owner`) would have left it, recording `child`."""
    o, c = identity(owner.pid), identity(child.pid)
    assert o is not None and c is not None
    run = tmp / ".agentgw"
    run.mkdir(exist_ok=True)
    data = {
        "owner": {"pid": owner.pid, "start": o[0]},
        "children": [{"name": "mcp:docs", "pid": child.pid, "start": c[0], "command": c[1]}],
    }
    (run / f"supervised-{owner.pid}.json").write_bytes(orjson.dumps(data))


def sleeper() -> subprocess.Popen[bytes]:
    # Its own session, no parent-death signal: exactly what would outlive a gateway without the kernel's help.
    return subprocess.Popen(["sleep", "3600"], start_new_session=True)


async def test_the_next_start_reaps_a_child_a_dead_gateway_left_behind(tmp_path: Path) -> None:
    owner, child = sleeper(), sleeper()
    try:
        stale_record(tmp_path, owner, child)
        owner.kill()
        owner.wait()  # the gateway that recorded the child is gone
        sup = Supervisor([], run_dir=tmp_path / ".agentgw", stop_timeout_s=5)
        await sup.start()
        with anyio.fail_after(10):
            code = await anyio.to_thread.run_sync(child.wait)
        assert code == -signal.SIGTERM
        assert list((tmp_path / ".agentgw").glob("supervised-*.json")) == []
        await sup.stop()
    finally:
        for p in (owner, child):
            p.kill()
            p.wait()


async def test_a_recorded_pid_now_used_by_another_process_is_left_alone(tmp_path: Path) -> None:
    owner, child = sleeper(), sleeper()
    try:
        stale_record(tmp_path, owner, child)
        path = tmp_path / ".agentgw" / f"supervised-{owner.pid}.json"
        data = orjson.loads(path.read_bytes())
        data["children"][0]["start"] -= 1  # same pid, another start time: a different process reusing it
        path.write_bytes(orjson.dumps(data))
        owner.kill()
        owner.wait()
        sup = Supervisor([], run_dir=tmp_path / ".agentgw", stop_timeout_s=5)
        await sup.start()
        await sup.stop()
        assert child.poll() is None
    finally:
        for p in (owner, child):
            p.kill()
            p.wait()


async def test_children_of_a_gateway_that_still_runs_are_left_alone(tmp_path: Path) -> None:
    owner, child = sleeper(), sleeper()  # owner stays up: another gateway sharing this config directory
    try:
        stale_record(tmp_path, owner, child)
        sup = Supervisor([], run_dir=tmp_path / ".agentgw", stop_timeout_s=5)
        await sup.start()
        await sup.stop()
        assert child.poll() is None
        assert (tmp_path / ".agentgw" / f"supervised-{owner.pid}.json").exists()
    finally:
        for p in (owner, child):
            p.kill()
            p.wait()


def test_a_recorded_identity_is_the_start_time_and_command_line() -> None:
    found = identity(os.getpid())
    assert found is not None
    assert found[1][0] == sys.executable or Path(found[1][0]).name.startswith("python")
    assert identity(2**22 + 1) is None  # above pid_max: no such process
