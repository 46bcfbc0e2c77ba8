"""`GET /admin/policy/check` with the call's arguments: conditional lines decided as the gateway would, the
effect (approve/confirm holds included) and the conditions that did not hold in the answer; bad JSON is a 400."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import httpx

from tests.support import MOCK_REGISTRY, POLICIES, gateway, sha

ADMIN_KEY = "agw-admin-key-0123456789"
POLICY = """\
p, role:admins, admin:*, *, allow
p, role:agents, mcp:fs/write_file, call, allow, path(args.path).within("/workspace/" + principal.sub)
p, role:agents, mcp:fs/rm, call, confirm
"""


async def test_the_admin_policy_check_decides_conditional_lines_with_the_given_arguments(
    tmp_path: Path,
) -> None:
    (tmp_path / "policy.csv").write_text(POLICY)
    settings = {
        "auth": {"api_keys": [{"subject": "root", "roles": ["admins"], "sha256": sha(ADMIN_KEY)}]},
        "policies": {"model": str(POLICIES / "model.conf"), "policy": str(tmp_path / "policy.csv")},
    }
    base = {"subject": "bot", "roles": "agents", "action": "call"}
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    answers = []
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient() as c:
        for obj, args in [
            ("mcp:fs/write_file", {"path": "/workspace/bot/a"}),
            ("mcp:fs/write_file", {"path": "/workspace/alice/a"}),
            ("mcp:fs/rm", None),
            ("mcp:fs/write_file", "{not json"),
        ]:
            q = {**base, "object": obj}
            if args is not None:
                q["args"] = args if isinstance(args, str) else json.dumps(args)
            answers.append(await c.get(f"{url}/admin/policy/check?{urlencode(q)}", headers=auth))
    inside, outside, held, bad = answers
    assert (inside.json()["allowed"], inside.json()["effect"], inside.json()["line"]) == (True, "allow", 2)
    assert (outside.json()["allowed"], outside.json()["rule"], outside.json()["unmet"]) == (False, None, [2])
    assert (held.json()["allowed"], held.json()["effect"], held.json()["line"]) == (True, "confirm", 3)
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")
