"""The `agentgw` command: serve, check-config, keys.

Exit codes: 0 ok, 2 usage, 3 configuration problems (one line per problem on stderr).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from agentgw.settings import ConfigError, Settings, keys_file_of, load_settings, worker_problems

CONFIG_ENV = "AGENTGW_CONFIG"

config_option = click.option(
    "--config",
    "config",
    default=lambda: os.environ.get(CONFIG_ENV, "agentgw.yaml"),
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Path to agentgw.yaml (default: $AGENTGW_CONFIG, else ./agentgw.yaml).",
)


def _exit_with(err: ConfigError) -> NoReturn:
    for p in err.problems:
        click.echo(str(p), err=True)
    sys.exit(3)


def _load_or_exit(config: str, host: str | None = None) -> Settings:
    try:
        settings = load_settings(config, host=host)
    except ConfigError as err:
        _exit_with(err)
    from agentgw.app import check  # the assembled gateway's own checks (MCP names, policy files)

    problems = check(settings)
    if problems:
        _exit_with(ConfigError(problems))
    return settings


def setup_logging(level: str, fmt: str) -> None:
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

    settings = _load_or_exit(config, host)
    setup_logging(settings.logging.level, settings.logging.format)
    n = workers or settings.server.workers
    problems = worker_problems(settings, n)
    if problems:
        _exit_with(ConfigError(problems))
    kwargs = dict(
        host=host or settings.listen.host,
        port=port if port is not None else settings.listen.port,
        loop="uvloop",
        http="httptools",
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
    setup_logging(settings.logging.level, settings.logging.format)
    return create_app(settings)


@main.command("check-config")
@config_option
def check_config(config: str) -> None:
    """Validate agentgw.yaml, the registry and the keys; print every problem (exit 3) or a summary (exit 0)."""
    s = _load_or_exit(config)
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
    """Create a key; print it once; store only its hash."""
    from agentgw.keys import append_key

    try:
        path = Path(keys_file) if keys_file is not None else keys_file_of(config)
        key = append_key(path, subject, list(roles), name)
    except ConfigError as err:
        _exit_with(err)
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
@config_option
def policy_check(subject: str, object_: str, action: str, roles: tuple[str, ...], config: str) -> None:
    """Would SUBJECT be allowed ACTION on OBJECT? Prints allowed/denied and the deciding policy line.
    Exit 0 when allowed, 1 when denied."""
    from agentgw.app import policy_store

    settings = _load_or_exit(config)
    if not roles:
        roles = tuple(dict.fromkeys(r for k in settings.all_keys if k.subject == subject for r in k.roles))
    store = policy_store(settings)
    d = store.decide(subject, roles, object_, action)
    verdict = "allowed" if d.allowed else "denied"
    who = f"{subject} (roles: {', '.join(roles) or 'none'})"
    click.echo(f"{verdict}: {who} {action} {object_}")
    if d.rule is not None:
        click.echo(f"  by {store.policy_path}:{d.line}: {d.rule}")
    else:
        click.echo("  by default deny: no policy line matched")
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


if __name__ == "__main__":  # pragma: no cover
    main()
