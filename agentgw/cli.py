"""The `agentgw` command: serve, check-config, keys, policy, budget, trace, audit, tools, approvals.

Exit codes: 0 ok, 2 usage, 3 configuration problems (one line per problem on stderr).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from agentgw.approvals.cli import approvals
from agentgw.audit.cli import trace
from agentgw.cli_support import (
    CONFIG_ENV,
    audit_or_exit,
    config_option,
    exit_with,
    load_or_exit,
    with_store,
)
from agentgw.cli_tools import tools
from agentgw.configfile import ConfigError
from agentgw.guardrails.cli import guard
from agentgw.settings import Settings, keys_file_of, load_settings, roles_of, worker_problems

if TYPE_CHECKING:
    from agentgw.audit.chain import Prepared
    from agentgw.audit.store import AuditStore


def setup_logging(level: str, fmt: str, settings: Settings | None = None) -> None:
    """Log lines to stderr; with `settings`, every secret value they configure is scrubbed from each line."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):  # one INFO line per upstream MCP request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root.setLevel(level.upper())
    if settings is not None:
        from agentgw.secrets import Scrubber, configured_secrets, scrub_logs

        scrub_logs(Scrubber(configured_secrets(settings)))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import orjson

        out = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


@click.group()
@click.version_option(package_name="agentgw")
def main() -> None:
    """agentgw: one gateway for LLM providers, MCP servers and A2A agents."""


