"""Tool pinning at work: the records pinning leaves on listings and calls, the refusal of a held tool, what the
admin API shows and approves on a running gateway (`PinOps`), and the upstream listing `agentgw tools lock | diff
| approve` use when they connect to the servers themselves (`fetch_tools`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from agentgw.errors import Forbidden, GatewayError, NotFound
from agentgw.exchange import Exchange, Principal, task_from_headers
from agentgw.mcp.catalog.naming import canonical, split_canonical
from agentgw.mcp.catalog.pinning import Change, Pins, canonical_form, fingerprint
from agentgw.mcp.catalog.scan import scan_tool

if TYPE_CHECKING:
    from agentgw.mcp.catalog.catalog import Catalog, Entry
    from agentgw.settings import Settings

log = logging.getLogger("agentgw.mcp.pinning")

Record = Callable[[Exchange], Awaitable[None]]


class ToolHeld(Forbidden):
    """A tool pinning holds back (changed since pinned, new, or flagged under `scan: hide`)."""

    code = "tool_not_approved"


def note_pins(ex: Exchange, entries: Iterable[Entry]) -> None:
    """One `pinning` decision per tool pinning had a word on: `hidden` (held back), `warn` (changed or new,
    listed under `mode: warn`) or `marked` (injection markers, listed under `scan: mark`); the rule is the tool's
    registry name, the detail why and the definition's fingerprint."""
    for entry in entries:
        note = entry.pin
        if note is None:
            continue
        outcome = "hidden" if note.hidden else "warn" if note.state in ("changed", "added") else "marked"
        ex.decide("pinning", outcome, rule=canonical(entry.server, entry.original), detail=note.reason)


