"""The console end to end in a real browser: Playwright (PyPI) driving Debian's chromium, headless, against a
gateway on loopback with a seeded multi-agent workflow and a held call: sign in, filter the tasks, open the tree
and its timeline, verify, see the usage chart, approve the held call, sign out. An auditor sees but cannot
approve; an agent's key cannot sign in; a forged cross-site POST from another page is refused."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.approvals.support import with_llm
from tests.budget.test_hierarchy import DOWN_KEY
from tests.console.test_sessions import AUDITOR_KEY, BOSS_KEY, settings
from tests.support import TEST_KEY, gateway, serve, sha

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is not installed (make install-browser)")
        pytest.skip("Debian's chromium is not installed (make install-browser)")


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Any]:
    _need_chromium()
    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


def console_settings(tmp: Path) -> dict[str, Any]:
    s = settings(tmp)
    s["auth"]["api_keys"].append({"subject": "researcher", "roles": ["agents"], "sha256": sha(DOWN_KEY)})  # type: ignore[index]
    (tmp / "console-policy.csv").write_text(
        "p, role:agents, llm:*, call, allow\np, role:agents, llm:mock-embed, call, approve\n"
    )
    s["policies"]["policy"] = str(tmp / "console-policy.csv")  # type: ignore[index]
    s["budgets"] = {"rules": [{"match": {"roles": ["agents"]}, "task": {"tokens": 100_000}}]}
    return s


async def seed(url: str, app: Any) -> None:
    """A planner's task `plan` (a model call and a refused one); the researcher agent it delegated to, calling
    with the W3C trace context of the planner's step (as OpenTelemetry propagates it), in its own task
    `research`, which the tree shows under that step; and an unrelated task of the researcher's."""
    chat = {"model": "mock-fast", "messages": [{"role": "user", "content": "plan the trip"}]}
    planner = {"authorization": f"Bearer {TEST_KEY}", "x-agentgw-task": "plan"}
    researcher = {"authorization": f"Bearer {DOWN_KEY}"}
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.post("/v1/chat/completions", json=chat, headers=planner)).status_code == 200
        await c.post("/v1/chat/completions", json={**chat, "model": "no-such-model"}, headers=planner)
        await app.audit.flush()
        tree = await c.get("/admin/tasks/plan", headers={"authorization": f"Bearer {BOSS_KEY}"})
        assert tree.status_code == 200, tree.text
        step = tree.json()["steps"][0]
        context = {"traceparent": f"00-{step['trace_id']}-{step['span_id']}-01", "x-agentgw-task": "research"}
        for _ in range(2):
            await c.post("/v1/chat/completions", json=chat, headers={**researcher, **context})
        await c.post("/v1/chat/completions", json=chat, headers={**researcher, "x-agentgw-task": "errand"})
        await app.audit.flush()


class Held:
    """An embeddings call the policy holds for an approver (llm:mock-embed, approve); `done` when it returned."""

    def __init__(self) -> None:
        self.response: httpx.Response | None = None
        self.done = anyio.Event()

    async def __call__(self, url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            self.response = await c.post(
                "/v1/embeddings",
                json={"model": "mock-embed", "input": "hello"},
                headers={"authorization": f"Bearer {TEST_KEY}", "x-agentgw-task": "plan"},
            )
        self.done.set()


async def sign_in(page: Any, url: str, key: str) -> None:
    await page.goto(f"{url}/console")
    await page.fill("#credential", key)
    await page.click("#signin-form button[type=submit]")


async def test_an_admin_signs_in_filters_opens_the_tree_and_timeline_verifies_approves_and_signs_out(
    tmp_path: Path,
) -> None:
    held = Held()
    async with (
        gateway(tmp_path, with_llm({}), console_settings(tmp_path)) as (url, app),
        browser() as b,
        anyio.create_task_group() as tg,
    ):
        await seed(url, app)
        tg.start_soon(held, url)
        page = await b.new_page()
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(  # script errors and CSP refusals; a 401 or 404 answer the page expects is not one
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        await sign_in(page, url, BOSS_KEY)
        await page.wait_for_selector("#task-list table")
        assert "boss" in await page.inner_text("#who")
        listed = await page.locator("#task-list tbody tr").all_inner_texts()
        assert {"plan", "research", "errand"} <= {t.split("\t")[1] for t in listed}
        await page.fill("input[name=principal]", "researcher")
        await page.click(".filters button[type=submit]")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#task-list tbody tr')].every("
            "r => r.children[2].textContent === 'researcher')"
        )
        await page.fill("input[name=principal]", "")
        await page.fill("input[name=target]", "llm:no-such-*")  # the tasks with a step on that model
        await page.click(".filters button[type=submit]")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#task-list tbody tr')].map("
            "r => r.children[1].textContent).join() === 'plan'"
        )
        await page.fill("input[name=target]", "")
        await page.click(".filters button[type=submit]")
        await page.locator("#task-list tbody tr", has_text="plan").first.click()
        await page.wait_for_selector("#tree")
        tree = await page.inner_text("#tree")
        assert "task plan" in tree and "task research" in tree  # the researcher's task under the planner's
        rows = await page.locator("#timeline .tl-row").count()
        assert rows >= 3
        widths = await page.eval_on_selector_all("#timeline .tl-bar", "bars => bars.map(b => b.style.width)")
        assert all(w.endswith("%") for w in widths)
        await page.locator("#tree .step").first.click()
        detail = await page.inner_text("#step-detail")
        assert "Decisions" in detail and "authz" in detail and "hash" in detail
        await page.click("#verify")
        await page.wait_for_selector("#verify-result .badge.ok")
        async with page.expect_download() as download:
            await page.click("#export-html")
        report = await anyio.Path(await (await download.value).path()).read_text()
        assert "Task plan" in report and "<script" not in report
        await page.click("a[data-page=usage]")
        await page.wait_for_selector("#usage-chart svg")
        assert int(await page.get_attribute("#usage-chart svg", "data-points") or 0) > 0
        assert await page.locator("#usage-chart path.series").count() >= 1
        await page.click("a[data-page=budgets]")
        await page.locator("#page td", has_text="research").first.wait_for()
        budgets = await page.inner_text("#page")
        await page.click("a[data-page=registry]")
        await page.locator("#page td", has_text="mock-fast").first.wait_for()
        await page.click("#nav-approvals")
        approve = page.locator("button.primary", has_text="Approve")
        await approve.wait_for()
        await page.fill("input[name=reason]", "the planner needs it")
        await approve.click()
        with anyio.fail_after(20):
            await held.done.wait()  # the held call returns once the approval lands
        await page.click("#signout")
        await page.wait_for_selector("#signin:not([hidden])")
        after = await page.evaluate("fetch('/admin/tasks').then(r => r.status)")
    assert held.response is not None and held.response.status_code == 200, held.response
    assert "plan" in budgets and "tokens" in budgets  # the live tasks with their limits and spending
    assert after == 401
    assert errors == []


