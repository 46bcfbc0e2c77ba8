"""`make screenshots`: the console's pages as PNGs for docs/console.md and the README, from a seeded demo store.

Starts the quickstart (a copy in a temporary directory, free ports) with `agentgw serve`, seeds it the way a user
would (the demo agents' planner → researcher workflow twice through A2A and MCP, a few direct model calls, a
refused one), then signs in to /console with the demo admin key in Debian's chromium (headless, through
Playwright) and saves each page to docs/console/. Nothing is fetched from the internet."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "console"
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
ADMIN = "agw-demo-admin-key"
DEMO = "agw-demo-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient() as c:
        for _ in range(300):  # bounded: 60 s
            try:
                r = await c.get(f"{url}/readyz")
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("the gateway did not become ready")


async def seed(url: str, cfg: Path) -> None:
    for question in ("How do budgets work?", "How is the audit chain verified?"):
        run = ROOT / "examples" / "agents" / "run.py"
        agent = await asyncio.create_subprocess_exec(
            BIN / "python", run, "--gateway", url, "--config", cfg, question, stdout=subprocess.DEVNULL
        )
        if await agent.wait() != 0:
            raise SystemExit("the demo agents failed")
    headers = {"authorization": f"Bearer {DEMO}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as c:
        for i in range(6):
            await c.post(
                "/v1/chat/completions",
                json={
                    "model": "mock-fast" if i % 2 else "mock-smart",
                    "messages": [{"role": "user", "content": f"summarise note {i}"}],
                },
                headers={"x-agentgw-task": f"notes-{i // 3}"},
            )
        await c.post(  # refused: a secret in the prompt (the quickstart's guardrails)
            "/v1/chat/completions",
            json={
                "model": "mock-fast",
                "messages": [{"role": "user", "content": "key AKIAIOSFODNN7EXAMPLE"}],
            },
            headers={"x-agentgw-task": "notes-1"},
        )


async def shoot(url: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(20_000)
        await page.goto(f"{url}/console")
        await page.wait_for_selector("#signin:not([hidden])")
        await page.screenshot(path=str(OUT / "signin.png"))
        await page.fill("#credential", ADMIN)
        await page.click("#signin-form button[type=submit]")
        await page.wait_for_selector("#task-list table")
        await page.screenshot(path=str(OUT / "tasks.png"), full_page=True)
        # the demo agents' workflow (not one of the direct calls' tasks): a planner → researcher delegation
        await page.evaluate(
            """() => [...document.querySelectorAll('#task-list tbody tr')]
                .find((r) => r.children[2].textContent === 'demo-agent' && !r.children[1].textContent.startsWith('notes-')).click()"""
        )
        await page.wait_for_selector("#timeline")
        await page.locator("#timeline .tl-row").nth(1).click()
        await page.screenshot(path=str(OUT / "task.png"), full_page=True)
        for name, ready in (("usage", "#usage-chart svg"), ("budgets", "h2"), ("registry", "h2")):
            await page.goto(f"{url}/console#/{name}")
            await page.wait_for_selector(ready)
            await page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
        await browser.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for part in ("examples/quickstart", "examples/servers", "examples/agents", "policies", "registry"):
            shutil.copytree(
                ROOT / part,
                root / part,
                ignore=shutil.ignore_patterns("audit.db*", ".agentgw", "keys.yaml", "__pycache__"),
            )
        port = free_port()
        env = {**os.environ, "PORT": str(port), "DOCS_PORT": str(free_port()), "PLANNER_PORT": str(free_port()),
               "RESEARCHER_PORT": str(free_port())}  # fmt: skip
        cfg = root / "examples" / "quickstart" / "agentgw.yaml"
        url = f"http://127.0.0.1:{port}"
        proc = await asyncio.create_subprocess_exec(
            BIN / "agentgw", "serve", "--config", cfg, env=env, stderr=subprocess.DEVNULL
        )
        try:
            await wait_ready(url)
            await seed(url, cfg)
            await shoot(url)
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    print(f"screenshots in {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    asyncio.run(main())
