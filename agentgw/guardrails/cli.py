"""`agentgw guard test`: try one configured guard on a text from the command line and see what it finds and
what the gateway would do (docs/guardrails.md). Exit codes: 0 the guard lets the text pass unchanged, 1 it
blocks, masks or flags it, 2 usage, 3 configuration problems."""

from __future__ import annotations

import asyncio
import sys

import click
import orjson

from agentgw.guardrails.config import GuardrailSettings
from agentgw.guardrails.engine import GuardBlocked, Guardrails, Plan, Tally, Vault, summary


@click.group()
def guard() -> None:
    """Guardrails: try a configured guard on a text (docs/guardrails.md)."""


@guard.command("test")
@click.option("--guard", "name", required=True, help="The guard's name under guardrails.guards.")
@click.option("--text", help="The text to check; without it, standard input is read.")
@click.option("--config", "-c", default="agentgw.yaml", show_default=True, help="The gateway's agentgw.yaml.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def test(name: str, text: str | None, config: str, as_json: bool) -> None:
    """What guard NAME finds in the text and what it would do: the kinds found and their counts (never the
    values), then `blocked` with the error code, or the text as it would be forwarded."""
    from agentgw.cli_support import load_or_exit

    settings = load_or_exit(config)
    cfg = settings.guardrails
    if name not in cfg.guards:
        known = ", ".join(sorted(cfg.guards)) or "none"
        click.echo(f"no guard named {name!r} in {settings.path} (configured: {known})", err=True)
        sys.exit(2)
    if text is None:
        text = sys.stdin.read()
    outcome = asyncio.run(_try(cfg, name, text))
    if as_json:
        click.echo(orjson.dumps(outcome, option=orjson.OPT_INDENT_2).decode())
    else:
        found = outcome["found"]
        assert isinstance(found, dict)
        click.echo(f"guard {name} ({outcome['type']}, action {outcome['action']})")
        click.echo(f"found: {summary(found) if found else 'nothing'}")
        if outcome.get("error"):
            click.echo(f"classifier error: {outcome['error']}")
        if outcome["blocked"]:
            click.echo(f"blocked: {outcome['code']}: {outcome['message']}")
        else:
            click.echo(f"forwarded as: {outcome['text']}")
    sys.exit(1 if outcome["blocked"] or outcome["text"] != text or outcome["found"] else 0)


async def _try(cfg: GuardrailSettings, name: str, text: str) -> dict[str, object]:
    engine = Guardrails(cfg)
    g = engine.guards[name]
    plan = Plan((g,), ()) if g.http is None else Plan((), (g,))
    tally, vault = Tally(), Vault()
    out: dict[str, object] = {
        "guard": name,
        "type": g.kind,
        "action": g.action,
        "blocked": False,
        "text": text,
    }
    try:
        if g.http is None:
            out["text"] = engine.scan(plan, text, "request", vault, tally)
        else:
            await engine.classify(plan, [text], "request", tally)
    except GuardBlocked as err:
        out.update(blocked=True, code=err.code, message=err.message)
    finally:
        await engine.aclose()
    found: dict[str, int] = {}
    for counts in tally.hits.values():
        for kind, n in counts.items():
            found[kind] = found.get(kind, 0) + n
    out["found"] = found
    if tally.errors:
        out["error"] = tally.errors[0][2]
    return out