@contextlib.asynccontextmanager
async def a_pending_approval(tmp: Path, key: str) -> AsyncIterator[tuple[str, Any, str, Held]]:
    """A gateway with a held call, and a page signed in with `key` showing the approvals: (url, page, approval
    id, the held call). The boss denies the request on the way out, so the held call returns."""
    held = Held()
    async with (
        gateway(tmp, with_llm({}), console_settings(tmp)) as (url, _),
        browser() as b,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(held, url)
        page = await (await b.new_context()).new_page()  # a context of its own: it can open more pages
        page.set_default_timeout(WAIT_MS)
        await sign_in(page, url, key)
        await page.wait_for_selector("#task-list")
        await page.click("#nav-approvals")
        await page.locator("td", has_text="mock-embed").first.wait_for()
        pending = await page.evaluate("fetch('/admin/approvals').then(r => r.json())")
        approval_id = pending["approvals"][0]["id"]
        try:
            yield url, page, approval_id, held
        finally:
            async with httpx.AsyncClient(base_url=url) as c:
                await c.post(
                    f"/admin/approvals/{approval_id}",
                    json={"decision": "deny"},
                    headers={"authorization": f"Bearer {BOSS_KEY}"},
                )


async def test_an_auditor_sees_the_pending_request_but_cannot_approve_it(tmp_path: Path) -> None:
    async with a_pending_approval(tmp_path, AUDITOR_KEY) as (_, page, approval_id, held):
        buttons = await page.locator("button", has_text="Approve").count()
        tried = await page.evaluate(
            """async (id) => {
                const me = await (await fetch('/console/session')).json();
                const r = await fetch('/admin/approvals/' + id, {method: 'POST',
                    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf},
                    body: JSON.stringify({decision: 'approve'})});
                return r.status;
            }""",
            approval_id,
        )
    assert buttons == 0
    assert tried == 403
    assert held.response is not None and held.response.status_code == 403  # denied by the boss, not approved


async def test_an_agents_key_cannot_sign_in(tmp_path: Path) -> None:
    async with gateway(tmp_path, with_llm({}), console_settings(tmp_path)) as (url, _), browser() as b:
        page = await b.new_page()
        page.set_default_timeout(WAIT_MS)
        await sign_in(page, url, TEST_KEY)
        await page.wait_for_function("() => document.querySelector('#signin-error').textContent.length > 0")
        message = await page.inner_text("#signin-error")
        hidden = await page.get_attribute("#top", "hidden")
    assert "admins and auditors" in message
    assert hidden is not None


async def test_a_forged_cross_site_post_from_another_page_is_refused(tmp_path: Path) -> None:
    async with a_pending_approval(tmp_path, BOSS_KEY) as (url, page, approval_id, held):

        async def evil(request: Any) -> HTMLResponse:  # another site's page posting a form at the gateway
            return HTMLResponse(
                f'<form method="POST" action="{url}/admin/approvals/{approval_id}" enctype="text/plain">'
                '<input name=\'{"decision": "approve", "x": "\' value=\'"}\'></form>'
                "<script>document.forms[0].submit()</script>"
            )

        async with serve(Starlette(routes=[Route("/", evil)])) as evil_url:
            attacker = (
                await page.context.new_page()
            )  # the same browser: the console's cookie is there to misuse
            await attacker.goto(evil_url)
            await attacker.wait_for_url(f"{url}/admin/approvals/{approval_id}")
            refused = await attacker.inner_text("body")
        still = await page.evaluate(f"fetch('/admin/approvals/{approval_id}').then(r => r.json())")
    # the browser withholds the SameSite=Strict cookie from another site's form (401); were it sent, the missing
    # CSRF token (403 csrf_failed) or the foreign Origin (403) would refuse it: test_sessions.py shows both
    code = orjson.loads(refused)["error"]["code"]
    assert code in ("missing_api_key", "csrf_failed", "origin_refused")
    assert still["state"] == "pending"
    assert held.response is not None and held.response.status_code == 403
