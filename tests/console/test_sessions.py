"""Console sign-in over HTTP: a credential becomes an HttpOnly, SameSite=Strict session cookie that the admin API
accepts; a state change through it needs the session's CSRF token (a forged cross-site request has neither the
token nor the origin); auditors read and change nothing; other keys cannot sign in; the page's CSP allows no
inline script and nothing from elsewhere."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.approvals.support import ADMIN_KEY, APPROVER_KEY, hold_settings, with_llm
from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, gateway, sha

AUDITOR_KEY = "agw-auditor-key-0123456789"
BOSS_KEY = "agw-boss-key-0123456789"  # an admin who is also an approver


def settings(tmp: Path) -> dict[str, object]:
    s = hold_settings(tmp)
    keys = s["auth"]["api_keys"]  # type: ignore[index]
    keys += [
        {"subject": "audrey", "roles": ["auditors"], "sha256": sha(AUDITOR_KEY)},
        {"subject": "boss", "roles": ["admins", "approvers"], "sha256": sha(BOSS_KEY)},
    ]
    return s


async def sign_in(c: httpx.AsyncClient, key: str) -> httpx.Response:
    return await c.post("/console/login", json={"credential": key})


async def test_an_admin_key_signs_in_to_an_httponly_strict_cookie_that_the_admin_api_accepts(
    tmp_path: Path,
) -> None:
    async with (
        gateway(tmp_path, MOCK_REGISTRY, settings(tmp_path)) as (url, _),
        httpx.AsyncClient(base_url=url) as c,
    ):
        before = await c.get("/admin/tasks")
        signed = await sign_in(c, ADMIN_KEY)
        tasks = await c.get("/admin/tasks")
        session = await c.get("/console/session")
        out = await c.post("/console/logout", headers={"x-csrf-token": signed.json()["csrf"]})
        after = await c.get("/admin/tasks")
    assert before.status_code == 401
    assert signed.status_code == 200, signed.text
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert signed.json()["subject"] == "root" and signed.json()["admin"] is True
    assert ADMIN_KEY not in cookie  # the cookie is an opaque id, not the credential
    assert tasks.status_code == 200, tasks.text
    assert session.json()["csrf"] == signed.json()["csrf"]
    assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
    assert after.status_code == 401


async def test_a_state_change_through_the_session_needs_its_csrf_token_and_a_cross_site_origin_is_refused(
    tmp_path: Path,
) -> None:
    async with (
        gateway(tmp_path, with_llm({}), settings(tmp_path)) as (url, _),
        httpx.AsyncClient(base_url=url) as c,
    ):
        csrf = (await sign_in(c, BOSS_KEY)).json()["csrf"]
        body = {"decision": "approve"}
        no_token = await c.post("/admin/approvals/nope", json=body)
        wrong = await c.post("/admin/approvals/nope", json=body, headers={"x-csrf-token": "forged"})
        cross_site = await c.post(
            "/admin/approvals/nope",
            json=body,
            headers={"x-csrf-token": csrf, "origin": "https://evil.example"},
        )
        with_token = await c.post("/admin/approvals/nope", json=body, headers={"x-csrf-token": csrf})
        form_login = await c.post("/console/login", data={"credential": ADMIN_KEY})
    assert (no_token.status_code, no_token.json()["error"]["code"]) == (403, "csrf_failed")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "csrf_failed")
    assert cross_site.status_code == 403 and "origin" in cross_site.text.lower()
    assert with_token.status_code == 404, with_token.text  # past the CSRF check: there is no such request
    assert form_login.status_code == 400  # a cross-site form cannot sign anyone in either


async def test_an_auditor_reads_everything_and_changes_nothing(tmp_path: Path) -> None:
    async with (
        gateway(tmp_path, with_llm({}), settings(tmp_path)) as (url, _),
        httpx.AsyncClient(base_url=url) as c,
    ):
        signed = await sign_in(c, AUDITOR_KEY)
        csrf = signed.json()["csrf"]
        tasks = await c.get("/admin/tasks")
        approvals = await c.get("/admin/approvals")
        decide = await c.post(
            "/admin/approvals/nope", json={"decision": "approve"}, headers={"x-csrf-token": csrf}
        )
        bearer = await c.get("/admin/tasks", headers={"authorization": f"Bearer {AUDITOR_KEY}"})
        policy = await c.get(
            "/admin/policy/check", params={"subject": "tester", "object": "llm:mock-fast", "action": "call"}
        )
    assert signed.status_code == 200 and signed.json()["admin"] is False
    assert tasks.status_code == 200 and approvals.status_code == 200 and policy.status_code == 200
    assert bearer.status_code == 200  # the role, not the console, makes an auditor
    assert decide.status_code == 403, decide.text


async def test_keys_without_an_admin_or_auditor_role_cannot_sign_in(tmp_path: Path) -> None:
    async with (
        gateway(tmp_path, MOCK_REGISTRY, settings(tmp_path)) as (url, _),
        httpx.AsyncClient(base_url=url) as c,
    ):
        agent = await sign_in(c, TEST_KEY)
        approver = await sign_in(c, APPROVER_KEY)
        nobody = await sign_in(c, OTHER_KEY)
        wrong = await sign_in(c, "agw-not-a-key-0123456789")
        empty = await c.post("/console/login", json={})
    assert (agent.status_code, agent.json()["error"]["code"]) == (403, "console_role_required")
    assert approver.status_code == nobody.status_code == 403
    assert wrong.status_code == 401
    assert empty.status_code == 400
    assert "set-cookie" not in agent.headers


async def test_the_page_is_served_from_the_package_under_a_csp_without_inline_script(tmp_path: Path) -> None:
    async with (
        gateway(tmp_path, MOCK_REGISTRY, settings(tmp_path)) as (url, _),
        httpx.AsyncClient(base_url=url) as c,
    ):
        page = await c.get("/console")
        script = await c.get("/console/static/console.js")
        missing = await c.get("/console/static/../../agentgw.yaml")
        unknown = await c.get("/console/static/nope.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in page.text and "http" not in page.text.replace("http-equiv", "")
    assert page.headers["x-frame-options"] == "DENY"
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert missing.status_code == 404 and unknown.status_code == 404
