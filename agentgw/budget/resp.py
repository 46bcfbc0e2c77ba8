"""The Redis ledger's hot path: EVALSHA of its reserve and settle scripts over a small pool of plain asyncio
connections speaking RESP2. redis-py's asyncio client spends ~110 µs of CPU per command; this spends ~15. Loading
scripts, reads and the admin view stay on redis-py. TCP and Unix sockets only (TLS URLs keep redis-py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio.connection import SSLConnection, parse_url
from redis.commands.core import AsyncScript

from agentgw.budget.ledger import NotSent

_KNOWN = {"host", "port", "db", "username", "password", "path", "connection_class"}


class RespError(Exception):
    """An error reply from Redis (the connection itself is fine)."""


def _encode(parts: list[Any]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _read(reader: asyncio.StreamReader) -> Any:
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else (await reader.readexactly(n + 2))[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [await _read(reader) for _ in range(n)]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RespError(rest.decode())
    raise ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def call(self, parts: list[Any]) -> Any:
        self.writer.write(_encode(parts))
        return await _read(self.reader)

    def close(self) -> None:
        self.writer.close()


class ScriptRunner:
    """Runs registered scripts by EVALSHA, each call on a connection of its own (at most `max_connections`),
    loading a script once if Redis does not know it (NOSCRIPT). A connection that fails is closed with every
    idle one (after a Redis restart they are all dead); a cancelled call closes its connection (its reply is
    still due). Errors propagate: the caller decides what a lost reply means."""

    def __init__(self, url: str, max_connections: int = 64, timeout_s: float = 2.0) -> None:
        opts = parse_url(url)
        self.host, self.port, self.path = (
            opts.get("host", "127.0.0.1"),
            opts.get("port", 6379),
            opts.get("path"),
        )
        self.db, self.username, self.password = opts.get("db", 0), opts.get("username"), opts.get("password")
        self.timeout = timeout_s
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(max_connections)

    @staticmethod
    def supports(url: str) -> bool:
        opts = parse_url(url)
        return set(opts) <= _KNOWN and opts.get("connection_class") is not SSLConnection

    async def _connect(self) -> _Conn:
        try:
            if self.path:
                reader, writer = await asyncio.open_unix_connection(self.path)
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise NotSent(f"Redis at {self.path or f'{self.host}:{self.port}'}: {exc}") from exc
        conn = _Conn(reader, writer)
        try:
            if self.password is not None:
                auth = [self.username, self.password] if self.username else [self.password]
                await conn.call(["AUTH", *auth])
            if self.db:
                await conn.call(["SELECT", self.db])
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkout(self) -> _Conn | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()  # the server closed it while it was idle
        return None

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        parts = ["EVALSHA", script.sha, len(keys), *keys, *args]
        async with self.slots:
            conn = self._checkout()
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None:
                        conn = await self._connect()
                    try:
                        out = await conn.call(parts)
                    except RespError as err:
                        if not str(err).startswith("NOSCRIPT"):
                            raise
                        await conn.call(["SCRIPT", "LOAD", script.script])
                        out = await conn.call(parts)
            except RespError:
                if conn is not None:
                    self.idle.append(conn)  # an error reply: the connection is fine
                raise
            except BaseException:
                if conn is not None:
                    conn.close()
                self.aclose_idle()
                raise
            self.idle.append(conn)
            return out

    def aclose_idle(self) -> None:
        while self.idle:
            with contextlib.suppress(Exception):
                self.idle.pop().close()
