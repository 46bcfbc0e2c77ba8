"""Every listener's connection limits, against `agentgw serve` itself (its uvicorn protocol and options) with raw
socket clients: oversized heads get 431, heads and bodies that trickle past their deadlines get 408, and many such
clients leave the gateway's memory where it was."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import orjson
from anyio.abc import SocketStream

from tests.mcp.support import registry
from tests.support import (
    MOCK_REGISTRY,
    TEST_KEY,
    ServeProcess,
    agentgw_serve,
    audit_bytes,
    audit_records,
    free_port,
    write_config,
)

STDIO_SERVER = Path(__file__).parent / "mcp" / "stdio_server.py"
LIMITS = {"max_header_bytes": 16 * 1024, "header_timeout_s": 1.0, "body_timeout_s": 1.0}
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
AUTHED = HEAD + f"Authorization: Bearer {TEST_KEY}\r\nContent-Type: application/json\r\n".encode()


@contextlib.asynccontextmanager
async def served(tmp_path: Path, audit: bool = False) -> AsyncIterator[tuple[int, ServeProcess]]:
    port = free_port()
    stdio = {"name": "local", "transport": "stdio", "command": [sys.executable, str(STDIO_SERVER)]}
    reg = {**MOCK_REGISTRY, **registry(stdio)}
    cfg = write_config(tmp_path, reg, {"limits": LIMITS, "audit": {"enabled": audit}})
    async with agentgw_serve(cfg, port) as gw:
        try:
            yield port, gw
        finally:
            gw.process.send_signal(signal.SIGTERM)


def rss_kib(gw: ServeProcess) -> int:
    status = Path(f"/proc/{gw.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


async def answer(stream: SocketStream) -> bytes:
    """Everything the server sends until it closes its side."""
    data = b""
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        while True:
            data += await stream.receive()
    return data


async def send_all(stream: SocketStream, chunks: list[bytes]) -> None:
    """Send as long as the server takes it (it stops reading what it has refused)."""
    with contextlib.suppress(anyio.BrokenResourceError, ConnectionResetError, BrokenPipeError):
        for chunk in chunks:
            await stream.send(chunk)


async def oversized(port: int, total: int) -> bytes:
    """A head that never ends: one header value growing to `total` bytes, 64 KiB at a time."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_all, stream, [HEAD + b"X-Pad: "] + [b"a" * 65536] * (total // 65536))
            reply = await answer(stream)
            tg.cancel_scope.cancel()
    return reply


async def test_an_oversized_head_gets_431_whether_it_trickles_or_arrives_at_once(tmp_path: Path) -> None:
    async with served(tmp_path) as (port, _):
        with anyio.fail_after(30):
            trickled = await oversized(port, 1 << 20)
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(HEAD + b"X-Pad: " + b"a" * 20_000 + b"\r\nContent-Length: 0\r\n\r\n")
                at_once = await answer(stream)
    for reply in (trickled, at_once):
        assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
        body = orjson.loads(reply.partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] == "headers_too_large"


async def test_a_head_that_never_completes_gets_408(tmp_path: Path) -> None:
    async with served(tmp_path) as (port, _):
        with anyio.fail_after(30):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(HEAD)  # and nothing more
                reply = await answer(stream)
            async with await anyio.connect_tcp("127.0.0.1", port) as silent:  # not even a byte
                nothing = await answer(silent)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert orjson.loads(reply.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    assert nothing.startswith(b"HTTP/1.1 408 ")


async def test_many_slow_bodies_each_get_408_in_their_planes_envelope(tmp_path: Path) -> None:
    replies: list[bytes] = []

    async def slow_body(port: int, path: bytes) -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            head = AUTHED.replace(b"/v1/chat/completions", path)
            await stream.send(head + b"Content-Length: 1000\r\n\r\n" + b'{"model":')  # 9 of 1000 bytes
            replies.append(await answer(stream))

    async with served(tmp_path) as (port, _):
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(slow_body, port, b"/mcp" if i % 2 else b"/v1/chat/completions")
    assert len(replies) == 200
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies)
    bodies = [orjson.loads(r.partition(b"\r\n\r\n")[2]) for r in replies]
    assert sum(1 for b in bodies if b.get("jsonrpc") == "2.0" and b["error"]["code"] == -32600) == 100
    assert sum(1 for b in bodies if b.get("error", {}).get("code") == "request_timeout") == 100


async def test_many_clients_sending_huge_heads_leave_the_gateway_memory_bounded(tmp_path: Path) -> None:
    async with served(tmp_path) as (port, gw):
        before = rss_kib(gw)
        with anyio.fail_after(60):
            replies: list[bytes] = []

            async def one() -> None:
                replies.append(await oversized(port, 8 << 20))

            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(one)
        grown_mib = (rss_kib(gw) - before) / 1024
    # Each got its 431, unless its reset (the server stops discarding what it refused after 1 MiB or 2 s) overtook
    # a reply it had not read yet on a loaded machine: what this test bounds is memory; the 431 is tested above.
    assert len(replies) == 12 and all(r == b"" or r.startswith(b"HTTP/1.1 431 ") for r in replies)
    assert grown_mib < 24, f"the gateway grew by {grown_mib:.0f} MiB"


async def test_connection_refusals_are_tallied_per_source_and_plane_without_payload(tmp_path: Path) -> None:
    async def refused(request: bytes) -> bytes:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            return await answer(stream)

    marker = b'{"model":"PAYLOAD-MARKER"'
    async with served(tmp_path, audit=True) as (port, _):
        with anyio.fail_after(30):
            big = await refused(HEAD + b"X-Pad: " + b"a" * 20_000 + b"\r\nContent-Length: 0\r\n\r\n")
            head = await refused(HEAD)  # and nothing more
            body = await refused(AUTHED + b"Content-Length: 1000\r\n\r\n" + marker)
            mcp = await refused(
                AUTHED.replace(b"/v1/chat/completions", b"/mcp") + b"Content-Length: 99\r\n\r\n{"
            )
            silent = await refused(b"")  # not a byte
            garbage = await refused(b"NOT HTTP AT ALL\r\n\r\n")
    replies = [big, head, body, mcp, silent, garbage]
    assert [r[:12] for r in replies] == [b"HTTP/1.1 431", *[b"HTTP/1.1 408"] * 4, b"HTTP/1.1 400"]
    records = audit_records(tmp_path)
    refusals = {r["plane"]: r for r in records if r.get("refused")}
    assert len(records) == 3 and refusals.keys() == {"llm", "mcp", "http"}
    assert refusals["llm"]["refused"]["count"] == 3
    assert refusals["llm"]["refused"]["codes"] == {"headers_too_large": 1, "request_timeout": 2}
    assert refusals["mcp"]["refused"]["codes"] == {"request_timeout": 1}
    # the connection that sent nothing, and the one that did not speak HTTP
    assert refusals["http"]["refused"]["codes"] == {"request_timeout": 1, "invalid_http_request": 1}
    for tally in refusals.values():
        assert tally["client"] == "127.0.0.1" and tally["principal"] is None and tally["status"] == "denied"
    stored = audit_bytes(tmp_path)
    assert b"PAYLOAD-MARKER" not in stored
