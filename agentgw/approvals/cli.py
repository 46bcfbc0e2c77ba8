"""`agentgw approvals list|show|approve|deny`: the approvals API of a running gateway (`/admin/approvals`), with an
approver's API key (an admin key may list). Exit 0 ok, 1 refused by the gateway (the reason on stderr), 2 unreachable."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

url_option = click.option(
    "--url", default="http://127.0.0.1:8080", show_default=True, help="The gateway's base URL."
)
key_option = click.option(
    "--key",
    envvar=["AGENTGW_APPROVER_KEY", "AGENTGW_ADMIN_KEY"],
    required=True,
    help="An approver's API key ($AGENTGW_APPROVER_KEY; an admin key may list).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")


def _call(method: str, url: str, key: str, path: str, **kwargs: Any) -> Any:
    import httpx

    try:
        r = httpx.request(
            method,
            f"{url.rstrip('/')}{path}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        click.echo(f"cannot reach {url}: {exc}", err=True)
        sys.exit(2)
    if r.status_code != 200:
        try:
            error = r.json().get("error", {})
            message = f"{error.get('code')}: {error.get('message')}"
        except ValueError:
            message = r.text
        click.echo(f"{r.status_code} {message}", err=True)
        sys.exit(1)
    return r


def _line(a: dict[str, Any]) -> str:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a["created"]))
    who = f" by {a['approver']}" if a.get("approver") else ""
    args = "" if a.get("arguments") in (None, {}) else f" {a['arguments']}"
    return (
        f"{a['id']}  {a['state']:8} {created}Z  {a['principal']} → {a['target']}{args}  task {a['task']}{who}"
    )


@click.group()
def approvals() -> None:
    """Decide held calls (policy effect `approve`) through a running gateway's admin API."""


@approvals.command("list")
@click.option(
    "--state",
    type=click.Choice(["pending", "approved", "denied", "expired", "all"]),
    default="pending",
    show_default=True,
)
@url_option
@key_option
@json_option
def approvals_list(state: str, url: str, key: str, as_json: bool) -> None:
    """Approval requests, newest first."""
    r = _call("GET", url, key, "/admin/approvals", params={"state": state})
    if as_json:
        click.echo(r.text)
        return
    rows = r.json()["approvals"]
    if not rows:
        click.echo(f"no {state} approval requests" if state != "all" else "no approval requests")
    for a in rows:
        click.echo(_line(a))


def _decide(decision: str, approval_id: str, reason: str | None, url: str, key: str, as_json: bool) -> None:
    body: dict[str, Any] = {"decision": decision}
    if reason is not None:
        body["reason"] = reason
    r = _call("POST", url, key, f"/admin/approvals/{approval_id}", json=body)
    click.echo(r.text if as_json else _line(r.json()))


@approvals.command("approve")
@click.argument("approval_id")
@click.option("--reason", default=None, help="Why (kept in the audit record and shown to the caller).")
@url_option
@key_option
@json_option
def approvals_approve(approval_id: str, reason: str | None, url: str, key: str, as_json: bool) -> None:
    """Let the held call APPROVAL_ID go ahead."""
    _decide("approve", approval_id, reason, url, key, as_json)


@approvals.command("deny")
@click.argument("approval_id")
@click.option("--reason", default=None, help="Why (kept in the audit record and shown to the caller).")
@url_option
@key_option
@json_option
def approvals_deny(approval_id: str, reason: str | None, url: str, key: str, as_json: bool) -> None:
    """Refuse the held call APPROVAL_ID (the caller gets 403 approval_denied with the reason)."""
    _decide("deny", approval_id, reason, url, key, as_json)
