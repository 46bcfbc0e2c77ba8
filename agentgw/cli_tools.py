"""`agentgw tools lock | diff | approve`: pinned MCP tool definitions from the command line (docs/mediation.md).
Exit codes: 0 ok (for `diff`: nothing changed), 1 differences or a refused approval, 2 usage or a server that
cannot be listed, 3 configuration problems."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson

from agentgw.cli_support import config_option, load_or_exit
from agentgw.settings import Settings


@click.group()
def tools() -> None:
    """Pinned MCP tool definitions: lock, diff, approve (docs/mediation.md). `lock`, `diff` and `approve` connect
    to the configured MCP servers themselves; `approve --url` asks a running gateway instead."""


def _offered(
    config: str, only: set[str] | None = None
) -> tuple[Settings, dict[str, list[dict[str, Any]]], dict[str, str]]:
    """The settings and each configured MCP server's tools as listed now; unreachable servers on stderr."""
    import asyncio

    settings = load_or_exit(config)
    names = {s.name for s in settings.registry_data.mcp.servers}
    unknown = sorted((only or set()) - names)
    if unknown:
        click.echo(f"no MCP server named {', '.join(unknown)} in the registry", err=True)
        sys.exit(2)
    if not names:
        click.echo("the registry configures no MCP server", err=True)
        sys.exit(2)
    from agentgw.mcp.catalog.pinops import fetch_tools

    listed, failed = asyncio.run(fetch_tools(settings, only))
    for server, why in sorted(failed.items()):
        click.echo(f"{server}: cannot be listed: {why}", err=True)
    return settings, listed, failed


def _lock_path(settings: Settings) -> Path:
    return settings.resolve(settings.tool_pinning.lock_file)


def _read_lock(path: Path) -> Any:
    from agentgw.mcp.catalog.pinning import Lock, LockError

    try:
        return Lock.load(path)
    except LockError as exc:
        click.echo(str(exc), err=True)
        sys.exit(3)


@tools.command("lock")
@click.option("--server", "servers", multiple=True, help="Only this MCP server (repeatable).")
@config_option
def tools_lock(servers: tuple[str, ...], config: str) -> None:
    """Pin the definition of every tool of every configured MCP server (the lock file is rewritten; servers that
    cannot be listed keep their pins, and the exit code is 2)."""
    from agentgw.mcp.catalog.pinning import Lock

    settings, listed, failed = _offered(config, set(servers) or None)
    path = _lock_path(settings)
    lock: Lock = _read_lock(path)
    for server, items in listed.items():
        lock.servers.pop(server, None)
        for item in items:
            if isinstance(item.get("name"), str):
                lock.pin(server, item)
    lock.save(path)
    count = sum(len(lock.servers.get(server, {})) for server in listed)
    click.echo(f"pinned {count} tools of {len(listed)} MCP servers in {path}")
    sys.exit(2 if failed else 0)


@tools.command("diff")
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
@config_option
def tools_diff(as_json: bool, config: str) -> None:
    """What changed upstream since the lock: added, removed and changed tools, field by field. Exit 0 when
    nothing changed, 1 when something did, 2 when a server could not be listed."""
    from agentgw.mcp.catalog.pinning import compare

    settings, listed, failed = _offered(config)
    changes = compare(_read_lock(_lock_path(settings)), listed)
    if as_json:
        click.echo(orjson.dumps([c.as_dict() for c in changes]).decode())
    else:
        for change in changes:
            click.echo(f"{change.kind:8} {change.name}")
            for line in change.lines():
                click.echo(f"    {line}")
        if not changes:
            click.echo(
                "no changes since the lock" + (" (for the servers that could be listed)" if failed else "")
            )
    sys.exit(1 if changes else 2 if failed else 0)


@tools.command("approve")
@click.argument("names", nargs=-1)
@click.option("--all", "approve_all", is_flag=True, help="Approve every change (as `diff` shows them).")
@click.option("--url", default=None, help="Approve through a running gateway's admin API at this base URL.")
@click.option(
    "--key", envvar="AGENTGW_ADMIN_KEY", default=None, help="An admin API key ($AGENTGW_ADMIN_KEY)."
)
@config_option
def tools_approve(
    names: tuple[str, ...], approve_all: bool, url: str | None, key: str | None, config: str
) -> None:
    """Pin the current definition of each tool NAME (`<server>__<tool>`), or drop the pin of a tool its server
    no longer lists. With --url the running gateway does it (and applies it at once); without, the lock file is
    updated here (a running gateway picks it up at its next listing)."""
    if bool(names) == approve_all:
        click.echo("name the tools to approve (<server>__<tool>), or pass --all", err=True)
        sys.exit(2)
    if url is not None:
        _approve_remote(names, approve_all, url, key)
        return
    from agentgw.mcp.catalog.naming import split_canonical
    from agentgw.mcp.catalog.pinning import compare

    wanted: dict[str, str] = {}
    for name in names:
        split = split_canonical(name)
        if split is None:
            click.echo(f"{name}: not a registry tool name (<server>__<tool>)", err=True)
            sys.exit(2)
        wanted[name] = split[0]
    settings, listed, failed = _offered(config, set(wanted.values()) or None)
    if failed:
        sys.exit(2)
    path = _lock_path(settings)
    lock = _read_lock(path)
    changes = {c.name: c for c in compare(lock, listed)}
    chosen = list(changes.values()) if approve_all else [changes[n] for n in names if n in changes]
    for name in names:
        if name not in changes:
            split = split_canonical(name)
            assert split is not None
            known = any(t.get("name") == split[1] for t in listed.get(split[0], []))
            click.echo(f"{name}: {'already pinned' if known else 'no such tool'}", err=not known)
            if not known:
                sys.exit(1)
    for change in chosen:
        current = next((t for t in listed[change.server] if t.get("name") == change.tool), None)
        if current is None:
            lock.unpin(change.server, change.tool)
        else:
            lock.pin(change.server, current)
        click.echo(f"approved {change.kind} {change.name}")
    if chosen:
        lock.save(path)


def _approve_remote(names: tuple[str, ...], approve_all: bool, url: str, key: str | None) -> None:
    import httpx

    if not key:
        click.echo("--url needs an admin key (--key or $AGENTGW_ADMIN_KEY)", err=True)
        sys.exit(2)
    base = url.rstrip("/") + "/admin/tools"
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(headers=auth, timeout=30) as http:
            if approve_all:
                listing = http.get(base)
                if listing.status_code != 200:
                    _remote_failed(listing)
                names = tuple(t["name"] for t in listing.json()["tools"] if t["state"] != "pinned")
            for name in names:
                r = http.post(f"{base}/{name}/approve")
                if r.status_code != 200:
                    _remote_failed(r)
                click.echo(f"approved {name}: {r.json()['state']}")
    except httpx.HTTPError as exc:
        click.echo(f"cannot reach {url}: {exc}", err=True)
        sys.exit(2)


def _remote_failed(r: Any) -> NoReturn:
    try:
        message = r.json().get("error", {}).get("message", r.text)
    except ValueError:
        message = r.text
    click.echo(f"{r.status_code}: {message}", err=True)
    sys.exit(1)
