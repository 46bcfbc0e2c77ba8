"""The audit trace API under `/admin/` (the Admin class has already checked the admin role):
`GET /admin/tasks?principal=&since=&until=&status=&denied=&target=&min_cost=&limit=`, `GET /admin/tasks/{id}?principal=` (the tree),
`GET /admin/tasks/{id}/verify?principal=` (the tree's records checked), `GET /admin/records/{id}` (one record with
its place in the chain)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from agentgw.audit.chain import check_rows
from agentgw.audit.store import AuditStore
from agentgw.audit.tree import Ambiguous, BadQuery, record_of, task_filter, task_list, task_tree
from agentgw.errors import GatewayError, NotFound
from agentgw.http import Scope, Send, send_bytes
from agentgw.secrets import Scrubber

MAX_VERIFY = 5000  # records checked per request (a larger tree says it was cut)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _bad(message: str) -> GatewayError:
    return GatewayError(message, status=400, code="invalid_request")


class TraceAPI:
    def __init__(
        self, store: AuditStore | None, scrubber: Scrubber | None = None, key: str | None = None
    ) -> None:
        """`key`: the chain's HMAC key (audit.hmac_key), to check a task's records."""
        self.store = store
        self.key = key
        self.scrubber = scrubber or Scrubber(())  # records written before a secret was configured stay clean

    def _store(self) -> AuditStore:
        if self.store is None:
            raise NotFound("Audit is disabled on this gateway.", code="audit_disabled")
        return self.store

    async def __call__(self, scope: Scope, send: Send) -> bool:
        """Answer a trace path; False when the path is not one of ours."""
        path: str = scope["path"]
        if scope["method"] != "GET":
            return False
        if path == "/admin/tasks":
            body: Any = await self.tasks(_query(scope))
        elif path.startswith("/admin/tasks/") and path.endswith("/verify") and len(path) > 20:
            body = await self.verify(path[len("/admin/tasks/") : -len("/verify")], _query(scope))
        elif path.startswith("/admin/tasks/") and len(path) > len("/admin/tasks/"):
            body = await self.tree(path[len("/admin/tasks/") :], _query(scope))
        elif path.startswith("/admin/records/") and len(path) > len("/admin/records/"):
            body = await self.record(path[len("/admin/records/") :])
        else:
            return False
        await send_bytes(send, 200, self.scrubber.data(orjson.dumps(body)))
        return True

    async def tasks(self, q: dict[str, str]) -> dict[str, Any]:
        denied = q.get("denied", "").lower()
        if denied not in _TRUE | _FALSE:
            raise _bad("denied must be true or false.")
        try:
            limit = int(q.get("limit", "100"))
            flt = task_filter(
                q.get("principal"),
                q.get("since"),
                q.get("status"),
                denied in _TRUE,
                limit,
                q.get("until"),
                q.get("target"),
                q.get("min_cost"),
            )
        except ValueError as exc:
            raise _bad(str(exc) if isinstance(exc, BadQuery) else "limit must be an integer.") from None
        return {"tasks": await task_list(self._store(), flt)}

    async def tree(self, task_id: str, q: dict[str, str]) -> dict[str, Any]:
        try:
            tree = await task_tree(self._store(), task_id, q.get("principal") or None)
        except Ambiguous as exc:
            raise GatewayError(
                f"Task {task_id} was used by several principals ({', '.join(exc.principals)}): "
                "name one with ?principal=<subject>, or ?principal=* for all of them.",
                status=409,
                code="ambiguous_task",
            ) from None
        if tree is None:
            raise NotFound(f"No audit record names task {task_id}.", code="task_not_found")
        return tree

    async def verify(self, task_id: str, q: dict[str, str]) -> dict[str, Any]:
        """Every record of the task's tree checked on its own (chain.check_rows) under the chain's key."""
        tree = await self.tree(task_id, q)
        ids: list[str] = []

        def collect(node: dict[str, Any]) -> None:
            for step in node["steps"]:
                ids.append(step["record_id"])
                for child in step.get("child_tasks", []):
                    collect(child)
            for child in node["child_tasks"]:
                collect(child)

        collect(tree)
        store = self._store()
        rows = [r for r in [await store.record(i) for i in ids[:MAX_VERIFY]] if r is not None]
        checked = check_rows(rows, await store.head(), self.key)
        bad = [c for c in checked if not c["ok"]]
        return {
            "task_id": task_id,
            "ok": not bad and len(rows) == len(ids),
            "checked": len(checked),
            "missing": len(ids) - len(rows) if len(ids) <= MAX_VERIFY else 0,
            "truncated": len(ids) > MAX_VERIFY,
            "records": checked,
        }

    async def record(self, record_id: str) -> dict[str, Any]:
        row = await self._store().record(record_id)
        if row is None:
            raise NotFound(f"No audit record {record_id}.", code="record_not_found")
        return record_of(row)
