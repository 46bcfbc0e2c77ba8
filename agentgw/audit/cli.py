"""`agentgw trace list|show`: audited workflows from the audit store the config names, as text or JSON."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from agentgw.audit.store import AuditStore
from agentgw.cli_support import config_option, scrubbed, with_store


@click.group()
def trace() -> None:
    """Inspect audited workflows (reads the audit store named by the config)."""


@trace.command("show")
@click.argument("task")
@click.option(
    "--principal", default=None, help="The subject whose task it is ('*': every principal that used the id)."
)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
def trace_show(task: str, principal: str | None, config: str, as_json: bool) -> None:
    """TASK as a tree: every step in order, child tasks of other agents under the step that delegated to them,
    with timing, tokens, cost, decisions and errors. Exit 1 when nothing is recorded for TASK."""
    from agentgw.audit.tree import Ambiguous, render_tree, task_tree

    async def run(store: AuditStore) -> dict[str, Any] | None:
        return await task_tree(store, task, principal)

    try:
        tree = with_store(config, run)
    except Ambiguous as exc:
        click.echo(f"{exc}: pass --principal (or --principal '*' for all of them)", err=True)
        sys.exit(2)
    if tree is None:
        click.echo(f"no audit record names task {task}", err=True)
        sys.exit(1)
    out = orjson.dumps(tree, option=orjson.OPT_INDENT_2).decode() if as_json else render_tree(tree)
    click.echo(scrubbed(config, out))


@trace.command("list")
@click.option("--principal", default=None, help="Only this subject's tasks.")
@click.option(
    "--since", default=None, help="Only tasks with a step since then: 30m, 2h, 7d or an ISO 8601 time."
)
@click.option(
    "--status",
    type=click.Choice(["ok", "error", "denied", "cancelled"]),
    default=None,
    help="Only tasks with a step of this status.",
)
@click.option("--denied", is_flag=True, help="Only tasks with a denied step.")
@click.option("--until", default=None, help="Only tasks started before then (as --since).")
@click.option(
    "--target", default=None, help="Only tasks with a step on this glob: llm:gpt-*, mcp:docs/*, a2a:x."
)
@click.option("--min-cost", default=None, help="Only tasks that cost at least this many USD.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def trace_list(
    principal: str | None,
    since: str | None,
    status: str | None,
    denied: bool,
    until: str | None,
    target: str | None,
    min_cost: str | None,
    limit: int,
    config: str,
    as_json: bool,
) -> None:
    """Recent tasks, newest first: steps, denials, errors, tokens and cost of each."""
    from agentgw.audit.tree import BadQuery, render_list, task_filter, task_list

    try:
        flt = task_filter(principal, since, status, denied, limit, until, target, min_cost)
    except BadQuery as exc:
        raise click.BadParameter(str(exc)) from None

    async def run(store: AuditStore) -> list[dict[str, Any]]:
        return await task_list(store, flt)

    rows = with_store(config, run)
    out = orjson.dumps({"tasks": rows}, option=orjson.OPT_INDENT_2).decode() if as_json else render_list(rows)
    click.echo(scrubbed(config, out))
