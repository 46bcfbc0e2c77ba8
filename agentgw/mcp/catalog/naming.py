"""Naming on the aggregated MCP endpoints: `<server>__<tool>`, prefix modes, per-server trimming (include,
exclude, rename, descriptions, tags), virtual-server selection, the `agentgw://` resource URI scheme, and the
static collision check `agentgw check-config` runs. Pure functions over the registry: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from agentgw.registry import MCPSection, Registry, ToolTrim

SEP = "__"
RESOURCE_SCHEME = "agentgw://"
TAGS_META_KEY = "io.agentgw/tags"
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # the MCP spec's recommended tool-name alphabet

Prefix = Literal["always", "never", "conditional"]


def canonical(server: str, name: str) -> str:
    """The unambiguous id of a tool or prompt across the gateway (server names contain no `_`)."""
    return f"{server}{SEP}{name}"


def split_canonical(name: str) -> tuple[str, str] | None:
    server, sep, rest = name.partition(SEP)
    return (server, rest) if sep and server and rest else None


def wrap_uri(server: str, uri: str) -> str:
    """`agentgw://<server>/<original URI, verbatim>`. Verbatim (not percent-encoded) so resource templates keep
    working: `agentgw://docs/file:///{path}` expands to `agentgw://docs/file:///README.md`."""
    return f"{RESOURCE_SCHEME}{server}/{uri}"


def unwrap_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith(RESOURCE_SCHEME):
        return None
    server, slash, original = uri[len(RESOURCE_SCHEME) :].partition("/")
    return (server, original) if slash and server and original else None


class Trim:
    """A server's `tools:` block, compiled: which upstream tools are exposed, under which name, described how."""

    def __init__(self, trim: ToolTrim) -> None:
        self.include = tuple(trim.include)
        self.exclude = tuple(trim.exclude)
        self.rename = dict(trim.rename)
        self.reverse = {new: old for old, new in trim.rename.items()}
        self.descriptions = dict(trim.descriptions)
        self.tags = {k: list(v) for k, v in trim.tags.items()}

    def exposed(self, original: str) -> str | None:
        """The tool's name after rename, or None when include/exclude trims it (globs match either name)."""
        name = self.rename.get(original, original)
        names = (original, name)
        if self.include and not any(fnmatchcase(n, g) for n in names for g in self.include):
            return None
        if any(fnmatchcase(n, g) for n in names for g in self.exclude):
            return None
        return name

    def original(self, name: str) -> str:
        return self.reverse.get(name, name)

    def description(self, original: str, name: str) -> str | None:
        return self.descriptions.get(name, self.descriptions.get(original))

    def tags_for(self, original: str, name: str) -> list[str] | None:
        return self.tags.get(name, self.tags.get(original))


@dataclass(frozen=True, slots=True)
class View:
    """One endpoint: `/mcp` (every server, always prefixed) or `/mcp/<virtual server>` (the tools, prompts and
    resources whose canonical id `<server>__<name or uri>` matches one of its globs)."""

    name: str  # "" for /mcp
    prefix: Prefix
    globs: tuple[str, ...] | None  # None: everything
    servers: tuple[str, ...]  # sorted: the servers that can contribute (only those are listed)

    def selects(self, canonical_id: str) -> bool:
        return self.globs is None or any(fnmatchcase(canonical_id, g) for g in self.globs)


def views(section: MCPSection) -> dict[str, View]:
    """Every endpoint the registry defines, keyed by the path segment after /mcp ("" for /mcp itself)."""
    names = sorted(s.name for s in section.servers)
    out = {"": View("", "always", None, tuple(names))}
    for vs in section.virtual_servers:
        servers = sorted({s for s in names for g in vs.tools if _may_match(s, g)})
        out[vs.name] = View(vs.name, vs.prefix, tuple(vs.tools), tuple(servers))
    return out


def _may_match(server: str, glob: str) -> bool:
    head, sep, _ = glob.partition(SEP)
    if not sep:  # e.g. "*search*": the server part is not separated out, so any server may match
        return any(c in glob for c in "*?[")
    return fnmatchcase(server, head)


def tool_tags(section: MCPSection) -> dict[str, frozenset[str]]:
    """Registry tool tags keyed by policy object, `mcp:<server>/<original tool name>` (the name policies and audit
    use), whether the registry keyed them by the original or the renamed name (`tag:<t>` objects in policies)."""
    out: dict[str, frozenset[str]] = {}
    for server in section.servers:
        reverse = {new: old for old, new in server.tools.rename.items()}
        for name, tags in server.tools.tags.items():
            key = f"mcp:{server.name}/{reverse.get(name, name)}"
            out[key] = out.get(key, frozenset()) | frozenset(tags)
    return out


def tool_costs(section: MCPSection) -> dict[str, int]:
    """Registry per-tool budget costs keyed by policy object, like `tool_tags`."""
    out: dict[str, int] = {}
    for server in section.servers:
        reverse = {new: old for old, new in server.tools.rename.items()}
        for name, cost in server.tools.costs.items():
            out[f"mcp:{server.name}/{reverse.get(name, name)}"] = cost
    return out


def check_collisions(registry: Registry) -> list[str]:
    """Naming problems the registry alone reveals, one line each (tools themselves are only known at runtime):
    rename targets that collide within a server or are not valid tool names, and names that two servers would
    both expose unprefixed on a `prefix: never` virtual server (explicit tool globs and rename targets)."""
    problems: list[str] = []
    section = registry.mcp
    for server in section.servers:
        seen: dict[str, str] = {}
        where = f"mcp.servers[{server.name}].tools.rename"
        for old, new in server.tools.rename.items():
            if not TOOL_NAME.match(new):
                problems.append(f"{where}.{old}: {new!r} is not a valid tool name (A-Z a-z 0-9 _ . -, 1-128)")
            if new in seen:
                problems.append(f"{where}: {seen[new]!r} and {old!r} are both renamed to {new!r}")
            else:
                seen[new] = old
    by_server = {s.name: s for s in section.servers}
    for vs in section.virtual_servers:
        if vs.prefix != "never":
            continue
        known: dict[str, set[str]] = {}  # exposed name → servers that would expose it
        for glob in vs.tools:
            split = split_canonical(glob)
            if split is None:
                continue
            server_glob, tool_glob = split
            for name, server in by_server.items():
                if not fnmatchcase(name, server_glob):
                    continue
                if not any(c in tool_glob for c in "*?["):
                    known.setdefault(tool_glob, set()).add(name)
                for new in server.tools.rename.values():
                    if fnmatchcase(new, tool_glob):
                        known.setdefault(new, set()).add(name)
        for tool, servers in sorted(known.items()):
            if len(servers) > 1:
                problems.append(
                    f"mcp.virtual_servers[{vs.name}]: tool {tool!r} would be exposed by "
                    f"{', '.join(sorted(servers))} (prefix: never); rename one or use prefix: conditional"
                )
    return problems