class PinOps:
    """What `GET /admin/tools` shows (every tool of every server, its pin state against the lock, its scan
    findings, whether the gateway holds it back) and what `POST /admin/tools/{name}/approve` does: pin the
    definition the server lists now (or drop a tool it no longer lists), write the lock, rebuild the listings and
    tell listening callers, all without a restart. Approvals are serialized; each is an audit record naming the
    approver. Fails with 404 (unknown tool), 503 (its server cannot be listed) and 409 (the definition is not the
    one the operator reviewed, when a fingerprint is given)."""

    def __init__(
        self,
        catalog: Catalog,
        pins: Pins,
        announce: Callable[[set[str]], None],
        record: Record | None = None,
    ) -> None:
        self.catalog = catalog
        self.pins = pins
        self.announce = announce
        self.record = record
        self._lock = anyio.Lock()

    async def _listed(self, servers: list[str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        listed: dict[str, list[dict[str, Any]]] = {}
        failed: dict[str, str] = {}

        async def one(server: str) -> None:
            got = await self.catalog.listing(server, "tools", "fresh")
            if got is None:
                failed[server] = self.catalog.failure(server) or "unavailable"
            else:
                listed[server] = got.items

        async with anyio.create_task_group() as tg:
            for server in servers:
                tg.start_soon(one, server)
        return listed, failed

    async def tools(self) -> dict[str, Any]:
        self.pins.refresh()
        listed, failed = await self._listed(sorted(self.catalog.upstreams.by_name))
        rows: list[dict[str, Any]] = []
        pins = self.pins
        for server in sorted(listed):
            now = {t["name"]: t for t in listed[server] if isinstance(t.get("name"), str)}
            pinned = pins.lock.servers.get(server, {})
            for tool in sorted(now.keys() | pinned.keys()):
                item, pin = now.get(tool), pinned.get(tool)
                fp = fingerprint(item) if item is not None else None
                state = pins.state(server, tool, fp) if fp is not None else "removed"
                note = pins.check(server, item, item) if item is not None else None
                change = Change(
                    server,
                    tool,
                    "changed",
                    pin.definition if pin else None,
                    canonical_form(item) if item else None,
                )
                rows.append(
                    {
                        "name": canonical(server, tool),
                        "server": server,
                        "tool": tool,
                        "state": state,
                        "fingerprint": fp,
                        "pinned_fingerprint": pin.fingerprint if pin else None,
                        "held": bool(note is not None and note.hidden),
                        "findings": [f.as_dict() for f in scan_tool(item)] if item is not None else [],
                        "diff": change.lines() if state == "changed" else [],
                    }
                )
        return {
            "mode": pins.mode,
            "scan": pins.scan,
            "lock_file": str(pins.path),
            "lock_error": pins.error,
            "tools": rows,
            "unavailable": failed,
        }

    async def approve(
        self, name: str, principal: Principal, headers: dict[str, str], expected: str | None = None
    ) -> dict[str, Any]:
        split = split_canonical(name)
        if split is None or split[0] not in self.catalog.upstreams.by_name:
            raise NotFound(f"Unknown tool: {name}", code="unknown_tool")
        server, tool = split
        listed, failed = await self._listed([server])
        if server in failed:
            raise GatewayError(
                f"MCP server {server!r} cannot be listed ({failed[server]}); approve when it is back.",
                status=503,
                code="mcp_server_unavailable",
            )
        current = next((t for t in listed[server] if t.get("name") == tool), None)
        async with self._lock:
            self.pins.refresh()  # another worker or the CLI may have approved something meanwhile
            if current is None and self.pins.lock.get(server, tool) is None:
                raise NotFound(f"Unknown tool: {name}", code="unknown_tool")
            fp = fingerprint(current) if current is not None else None
            if expected is not None and expected != fp:
                raise GatewayError(
                    f"Tool {name} is now {fp or 'gone'}, not the {expected} you reviewed; review it again.",
                    status=409,
                    code="tool_changed_again",
                )
            self.pins.approve(server, tool, current)
            await anyio.to_thread.run_sync(self.pins.save)
        self.catalog.repinned()
        self.announce({server})
        state = "pinned" if current is not None else "unpinned"
        log.warning("MCP tool %s %s by %s (%s)", name, state, principal.subject, fp or "removed")
        if self.record is not None:
            ex = Exchange("mcp", "tools/approve", f"mcp:{server}/{tool}", {})
            ex.principal = principal
            ex.task = task_from_headers(headers)
            ex.decide("pinning", "approve", rule=name, detail=f"{state} {fp or ''}".strip())
            ex.status = "ok"
            await self.record(ex)
        return {"name": name, "state": state, "fingerprint": fp, "approved_by": principal.subject}


async def fetch_tools(
    settings: Settings, only: set[str] | None = None
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Every configured MCP server's tools (server → tools as listed), connecting to each the way the gateway
    would (a stdio server is launched for the occasion; one the gateway supervises with `command:` must be
    running), and why each server that could not be listed failed."""
    from agentgw.mcp.catalog.catalog import Catalog
    from agentgw.mcp.upstream.upstream import Upstreams

    section = settings.registry_data.mcp
    servers = [s for s in section.servers if only is None or s.name in only]

    def cwd_of(server: Any) -> Path:
        return settings.resolve(server.cwd) if server.cwd else settings.base_dir

    upstreams = Upstreams(servers, cwd_of, lambda server, kind: None)
    catalog = Catalog(section.model_copy(update={"servers": servers}), upstreams)
    listed: dict[str, list[dict[str, Any]]] = {}
    failed: dict[str, str] = {}
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        upstreams.start(tg)

        async def one(name: str) -> None:
            got = await catalog.listing(name, "tools", "fresh")
            if got is None:
                failed[name] = catalog.failure(name) or "unavailable"
            else:
                listed[name] = got.items

        async with anyio.create_task_group() as inner:
            for spec in servers:
                inner.start_soon(one, spec.name)
        tg.cancel_scope.cancel()
    log.debug("listed %d MCP servers in %.2fs", len(servers), time.monotonic() - started)
    return listed, failed
