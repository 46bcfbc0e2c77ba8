"""A gateway whose policy holds some calls: `docs__echo` needs an approval, `docs__add` the user's confirmation,
and the `mock-fast` model a confirmation (which the LLM plane cannot ask for). Keys: the caller (agents), an
approver, an admin, a caller that is also an approver, and one with no role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson

from tests.support import MOCK_REGISTRY, OTHER_KEY, POLICIES, TEST_KEY, sha

APPROVER_KEY = "agw-approver-key-0123456789"
ADMIN_KEY = "agw-admin-key-0123456789"
SELF_KEY = "agw-selfish-key-0123456789"

POLICY = """\
p, role:agents, mcp:*, *, allow
p, role:agents, mcp:docs/echo, call, approve
p, role:agents, mcp:docs/add, call, confirm
p, role:agents, mcp:docs/greet_user, call, confirm
p, role:agents, llm:*, call, allow
p, role:agents, llm:mock-fast, call, confirm
p, role:agents, llm:mock-embed, call, approve
"""


def hold_settings(tmp: Path, **approvals: Any) -> dict[str, Any]:
    (tmp / "policy.csv").write_text(POLICY)
    return {
        "policies": {"model": str(POLICIES / "model.conf"), "policy": str(tmp / "policy.csv")},
        "auth": {
            "api_keys": [
                {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
                {"subject": "other", "roles": [], "sha256": sha(OTHER_KEY)},
                {"subject": "ann", "roles": ["approvers"], "sha256": sha(APPROVER_KEY)},
                {"subject": "root", "roles": ["admins"], "sha256": sha(ADMIN_KEY)},
                {"subject": "selfish", "roles": ["agents", "approvers"], "sha256": sha(SELF_KEY)},
            ]
        },
        "approvals": {"progress_interval_s": 0.05, "poll_interval_s": 0.05, **approvals},
        "audit": {"writer": "inline"},
    }


def with_llm(registry: dict[str, Any]) -> dict[str, Any]:
    return {**registry, **MOCK_REGISTRY}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Progress:
    """The caller's progress callback: remembers every message, and the first one is an event (the call is held)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.held = anyio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.messages.append(message or "")
        self.held.set()

    @property
    def approval_id(self) -> str:
        return self.messages[0].split()[3]  # "Waiting for approval <id> of <target>"


async def decide(
    url: str, approval_id: str, decision: str, key: str = APPROVER_KEY, **body: Any
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers=bearer(key)) as http:
        return await http.post(f"/admin/approvals/{approval_id}", json={"decision": decision, **body})


async def listing(url: str, key: str = APPROVER_KEY, state: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers=bearer(key)) as http:
        return await http.get("/admin/approvals", params={"state": state} if state else {})


class Hook:
    """A loopback webhook receiver: keeps every announcement; `received` is set on the first."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.received = anyio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.bodies.append(orjson.loads(body))
        self.received.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
