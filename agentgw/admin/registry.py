"""`GET /admin/registry` (the Admin class has already checked the role): what this gateway runs and how it is doing:
LLM providers and models with their circuits, MCP servers, A2A agents (each plane answers for itself through a
StatusSource: the core never imports a plane), supervised processes, the audit writer, its chain's head and newest
checkpoint. Asks no upstream anything; the answer is scrubbed of every configured secret."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from agentgw.audit.checkpoints import PostgresSink, SignedCheckpoint, authentic, open_checkpoint_sink
from agentgw.audit.process import ProcessWriter
from agentgw.audit.writer import RecordSink
from agentgw.errors import GatewayError
from agentgw.http import Scope, Send, send_bytes
from agentgw.secrets import Scrubber

log = logging.getLogger("agentgw.admin")

PATH = "/admin/registry"
# What a section says when its plane is not running (no MCP server configured, …).
EMPTY: dict[str, dict[str, Any]] = {
    "llm": {"providers": [], "models": []},
    "mcp": {"servers": [], "virtual_servers": [], "pinning": None},
    "a2a": {"agents": []},
}


class StatusSource(Protocol):
    def registry_status(self) -> dict[str, Any]:
        """This plane's section of the answer: JSON values only, no secret (no key, token, header value or
        credentials in a URL), and nothing asked of an upstream."""
        ...


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class AuditSource:
    """The audit writer's state (`sink`: the in-process Writer or the writer process's gateway side), its chain's
    head as the store has it, and the newest checkpoint its sink keeps (read from the sink: the writer process
    keeps its own checkpointer). `resolve` makes a config-relative path absolute."""

    def __init__(self, sink: RecordSink, resolve: Callable[[str], Path]) -> None:
        self.sink = sink
        self.resolve = resolve

    def writer(self) -> dict[str, Any]:
        sink, cfg = self.sink, self.sink.cfg
        return {
            "mode": cfg.writer,
            "state": sink.state,
            "pid": sink.pid if isinstance(sink, ProcessWriter) else None,
            "store": sink.store.kind,
            "queue_depth": sink.depth,
            "queue_size": cfg.queue_size,
            "on_full": cfg.on_full,
            "written": sink.written,
            "dropped": sink.dropped,
            "lost": sink.lost,
            "store_errors": sink.store_errors,
            "last_error": sink.last_error,
        }

    async def checkpoints(self) -> tuple[SignedCheckpoint | None, str | None]:
        """The newest checkpoint in the sink, or why it could not be read."""
        cfg = self.sink.cfg.checkpoints
        store = open_checkpoint_sink(cfg, self.resolve)
        if store is None:
            return None, None
        try:
            if isinstance(
                store, PostgresSink
            ):  # a file sink is read as it is (opening it creates its directory)
                await store.open()
            kept = await store.read()
        except Exception as exc:
            return None, _error(exc)
        finally:
            await store.aclose()
        return max(kept, key=lambda cp: cp.seq, default=None), None

    async def status(self) -> dict[str, Any]:
        cfg = self.sink.cfg
        head: dict[str, Any] | None = None
        head_error = None
        try:
            got = await self.sink.store.head()
            if got is not None:
                head = {"seq": got.seq, "hash": got.hash, "records": got.records}
        except Exception as exc:  # the store is down: the rest of the answer still stands
            head_error = _error(exc)
        last, cp_error = await self.checkpoints()
        sink = cfg.checkpoints.sink
        checkpoint: dict[str, Any] = {
            "sink": None if sink is None else "postgres" if sink.startswith("postgres") else "file",
            "every_records": cfg.checkpoints.every_records,
            "every_s": cfg.checkpoints.every_s,
            "last": None,
            "error": cp_error,
        }
        if last is not None:
            checkpoint["last"] = {
                "seq": last.seq,
                "hash": last.hash,
                "count": last.count,
                "ts": last.ts,
                "authentic": authentic(last, cfg.hmac_key),
                "behind_head": head["seq"] - last.seq if head is not None else None,
            }
        return {
            "enabled": True,
            "writer": self.writer(),
            "head": head,
            "head_error": head_error,
            "keyed": cfg.hmac_key is not None,
            "checkpoint": checkpoint,
        }


def processes(status: dict[str, dict[str, object]]) -> list[dict[str, Any]]:
    """The supervisor's entries (Supervisor.status): `running` (probed ready, or spawned when it has no URL to
    probe), `starting` (spawned, its port not open yet) or `down` (exited; restarted after a backoff)."""
    out = []
    for name, st in sorted(status.items()):
        pid = st.get("pid")
        state = "running" if st.get("running") else "starting" if pid is not None else "down"
        out.append(
            {
                "name": name,
                "pid": pid,
                "state": state,
                "restarts": st.get("restarts"),
                "last_exit_code": st.get("last_exit_code"),
            }
        )
    return out


class RegistryAPI:
    def __init__(self, scrubber: Scrubber | None = None) -> None:
        self.scrubber = scrubber or Scrubber(())
        # Set by the app, which builds the planes after the admin API (a plane not running is None): sections by
        # name (`llm`, `mcp`, `a2a`), the supervisor's status, the audit writer (None: audit is off).
        self.planes: Callable[[], dict[str, StatusSource | None]] = dict
        self.processes: Callable[[], dict[str, dict[str, object]]] = dict
        self.audit: AuditSource | None = None

    async def __call__(self, scope: Scope, send: Send) -> bool:
        """Answer `/admin/registry`; False when the path is not ours."""
        if scope["path"] not in (PATH, PATH + "/"):
            return False
        if scope["method"] not in ("GET", "HEAD"):
            raise GatewayError("Use GET.", status=405, code="method_not_allowed")
        await send_bytes(send, 200, self.scrubber.data(orjson.dumps(await self.answer())))
        return True

    async def answer(self) -> dict[str, Any]:
        planes = self.planes()
        body: dict[str, Any] = {"time": time.time()}
        for name, empty in EMPTY.items():
            source = planes.get(name)
            try:
                body[name] = source.registry_status() if source is not None else empty
            except Exception as exc:  # one plane's report failing leaves the others readable
                log.exception("the %s plane's registry status failed", name)
                body[name] = {**empty, "error": _error(exc)}
        body["processes"] = processes(self.processes())
        body["audit"] = await self.audit.status() if self.audit is not None else {"enabled": False}
        return body
