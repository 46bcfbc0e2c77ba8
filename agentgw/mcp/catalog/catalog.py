"""The merged catalog behind each MCP endpoint: per-upstream listings (cached, honouring `ttlMs`, invalidated by
list-changed notifications and reconnects), merged into one deterministic view per endpoint, and the reverse
lookup from an exposed name (or `agentgw://` URI) to the server and its original name.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from mcp.shared.inbound import x_mcp_header_map

from agentgw.errors import GatewayError
from agentgw.mcp.catalog.naming import (
    TAGS_META_KEY,
    Trim,
    View,
    canonical,
    split_canonical,
    unwrap_uri,
    wrap_uri,
)
from agentgw.mcp.catalog.pinning import Note, Pins
from agentgw.mcp.errors import METHOD_NOT_FOUND, UpstreamRPCError
from agentgw.mcp.upstream.upstream import ParamMap, Upstreams
from agentgw.registry import MCPSection

log = logging.getLogger("agentgw.mcp")

Kind = Literal["tools", "prompts", "resources", "templates"]
# kind → (list method, result field, item key, capability)
_KINDS: dict[str, tuple[str, str, str, str]] = {
    "tools": ("tools/list", "tools", "name", "tools"),
    "prompts": ("prompts/list", "prompts", "name", "prompts"),
    "resources": ("resources/list", "resources", "uri", "resources"),
    "templates": ("resources/templates/list", "resourceTemplates", "uriTemplate", "resources"),
}
DEFAULT_TTL_S = (
    60.0  # handshake-era servers give no ttlMs; list-changed notifications still invalidate sooner
)
UNOFFERED_TTL_S = 3600.0  # a kind the server does not offer (re-checked on reconnect anyway)
RECHECK_S = 1.0  # an unknown name re-lists the server, at most this often
MAX_PAGES = 100
WARN_EVERY_S = 30.0

Freshness = Literal["cached", "fresh", "recheck"]


@dataclass(slots=True)
class Listing:
    items: list[dict[str, Any]]
    fetched: float
    expires: float
    gen: int


@dataclass(slots=True, eq=False)
class Entry:
    """One tool, prompt, resource or template as an endpoint exposes it."""

    kind: str
    server: str
    original: str  # the upstream's name, URI or URI template
    exposed: str
    item: dict[str, Any]  # as exposed (renamed, described, tagged); shared, never mutated
    upstream: dict[str, Any]  # as the upstream listed it
    _param_map: ParamMap | None = field(default=None, repr=False)
    _param_map_done: bool = field(default=False, repr=False)
    pin: Note | None = field(
        default=None, repr=False
    )  # what tool pinning says of a listed tool (None: nothing)

    @property
    def target(self) -> str:
        """The policy and audit object: `mcp:<server>/<tool>`, `…/prompt/<name>`, `…/resource/<uri>`."""
        infix = "" if self.kind == "tools" else "prompt/" if self.kind == "prompts" else "resource/"
        return f"mcp:{self.server}/{infix}{self.original}"

    def param_map(self) -> ParamMap | None:
        """`x-mcp-header` annotations of the upstream schema (for the upstream's `Mcp-Param-*` headers)."""
        if not self._param_map_done:
            schema = self.upstream.get("inputSchema")
            self._param_map = x_mcp_header_map(schema) or None if isinstance(schema, dict) else None
            self._param_map_done = True
        return self._param_map


@dataclass(slots=True)
class Built:
    key: tuple[tuple[str, int | None], ...]
    entries: list[Entry]
    index: dict[str, Entry]
    expires: float
    # tool pinning: tools held back (by exposed name), and every listed or held tool pinning had a word on
    held: dict[str, Entry] = field(default_factory=dict)
    noted: list[Entry] = field(default_factory=list)


class Catalog:
    """Decides what each endpoint lists and what an exposed name refers to.

    Listings are fetched per upstream and kind, concurrently, single-flight, and cached until their `ttlMs` (or
    DEFAULT_TTL_S for handshake-era servers) or a list-changed notification. An upstream that cannot be listed is
    left out of the view with a (throttled) warning, never failing the listing. Merged order is deterministic:
    by server name, then by name. Two entries exposing the same name keep the first and log the collision.
    """

    def __init__(self, section: MCPSection, upstreams: Upstreams, pins: Pins | None = None) -> None:
        self.upstreams = upstreams
        self.pins = pins  # tool pinning (pinning.py); None when it is off
        self.trims = {s.name: Trim(s.tools) for s in section.servers}
        self._cache: dict[tuple[str, str], Listing] = {}
        self._epoch: dict[tuple[str, str], int] = {}
        self._locks: dict[tuple[str, str], anyio.Lock] = {}
        self._built: dict[tuple[str, str, tuple[str, ...]], Built] = {}
        self._gen = 0
        self._warned: dict[str, float] = {}
        self._errors: dict[str, GatewayError] = {}  # why a server's last listing failed
        self._failed: dict[tuple[str, str], str] = {}  # (server, kind) -> why its last listing of kind failed

    def apply(self, section: MCPSection, changed: set[str]) -> None:
        """A reloaded registry: new tool trims; the changed servers' listings and every built view are dropped
        (a view's globs may have changed under the same name)."""
        self.trims = {s.name: Trim(s.tools) for s in section.servers}
        for key in [k for k in self._cache if k[0] in changed]:
            del self._cache[key]
        for server in changed:
            self.invalidate(server)
        self._built.clear()
        self._gen += 1

    # -- listings ---------------------------------------------------------------------------------------------

    def invalidate(self, server: str, kind: str | None = None) -> None:
        """A list changed (or the server reconnected): the next listing refetches; lookups may still use the
        stale one until then."""
        kinds = ["tools", "prompts", "resources", "templates"] if kind is None else [kind]
        if kind == "resources":
            kinds.append("templates")
        for k in kinds:
            key = (server, k)
            self._epoch[key] = self._epoch.get(key, 0) + 1
            cur = self._cache.get(key)
            if cur is not None:
                cur.expires = 0.0

    async def listing(self, server: str, kind: str, freshness: Freshness) -> Listing | None:
        key = (server, kind)
        cur = self._cache.get(key)
        if cur is not None and self._usable(cur, freshness):
            return cur
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = anyio.Lock()
        async with lock:
            cur = self._cache.get(key)
            if cur is not None and self._usable(cur, freshness):
                return cur  # a concurrent caller just fetched it
            epoch = self._epoch.get(key, 0)
            try:
                new = await self._fetch(server, kind)
            except GatewayError as err:
                self._warn(server, err)
                self._errors[server] = err
                self._failed[key] = err.message
                return None
            self._errors.pop(server, None)
            self._failed.pop(key, None)
            if self._epoch.get(key, 0) != epoch:
                new.expires = 0.0  # invalidated while we fetched: usable now, refetched next time
            self._cache[key] = new
            if kind == "tools" and self.pins is not None:
                self.pins.observe(server, new.items)
            return new

    def cached(self, server: str, kind: str) -> list[dict[str, Any]] | None:
        """The server's last listing of `kind` as it listed it, however old (None: never listed); fetches nothing."""
        got = self._cache.get((server, kind))
        return got.items if got is not None else None

    def failure(self, server: str) -> str | None:
        """Why the server's last listing of some kind failed (it is left out of those listings), or None."""
        return next((why for (name, _), why in self._failed.items() if name == server), None)

    @staticmethod
    def _usable(listing: Listing, freshness: Freshness) -> bool:
        if freshness == "cached":
            return True
        now = time.monotonic()
        if freshness == "fresh":
            return now < listing.expires
        return now - listing.fetched < RECHECK_S

    async def _fetch(self, server: str, kind: str) -> Listing:
        up = self.upstreams.get(server)
        if up is None:  # pragma: no cover - views only name registry servers
            raise GatewayError(f"unknown MCP server {server!r}")
        method, result_field, _, capability = _KINDS[kind]
        now = time.monotonic()
        self._gen += 1
        if capability not in await up.kinds():
            return Listing([], now, now + UNOFFERED_TTL_S, self._gen)
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        ttl_ms: int | None = None
        for _ in range(MAX_PAGES):
            try:
                result = await up.request(method, {"cursor": cursor} if cursor else {}, idempotent=True)
            except UpstreamRPCError as err:
                if err.rpc_code == METHOD_NOT_FOUND:  # e.g. resources without templates
                    return Listing([], now, now + UNOFFERED_TTL_S, self._gen)
                raise
            page = result.get(result_field)
            if isinstance(page, list):
                items.extend(i for i in page if isinstance(i, dict))
            ttl = result.get("ttlMs")
            if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0:
                ttl_ms = ttl if ttl_ms is None else min(ttl_ms, ttl)
            nxt = result.get("nextCursor")
            if not isinstance(nxt, str) or not nxt:
                break
            cursor = nxt
        else:
            log.warning(
                "MCP server %r: %s did not end within %d pages; using what arrived", server, method, MAX_PAGES
            )
        now = time.monotonic()
        ttl_s = ttl_ms / 1000.0 if ttl_ms is not None else DEFAULT_TTL_S
        return Listing(items, now, now + ttl_s, self._gen)

    def _warn(self, server: str, err: GatewayError) -> None:
        now = time.monotonic()
        if now - self._warned.get(server, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[server] = now
            log.warning("MCP server %r left out of listings: %s", server, err.message)

    async def _listings(
        self, servers: tuple[str, ...], kind: str, freshness: Freshness
    ) -> dict[str, Listing]:
        out: dict[str, Listing] = {}
        if len(servers) == 1:
            one = await self.listing(servers[0], kind, freshness)
            return {servers[0]: one} if one is not None else out

        async def fetch(server: str) -> None:
            got = await self.listing(server, kind, freshness)
            if got is not None:
                out[server] = got

        async with anyio.create_task_group() as tg:
            for server in servers:
                tg.start_soon(fetch, server)
        return out

    # -- views ------------------------------------------------------------------------------------------------

    async def entries(self, view: View, kind: str) -> tuple[list[Entry], int]:
        """What `view` lists for `kind` (in order), and for how long (ms) that answer may be cached."""
        if self.pins is not None and kind == "tools":
            self.pins.refresh()  # an approval written by the CLI or another worker applies at the next listing
        listings = await self._listings(view.servers, kind, "fresh")
        built = self._build(view, kind, view.servers, listings)
        return built.entries, max(0, int((built.expires - time.monotonic()) * 1000))

    def noted(self, view: View) -> list[Entry]:
        """The tools pinning had a word on in `view`'s last tools listing (held ones included)."""
        built = self._built.get((view.name, "tools", view.servers))
        return built.noted if built is not None else []

    def repinned(self) -> None:
        """The pins changed (an approval): every view is rebuilt at its next use."""
        self._built.clear()
        self._gen += 1

    def _build(self, view: View, kind: str, servers: tuple[str, ...], listings: dict[str, Listing]) -> Built:
        key = tuple((s, listings[s].gen if s in listings else None) for s in servers)
        if self.pins is not None and kind == "tools":
            key += (("", self.pins.version),)
        cache_key = (view.name, kind, servers)
        cached = self._built.get(cache_key)
        if cached is not None and cached.key == key:
            cached.expires = min((listings[s].expires for s in listings), default=cached.expires)
            return cached
        item_key = _KINDS[kind][2]
        rows: list[tuple[str, str, str, dict[str, Any]]] = []
        for server in servers:
            listing = listings.get(server)
            if listing is None:
                continue
            trim = self.trims[server] if kind == "tools" else None
            for item in listing.items:
                original = item.get(item_key)
                if not isinstance(original, str) or not original:
                    continue
                name = trim.exposed(original) if trim is not None else original
                if name is None or not view.selects(canonical(server, name)):
                    continue
                rows.append((server, original, name, item))
        rows.sort(key=lambda r: (r[0], r[2]))
        counts = Counter(r[2] for r in rows) if view.prefix == "conditional" else None
        entries: list[Entry] = []
        index: dict[str, Entry] = {}
        held: dict[str, Entry] = {}
        noted: list[Entry] = []
        pins = self.pins if kind == "tools" else None
        for server, original, name, item in rows:
            prefixed = view.prefix == "always" or (counts is not None and counts[name] > 1)
            if kind in ("tools", "prompts"):
                exposed = canonical(server, name) if prefixed else name
            else:
                exposed = wrap_uri(server, name) if prefixed else name
            if exposed in index:
                log.warning(
                    "MCP endpoint /mcp/%s: %s %r is exposed by both %r and %r; keeping %r",
                    view.name,
                    kind,
                    exposed,
                    index[exposed].server,
                    server,
                    index[exposed].server,
                )
                continue
            entry = Entry(
                kind,
                server,
                original,
                exposed,
                self._decorate(kind, server, original, name, exposed, item),
                item,
            )
            if pins is not None:
                note = entry.pin = pins.check(server, item, entry.item)
                if note is not None:
                    noted.append(entry)
                    if note.hidden:
                        held[exposed] = entry
                        continue
                    entry.item = pins.mark(entry.item, note)
            index[exposed] = entry
            entries.append(entry)
        expires = min((listings[s].expires for s in listings), default=time.monotonic())
        built = Built(key, entries, index, expires, held, noted)
        self._built[cache_key] = built
        return built

    def _decorate(
        self, kind: str, server: str, original: str, name: str, exposed: str, item: dict[str, Any]
    ) -> dict[str, Any]:
        out = {**item, _KINDS[kind][2]: exposed}
        if kind == "tools":
            trim = self.trims[server]
            description = trim.description(original, name)
            if description is not None:
                out["description"] = description
            tags = trim.tags_for(original, name)
            if tags:
                meta = item.get("_meta")
                out["_meta"] = {**(meta if isinstance(meta, dict) else {}), TAGS_META_KEY: tags}
        return out

    # -- lookups ----------------------------------------------------------------------------------------------

    async def resolve(self, view: View, kind: Literal["tools", "prompts"], exposed: str) -> Entry | None:
        """The tool or prompt an exposed name refers to on `view`, re-listing once on a miss (new tools).
        Raises the upstream's GatewayError when the one server the name points at cannot be listed."""
        if view.prefix == "always":
            split = split_canonical(exposed)
            if split is None or split[0] not in view.servers:
                return None
            servers: tuple[str, ...] = (split[0],)
        else:
            servers = view.servers
        hit: Entry | None = None
        for freshness in ("cached", "recheck"):
            if freshness == "recheck" and self.pins is not None:
                self.pins.refresh()
            listings = await self._listings(servers, kind, freshness)
            hit = self._build(view, kind, servers, listings).index.get(exposed)
            if hit is not None:
                break
        if hit is None and len(servers) == 1 and servers[0] not in listings and servers[0] in self._errors:
            raise self._errors[servers[0]]
        return hit

    async def held(self, view: View, exposed: str) -> Entry | None:
        """The tool pinning holds back under an exposed name on `view` (after `resolve` found nothing)."""
        if self.pins is None:
            return None
        split = split_canonical(exposed) if view.prefix == "always" else None
        servers = (split[0],) if split is not None and split[0] in view.servers else view.servers
        listings = await self._listings(servers, "tools", "cached")
        return self._build(view, "tools", servers, listings).held.get(exposed)

    async def resolve_uri(self, view: View, uri: str, *, templates: bool = False) -> tuple[str, str] | None:
        """(server, original URI) for a URI on `view` (with `templates`: a URI template, for completions).
        Wrapped URIs route by their server (so template expansions work without a listing); bare ones (prefix
        never/conditional) by the servers' listings."""
        wrapped = unwrap_uri(uri)
        if wrapped is not None:
            server, original = wrapped
            if server in view.servers and view.selects(canonical(server, original)):
                return wrapped
            return None
        if view.prefix == "always":
            return None
        kind = "templates" if templates else "resources"
        for freshness in ("cached", "recheck"):
            listings = await self._listings(view.servers, kind, freshness)
            hit = self._build(view, kind, view.servers, listings).index.get(uri)
            if hit is not None:
                return hit.server, hit.original
        offering = [s for s in view.servers if self._offers(s, "resources")]
        if len(offering) == 1 and view.selects(canonical(offering[0], uri)):
            return offering[0], uri  # e.g. a template expansion on the only server with resources
        return None

    def _offers(self, server: str, kind: str) -> bool:
        listing = self._cache.get((server, kind)) or self._cache.get((server, "templates"))
        return listing is not None and bool(listing.items)

    def cached_tool(self, view: View, name: str) -> Entry | None:
        """The tool behind an exposed name, from what is already cached (sync, no listing)."""
        for (view_name, kind, _), built in self._built.items():
            if view_name == view.name and kind == "tools":
                entry = built.index.get(name)
                if entry is not None:
                    return entry
        return None

    def input_schema(self, view: View, name: str) -> dict[str, Any] | None:
        """The upstream input schema behind an exposed tool name, from what is already cached (sync: the SDK
        validates `Mcp-Param-*` headers with it before dispatch)."""
        entry = self.cached_tool(view, name)
        schema = entry.upstream.get("inputSchema") if entry is not None else None
        return schema if isinstance(schema, dict) else None

    def expose_uri(self, view: View, server: str, uri: str) -> str:
        """How `view` names a URI the server returned (in read results, resource links, embedded resources)."""
        if view.prefix == "always":
            return wrap_uri(server, uri)
        if view.prefix == "never":
            return uri
        for (view_name, kind, _), built in self._built.items():
            if view_name == view.name and kind == "resources":
                wrapped = wrap_uri(server, uri)
                if wrapped in built.index:
                    return wrapped
        return uri
