"""What every `agentgw` command module shares: the `--config` option, loading the config (exit 3 with every
problem), and opening the audit store the config names. Kept apart from cli.py so the command modules
(audit/cli.py, cli_tools.py, guardrails/cli.py, approvals/cli.py) import it without an import cycle."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from agentgw.configfile import ConfigError
from agentgw.settings import Settings, load_settings

if TYPE_CHECKING:
    from agentgw.audit.config import AuditOnly
    from agentgw.audit.store import AuditStore

CONFIG_ENV = "AGENTGW_CONFIG"
T = TypeVar("T")

config_option: Callable[[Callable[..., Any]], Callable[..., Any]] = click.option(
    "--config",
    "config",
    default=lambda: os.environ.get(CONFIG_ENV, "agentgw.yaml"),
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Path to agentgw.yaml (default: $AGENTGW_CONFIG, else ./agentgw.yaml).",
)


def exit_with(err: ConfigError) -> NoReturn:
    for p in err.problems:
        click.echo(str(p), err=True)
    sys.exit(3)


def load_or_exit(config: str, host: str | None = None, *, strict: bool = False) -> Settings:
    """The settings, or exit 3 with every problem; `strict` (check-config) also refuses what `serve` only logs."""
    try:
        settings = load_settings(config, host=host)
    except ConfigError as err:
        exit_with(err)
    from agentgw.configcheck import (  # the assembled gateway's own checks (MCP names, policy files)
        ambiguities,
        check,
    )

    problems = check(settings) + (ambiguities(settings) if strict else [])
    if problems:
        exit_with(ConfigError(problems))
    return settings


def audit_or_exit(config: str) -> AuditOnly:
    """The `audit:` section alone: reading the store needs no provider or upstream secrets (exit 3 on problems
    in that section)."""
    from agentgw.audit.config import load_audit_settings

    try:
        return load_audit_settings(config)
    except ConfigError as err:
        exit_with(err)


def scrubbed(config: str, text: str) -> str:
    """Trace output without the secret values this environment knows of (records written before a secret was
    configured, or by a gateway that missed one, are shown clean too)."""
    from agentgw.secrets import audit_scrubber

    s = audit_or_exit(config)
    return audit_scrubber(s.path, s.audit.hmac_key).text(text)


def with_store(config: str, fn: Callable[[AuditStore], Awaitable[T]], settings: AuditOnly | None = None) -> T:
    """Open the configured audit store, run `fn` on it, close it. Exit 2 when it cannot be opened."""
    import asyncio

    from agentgw.audit.factory import open_store

    s = settings or audit_or_exit(config)

    async def run() -> T:
        store = open_store(s.audit, s.resolve)
        try:
            await store.open()
        except Exception as exc:
            click.echo(f"cannot open the audit store ({s.audit.store}): {exc}", err=True)
            sys.exit(2)
        try:
            return await fn(store)
        finally:
            await store.aclose()

    return asyncio.run(run())
