"""Pinned MCP tool definitions: a tool's canonical form and fingerprint, the lock file that pins them
(`registry/tools.lock.yaml`), the comparison of what upstreams offer with it, and `Pins`, which decides per tool
whether an endpoint lists it as is, marks it, or holds it back until an operator approves it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from agentgw.mcp.catalog.naming import canonical as registry_name
from agentgw.mcp.catalog.scan import Finding, scan_tool
from agentgw.metrics import Counter, Metrics
from agentgw.settings import ToolPinning

log = logging.getLogger("agentgw.mcp.pinning")

# What a tool definition is, for pinning: what the model and the user read of it. `_meta` and other extension
# fields are left out (servers stamp them per response); `title` is in (a client shows it).
FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
LOCK_VERSION = 1
_HEADER = (
    "# Pinned MCP tool definitions (agentgw tool_pinning). Written by `agentgw tools lock` and `agentgw tools\n"
    "# approve` (or POST /admin/tools/{name}/approve); review changes with `agentgw tools diff`. Do not edit.\n"
)
_MAX_REPORTED = 10_000
# libyaml when it is there: a lock of a few hundred large tools loads in milliseconds instead of seconds
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

State = Literal["pinned", "changed", "added", "removed"]


def canonical_form(tool: dict[str, Any]) -> dict[str, Any]:
    """The pinned fields of a tool definition, every string (keys too) in Unicode NFC, absent and null fields
    dropped: two definitions a reader cannot tell apart by their fields have the same canonical form."""
    return {k: _nfc(tool[k]) for k in FIELDS if tool.get(k) is not None}


def fingerprint(tool: dict[str, Any]) -> str:
    """`sha256:<hex>` of the canonical form as key-sorted compact JSON."""
    return fingerprint_of(canonical_form(tool))


def fingerprint_of(form: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(orjson.dumps(form, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _nfc(value: Any) -> Any:
    if isinstance(value, str):
        return value if value.isascii() else unicodedata.normalize("NFC", value)
    if isinstance(value, dict):
        return {_nfc(k): _nfc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nfc(v) for v in value]
    return value


class LockError(Exception):
    """The lock file cannot be read (not YAML, or not the lock's shape)."""


@dataclass(slots=True)
class Pin:
    fingerprint: str
    definition: dict[str, Any]  # canonical form


@dataclass(slots=True)
class Lock:
    """The lock file's content: per server, per tool (the server's own name), its pin."""

    servers: dict[str, dict[str, Pin]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Lock:
        """The lock at `path`; an empty one when the file does not exist. Raises LockError."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise LockError(f"{path}: {exc.strerror or exc}") from None
        try:
            raw = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise LockError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
        if raw is None:
            return cls()
        servers = raw.get("servers") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or raw.get("version") != LOCK_VERSION or not isinstance(servers, dict):
            raise LockError(f"{path}: not an agentgw tool lock (version {LOCK_VERSION}, servers: …)")
        out = cls()
        for server, tools in servers.items():
            if not isinstance(server, str) or not isinstance(tools, dict):
                raise LockError(f"{path}: servers.{server}: expected a mapping of tools")
            pins: dict[str, Pin] = {}
            for tool, pin in tools.items():
                fp = pin.get("fingerprint") if isinstance(pin, dict) else None
                definition = pin.get("definition") if isinstance(pin, dict) else None
                if not isinstance(tool, str) or not isinstance(fp, str) or not isinstance(definition, dict):
                    raise LockError(f"{path}: servers.{server}.{tool}: expected fingerprint and definition")
                pins[tool] = Pin(fp, definition)
            out.servers[server] = pins
        return out

    def dump(self) -> str:
        body = {
            "version": LOCK_VERSION,
            "servers": {
                server: {
                    tool: {"fingerprint": pin.fingerprint, "definition": pin.definition}
                    for tool, pin in sorted(tools.items())
                }
                for server, tools in sorted(self.servers.items())
                if tools
            },
        }
        return _HEADER + yaml.dump(body, Dumper=_Dumper, sort_keys=True, allow_unicode=False, width=100)

    def save(self, path: Path) -> None:
        """Write atomically (a temporary file renamed over the lock): readers see the old or the new lock."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tools.lock.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.dump())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, server: str, tool: str) -> Pin | None:
        tools = self.servers.get(server)
        return tools.get(tool) if tools is not None else None

    def pin(self, server: str, tool: dict[str, Any]) -> Pin:
        form = canonical_form(tool)
        pin = self.servers.setdefault(server, {})[str(tool["name"])] = Pin(fingerprint_of(form), form)
        return pin

    def unpin(self, server: str, tool: str) -> None:
        tools = self.servers.get(server)
        if tools is not None:
            tools.pop(tool, None)
            if not tools:
                del self.servers[server]


@dataclass(slots=True)
class Change:
    """One difference between the lock and what a server offers now."""

    server: str
    tool: str
    kind: Literal["added", "removed", "changed"]
    old: dict[str, Any] | None  # canonical forms
    new: dict[str, Any] | None

    @property
    def name(self) -> str:
        return registry_name(self.server, self.tool)

    def lines(self) -> list[str]:
        """A readable field diff: `description: - old` / `+ new`, schema paths added, removed or changed."""
        if self.old is None or self.new is None:
            return []
        out: list[str] = []
        flat_old, flat_new = _flat(self.old), _flat(self.new)
        for path in sorted(flat_old.keys() | flat_new.keys()):
            before, after = flat_old.get(path, _MISSING), flat_new.get(path, _MISSING)
            if before == after:
                continue
            out.append(f"{path}:")
            if before is not _MISSING:
                out.append(f"  - {_show(before)}")
            if after is not _MISSING:
                out.append(f"  + {_show(after)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "tool": self.tool,
            "change": self.kind,
            "diff": self.lines(),
        }


_MISSING: Any = object()


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{path}.{key}" if path else str(key)))
        return out
    return {path: value}


def _show(value: Any) -> str:
    """A value as one line, with characters a reader cannot see spelled out (`<U+200B>`)."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return "".join(
        ch if ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Co") else f"<U+{ord(ch):04X}>"
        for ch in text
    )


def compare(lock: Lock, offered: dict[str, list[dict[str, Any]]]) -> list[Change]:
    """What changed in each server of `offered` (server → its tools as listed) since `lock`, by server then
    tool. Servers missing from `offered` (not reachable) are not compared."""
    changes: list[Change] = []
    for server in sorted(offered):
        now = {str(t["name"]): canonical_form(t) for t in offered[server] if isinstance(t.get("name"), str)}
        pinned = lock.servers.get(server, {})
        for tool in sorted(now.keys() | pinned.keys()):
            form, pin = now.get(tool), pinned.get(tool)
            if pin is None:
                changes.append(Change(server, tool, "added", None, form))
            elif form is None:
                changes.append(Change(server, tool, "removed", pin.definition, None))
            elif fingerprint_of(form) != pin.fingerprint:
                changes.append(Change(server, tool, "changed", pin.definition, form))
    return changes


@dataclass(frozen=True, slots=True)
class Note:
    """What pinning says of one listed tool: its state against the lock, injection findings, and whether the
    endpoints hold it back (`hidden`) or mark it."""

    state: State | None  # None: pins are not checked (mode off)
    fingerprint: str
    findings: tuple[Finding, ...]
    hidden: bool

    @property
    def reason(self) -> str:
        parts = []
        if self.state in ("changed", "added"):
            parts.append("changed since it was pinned" if self.state == "changed" else "not pinned yet")
        if self.findings:
            parts.append("injection markers: " + ", ".join(sorted({f.kind for f in self.findings})))
        return "; ".join(parts)

    def message(self, name: str) -> str:
        """What a caller of a held tool is told."""
        kinds = ", ".join(sorted({f.kind for f in self.findings}))
        also = f" Its definition also has injection markers ({kinds})." if kinds else ""
        if self.state == "changed":
            return f"Tool {name} changed since it was pinned; an operator must approve it.{also}"
        if self.state == "added":
            return f"Tool {name} is new and not pinned yet; an operator must approve it.{also}"
        return f"Tool {name} is withheld: its definition has injection markers ({kinds}); an operator must review it."


FLAGS_META_KEY = "io.agentgw/flags"


class Pins:
    """Decides, per upstream tool, what `tool_pinning` makes of it. `enforce`: a tool whose fingerprint is not the
    lock's (changed, or new) is hidden from listings and refused; `warn`: listed and callable, logged and counted;
    `off`: not checked. Independently, `scan: hide` hides a tool with injection markers, `mark` lists it with a
    warning in front of its description and the marker kinds in `_meta["io.agentgw/flags"]`.

    The lock is re-read when its file changes (checked at listings and on unknown names, so an approval written
    by `agentgw tools approve` or another worker applies without a restart). A lock file that cannot be read
    keeps the last good one (none at start: everything is unpinned, so `enforce` holds every tool: fail closed).
    """

    def __init__(self, cfg: ToolPinning, path: Path, metrics: Metrics | None = None) -> None:
        self.mode = cfg.mode
        self.scan = cfg.scan
        self.path = path
        self.lock = Lock()
        self.version = 0  # bumped whenever what Pins decides may have changed (a new lock)
        self.error: str | None = None  # why the lock file could not be read, last time it was tried
        self._sig: tuple[int, int, int] | None = None
        self._reported: set[tuple[str, str, str]] = set()
        # Rebuilding a view re-checks every tool (a listing refetched, new pins): the last listing's fingerprints
        # (by the item objects themselves) and scans (by fingerprint and the exposed name and description, all
        # the registry's decoration can change) are remembered, so a rebuild costs lookups, not hashing.
        self._fps: dict[str, dict[int, tuple[dict[str, Any], str]]] = {}
        self._scans: dict[tuple[str, Any, Any], tuple[Finding, ...]] = {}
        self.changes: Counter | None = (
            metrics.counter(
                "agentgw_tool_pin_changes_total",
                "MCP tool definitions that differ from the pinned ones, by server and change (added, changed, "
                "removed); each distinct definition counted once.",
                ("server", "change"),
            )
            if metrics is not None
            else None
        )
        if self.active:
            self.refresh()
            if self.mode == "enforce" and not self.lock.servers and self.error is None:
                log.warning(
                    "tool_pinning.mode is enforce and %s pins no tool: every MCP tool is held until approved "
                    "(run `agentgw tools lock`)",
                    path,
                )

    @property
    def active(self) -> bool:
        return self.mode != "off" or self.scan != "off"

    def refresh(self) -> bool:
        """Re-read the lock file if it changed since it was read. True when a new lock is in effect."""
        try:
            st = self.path.stat()
            sig: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            sig = None
        if sig == self._sig and self.version:
            return False
        self._sig = sig
        try:
            lock = Lock.load(self.path)
        except LockError as exc:
            if self.error != str(exc):
                log.error("tool pins not reloaded, keeping the last good ones: %s", exc)
            self.error = str(exc)
            self.version = max(self.version, 1)
            return False
        self.error = None
        self.lock = lock
        self.version += 1
        return True

    def state(self, server: str, tool: str, fp: str) -> State:
        pin = self.lock.get(server, tool)
        return "added" if pin is None else "pinned" if pin.fingerprint == fp else "changed"

    def observe(self, server: str, items: list[dict[str, Any]]) -> None:
        """A fresh tool listing of `server`: each definition that differs from the lock is logged and counted,
        once per distinct definition (the gateway lists often; a change is one event)."""
        self._fps[server] = {id(item): (item, fingerprint(item)) for item in items}
        if self.mode == "off":
            return
        listed: set[str] = set()
        for item in items:
            name = item.get("name")
            if isinstance(name, str):
                listed.add(name)
                fp = self._fingerprint(server, item)
                state = self.state(server, name, fp)
                if state != "pinned":
                    self._report(server, name, state, fp)
        for tool in self.lock.servers.get(server, {}).keys() - listed:
            self._report(server, tool, "removed", "")

    def counts(self, server: str, items: list[dict[str, Any]]) -> dict[str, int]:
        """How many of the server's listed tools are pinned as listed, changed since pinned, or new (`added`), and
        how many pinned tools it no longer lists (`removed`)."""
        out = {"pinned": 0, "changed": 0, "added": 0, "removed": 0}
        listed = {item["name"] for item in items if isinstance(item.get("name"), str)}
        for item in items:
            if isinstance(item.get("name"), str):
                out[self.state(server, item["name"], self._fingerprint(server, item))] += 1
        out["removed"] = len(self.lock.servers.get(server, {}).keys() - listed)
        return out

    def _report(self, server: str, tool: str, change: str, fp: str) -> None:
        key = (server, tool, fp or change)
        if key in self._reported:
            return
        if len(self._reported) >= _MAX_REPORTED:
            self._reported.clear()
        self._reported.add(key)
        if self.changes is not None:
            self.changes.inc((server, change))
        held = self.mode == "enforce" and change != "removed"
        log.warning(
            "MCP tool %s %s since it was pinned (%s)%s",
            registry_name(server, tool),
            "appeared" if change == "added" else change if change != "removed" else "disappeared",
            fp or "no definition",
            "; held until an operator approves it" if held else "",
        )

    def check(self, server: str, upstream: dict[str, Any], exposed: dict[str, Any]) -> Note | None:
        """What to do with one tool as the upstream listed it (`exposed`: as an endpoint shows it, after the
        registry's renames and descriptions, which is what the scan reads). None: list it as is."""
        name = upstream.get("name")
        fp = self._fingerprint(server, upstream)
        state: State | None = None
        if self.mode != "off" and isinstance(name, str):
            state = self.state(server, name, fp)
        findings = self._scan(fp, exposed) if self.scan != "off" else ()
        if state in (None, "pinned") and not findings:
            return None
        hidden = (self.mode == "enforce" and state in ("changed", "added")) or (
            self.scan == "hide" and bool(findings)
        )
        return Note(state, fp, findings, hidden)

    def _fingerprint(self, server: str, item: dict[str, Any]) -> str:
        hit = self._fps.get(server, {}).get(id(item))
        return hit[1] if hit is not None and hit[0] is item else fingerprint(item)

    def _scan(self, fp: str, exposed: dict[str, Any]) -> tuple[Finding, ...]:
        key = (fp, exposed.get("name"), exposed.get("description"))
        found = self._scans.get(key)
        if found is None:
            if len(self._scans) >= _MAX_REPORTED:
                self._scans.clear()
            found = self._scans[key] = tuple(scan_tool(exposed))
        return found

    def mark(self, item: dict[str, Any], note: Note) -> dict[str, Any]:
        """The listed form of a flagged tool under `scan: mark`."""
        if not note.findings or self.scan != "mark":
            return item
        kinds = sorted({f.kind for f in note.findings})
        meta = item.get("_meta")
        out = {**item, "_meta": {**(meta if isinstance(meta, dict) else {}), FLAGS_META_KEY: kinds}}
        description = item.get("description")
        warning = f"[agentgw: this description may contain instructions to the model ({', '.join(kinds)})]"
        out["description"] = f"{warning} {description}" if isinstance(description, str) else warning
        return out

    def approve(self, server: str, tool: str, current: dict[str, Any] | None) -> Pin | None:
        """Pin `current` (the tool as its server lists it now), or unpin a tool the server no longer lists
        (`current` None). The caller saves the lock (`save`)."""
        if current is None:
            self.lock.unpin(server, tool)
            pin = None
        else:
            pin = self.lock.pin(server, current)
        self.version += 1
        return pin

    def save(self) -> None:
        self.lock.save(self.path)
        try:
            st = self.path.stat()
            self._sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:  # pragma: no cover - just written
            self._sig = None