@main.command()
@config_option
@click.option("--host", default=None, help="Override listen.host.")
@click.option("--port", default=None, type=int, help="Override listen.port.")
@click.option("--workers", default=None, type=int, help="Worker processes (override server.workers).")
def serve(config: str, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway (uvicorn with uvloop and httptools)."""
    import uvicorn

    from agentgw.server import configure

    settings = load_or_exit(config, host)
    setup_logging(settings.logging.level, settings.logging.format, settings)
    n = workers or settings.server.workers
    problems = worker_problems(settings, n)
    if problems:
        exit_with(ConfigError(problems))
    kwargs = dict(
        host=host or settings.listen.host,
        port=port if port is not None else settings.listen.port,
        loop="uvloop",
        http=configure(settings.limits),  # httptools, with header size/time and body time limits
        lifespan="on",
        access_log=settings.server.access_log,
        timeout_graceful_shutdown=settings.server.graceful_shutdown_s,
        log_config=None,
        server_header=False,
        date_header=False,
        timeout_keep_alive=30,
    )
    if n > 1:
        os.environ[CONFIG_ENV] = str(Path(config).resolve())
        uvicorn.run("agentgw.cli:app_from_env", factory=True, workers=n, **kwargs)  # type: ignore[arg-type]
    else:
        from agentgw.app import create_app

        uvicorn.run(create_app(settings), **kwargs)  # type: ignore[arg-type]


def app_from_env() -> object:
    """Worker entry point for `--workers N`: each worker loads the same config."""
    from agentgw.app import create_app

    settings = load_settings(os.environ[CONFIG_ENV])
    setup_logging(settings.logging.level, settings.logging.format, settings)
    from agentgw.server import configure

    configure(settings.limits)  # this worker's connections (uvicorn made the protocol class before the app)
    return create_app(settings)


@main.command("check-config")
@config_option
def check_config(config: str) -> None:
    """Validate agentgw.yaml, the registry, the keys and the policy; print every problem (exit 3) or a summary
    (exit 0). Stricter than `serve`: a bare (role) name in the policy that is also a key subject is a problem."""
    s = load_or_exit(config, strict=True)
    reg = s.registry_data
    click.echo(
        f"ok: {len(reg.llm.providers)} providers, {len(reg.llm.models)} models, {len(reg.mcp.servers)} MCP servers, "
        f"{len(reg.a2a.agents)} agents, {len(s.all_keys)} API keys"
    )


@main.group()
def keys() -> None:
    """Manage API keys (only their SHA-256 is stored)."""


@keys.command("create")
@click.option("--subject", required=True, help="The principal the key authenticates as.")
@click.option("--role", "roles", multiple=True, help="A role (repeatable).")
@click.option("--name", default=None, help="A label for the key.")
@config_option
@click.option(
    "--keys-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Where to store the hash (default: auth.keys_file of the config, else keys.yaml beside it).",
)
def keys_create(
    subject: str, roles: tuple[str, ...], name: str | None, config: str, keys_file: str | None
) -> None:
    """Create a key; print it once; store only its hash. A subject named like a role is refused."""
    from agentgw.keys import append_key

    try:
        path = Path(keys_file) if keys_file is not None else keys_file_of(config)
        key = append_key(path, subject, list(roles), name, frozenset(roles_of(config)))
    except ConfigError as err:
        exit_with(err)
    click.echo(key)
    click.echo(f"stored the hash for subject {subject!r} in {path}; the key is not shown again", err=True)


@main.group()
def policy() -> None:
    """Inspect the authorization policy."""


@policy.command("check")
@click.argument("subject")
@click.argument("object_")
@click.argument("action")
@click.option(
    "--role",
    "roles",
    multiple=True,
    help="A role of the subject (repeatable); default: the roles its API keys carry.",
)
@click.option(
    "--args",
    "args_json",
    default=None,
    help="The call's arguments as JSON, for conditional lines (`args` in the condition); without it, conditions "
    "that read arguments fail closed.",
)
@config_option
def policy_check(
    subject: str, object_: str, action: str, roles: tuple[str, ...], args_json: str | None, config: str
) -> None:
    """Would SUBJECT be allowed ACTION on OBJECT? SUBJECT is a subject (`alice` or `user:alice`) or a role alone
    (`role:admins`). Prints allowed/denied (with the effect when it holds the call: approve, confirm) and the
    deciding policy line. Exit 0 when allowed, 1 when denied."""
    from agentgw.names import parse_who
    from agentgw.parts import policy_store

    settings = load_or_exit(config)
    sub, role_alone = parse_who(subject)
    if role_alone:
        roles = (*role_alone, *roles)
    elif not roles:
        roles = tuple(dict.fromkeys(r for k in settings.all_keys if k.subject == sub for r in k.roles))
    store = policy_store(settings)
    facts = None
    if args_json is not None:
        try:
            args = orjson.loads(args_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--args") from None
        claims: dict[str, Any] = {}
        facts = {
            "args": args,
            "principal": {"sub": sub, "roles": list(roles), "claims": claims},
            "task": {},
            "target": object_,
        }
    d = store.decide(sub, roles, object_, action, facts)
    verdict = ("allowed" if d.effect == "allow" else f"allowed ({d.effect})") if d.allowed else "denied"
    roles_text = ", ".join(roles) or "none"
    who = f"role {roles_text}" if sub is None else f"{sub} (roles: {roles_text})"
    click.echo(f"{verdict}: {who} {action} {object_}")
    if d.rule is not None:
        click.echo(f"  by {store.policy_path}:{d.line}: {d.rule}")
    elif d.unmet:
        click.echo(f"  by default deny: the conditions of lines {', '.join(map(str, d.unmet))} do not hold")
    else:
        click.echo("  by default deny: no policy line matched")
    for error in d.errors:
        click.echo(f"  condition failed (fails closed): {error}")
    sys.exit(0 if d.allowed else 1)


@main.group()
def budget() -> None:
    """Inspect task budgets (through a running gateway's admin API)."""


@budget.command("show")
@click.argument("task")
@click.option(
    "--principal", default=None, help="The subject that owns the task (not needed for c-… child ids)."
)
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The gateway's base URL.")
@click.option(
    "--key", envvar="AGENTGW_ADMIN_KEY", required=True, help="An admin API key ($AGENTGW_ADMIN_KEY)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def budget_show(task: str, principal: str | None, url: str, key: str, as_json: bool) -> None:
    """Limits, spent, reserved and children of TASK."""
    import httpx

    params = {"principal": principal} if principal else {}
    try:
        r = httpx.get(
            f"{url.rstrip('/')}/admin/tasks/{task}/budget",
            params=params,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        click.echo(f"cannot reach {url}: {exc}", err=True)
        sys.exit(2)
    if r.status_code != 200:
        click.echo(f"{r.status_code}: {r.json().get('error', {}).get('message', r.text)}", err=True)
        sys.exit(1)
    data = r.json()
    if as_json:
        click.echo(r.text)
        return
    click.echo(f"task {data['task']}  (ledger key {data['key']})")
    for metric in sorted(set(data["limits"]) | set(data["spent"]) | set(data["reserved"])):
        limit = data["limits"].get(metric)
        click.echo(
            f"  {metric:12} spent {data['spent'].get(metric, 0):>10}  reserved {data['reserved'].get(metric, 0):>8}"
            f"  limit {limit if limit is not None else 'none'}"
        )
    if data["parents"]:
        click.echo("  parents: " + " → ".join(data["parents"]))
    for child in data["children"]:
        click.echo(f"  child {child}")


@main.group()
def audit() -> None:
    """Check the audit store."""


@audit.command("verify")
@config_option
@click.option(
    "--anchor",
    default=None,
    help="A head hash printed by an earlier verify: fail unless it is still in the chain.",
)
def audit_verify(config: str, anchor: str | None) -> None:
    """Walk the hash chain: report the first edited, deleted, reordered or inserted record (exit 1), or OK with
    the count (exit 0)."""
    from agentgw.audit.chain import verify
    from agentgw.audit.checkpoints import SignedCheckpoint, open_checkpoint_sink

    settings = audit_or_exit(config)

    async def run(store: AuditStore) -> tuple[str, bool]:
        checkpoints: list[SignedCheckpoint] = []
        sink = open_checkpoint_sink(settings.audit.checkpoints, settings.resolve)
        if sink is not None:
            try:
                await sink.open()
                checkpoints = await sink.read()
            except Exception as exc:  # the checkpoints are part of the evidence: no verdict without them
                return f"FAILED: the checkpoint store cannot be read: {exc}", False
            finally:
                await sink.aclose()
        v = await verify(store.rows, await store.head(), settings.audit.hmac_key, checkpoints)
        if v.ok and anchor is not None:
            found = False
            async for row in store.rows():
                found = found or row.hash == anchor
            if not found:
                return (
                    f"FAILED: the anchor {anchor} is not in the chain: records up to it were removed",
                    False,
                )
        return v.line(), v.ok

    line, ok = with_store(config, run, settings)
    click.echo(line)
    sys.exit(0 if ok else 1)


@audit.command("prune")
@click.option("--older-than", "older", required=True, help="Age: 30d, 12h, …")
@config_option
def audit_prune(older: str, config: str) -> None:
    """Remove records older than the given age now (as `audit.retention` does), leaving a checkpoint."""
    from agentgw.audit.chain import hasher, prepare
    from agentgw.audit.record import checkpoint_record
    from agentgw.audit.tree import BadQuery, parse_since

    try:
        cutoff = parse_since(older)
    except BadQuery as exc:
        raise click.BadParameter(str(exc)) from None
    settings = audit_or_exit(config)

    async def run(store: AuditStore) -> int:
        def checkpoint(seq: int, h: str, n: int, cut: float) -> Prepared:
            return prepare(checkpoint_record(seq, h, n, cut))

        return await store.prune(cutoff, hasher(settings.audit.hmac_key), checkpoint)

    n = with_store(config, run, settings)
    click.echo(f"pruned {n} records" + (" (checkpoint recorded)" if n else ""))


# Command groups in modules of their own (they share cli_support.py with this one).
main.add_command(approvals)
main.add_command(trace)
main.add_command(tools)
main.add_command(guard)


if __name__ == "__main__":  # pragma: no cover
    main()
