"""The audit writer process (`python -m agentgw.audit.worker CONFIG`): reads finished calls as snapshot lines on
stdin (and control lines: drops, the configured secrets after a registry reload), builds, chains and stores their records with the in-process Writer, and reports its counters as JSON
lines on stdout. It ends when stdin closes, after everything it read is stored (signals are the gateway's to
handle: a SIGTERM to the process group must not cut the drain short)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from functools import partial

import orjson

from agentgw.audit.process import SECRETS_KEY
from agentgw.audit.snapshot import restore
from agentgw.audit.writer import Writer, open_writer
from agentgw.secrets import Scrubber, configured_secrets, scrub_logs
from agentgw.settings import load_settings

log = logging.getLogger("agentgw.audit")
LINE_LIMIT = 256 * 1024 * 1024  # one snapshot (a captured payload can be large)


def _counters(writer: Writer) -> dict[str, int | str | None]:
    return {
        "written": writer.written,
        "dropped": writer.dropped,
        "lost": writer.lost,
        "store_errors": writer.store_errors,
        "prunes": writer.prunes,
        "pruned": writer.pruned,
        "failing": int(writer.failing),
        "last_error": writer.last_error,
    }


async def _report(writer: Writer) -> None:
    """A line whenever a counter changes (the gateway's depth and /metrics read these)."""
    while True:
        now = _counters(writer)
        sys.stdout.buffer.write(orjson.dumps(now) + b"\n")
        sys.stdout.buffer.flush()
        await writer.until(partial(_changed, writer, now))


def _changed(writer: Writer, seen: dict[str, int | str | None]) -> bool:
    return _counters(writer) != seen


async def serve(config: str) -> int:
    settings = load_settings(config)
    own = configured_secrets(settings)  # what this worker's configuration holds: kept, whatever it is told
    logs = Scrubber(own)
    scrub_logs(logs)
    writer = open_writer(settings)
    if writer is None:
        return 0
    await writer.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    reporter = asyncio.create_task(_report(writer))
    try:
        while line := await reader.readline():
            try:
                if line.startswith(b"["):
                    ex, ended = restore(line)
                    await writer.submit(ex, ended)
                elif line.startswith(b"{"):
                    msg = orjson.loads(line)
                    if SECRETS_KEY in msg:  # from now on (the gateway sent it in order with the snapshots)
                        secrets = [*own, *(str(s) for s in msg[SECRETS_KEY])]
                        writer.use_secrets(secrets)
                        logs.update(secrets)
                    else:
                        writer.record_drops(int(msg["drops"]), float(msg["first"]), float(msg["last"]))
            except (ValueError, TypeError, KeyError, IndexError):  # a line the gateway did not write whole
                writer.lost += 1
                log.exception("an audit snapshot could not be read; its record is lost")
    finally:
        await writer.aclose()
        reporter.cancel()
        sys.stdout.buffer.write(orjson.dumps({**_counters(writer), "closed": True}) + b"\n")
        sys.stdout.buffer.flush()
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - Windows
        pass
    return asyncio.run(serve(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
