"""`agentgw tools lock | diff | approve`: the lock follows real `mcp` SDK upstreams as they change, offline (the
CLI connects to the servers itself) or through a running gateway's admin API."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from agentgw.cli import main
from agentgw.mcp.catalog.pinning import Lock
from tests.mcp.catalog.test_pinops import ADMIN_KEY, agentgw, config, running
from tests.mcp.support import Upstream, registry, server_entry
from tests.support import serve, write_config


async def test_lock_diff_and_approve_follow_an_upstream_that_changes(tmp_path: Path) -> None:
    docs = Upstream("docs")
    async with serve(docs) as up:
        cfg = config(tmp_path, up, {"mode": "enforce"})
        locked = await agentgw("tools", "lock", "--config", str(cfg))
        unchanged = await agentgw("tools", "diff", "--config", str(cfg))
        server = docs.server
        server.remove_tool("echo")
        server.remove_tool("search_docs")

        def search_docs(query: str, limit: int) -> str:
            return query

        def extra() -> str:
            return "extra"

        server.add_tool(search_docs, name="search_docs", description="Search the docs\u200b")
        server.add_tool(extra, name="extra", description="Something new")
        changed = await agentgw("tools", "diff", "--config", str(cfg))
        as_json = await agentgw("tools", "diff", "--json", "--config", str(cfg))
        one = await agentgw("tools", "approve", "docs__search_docs", "--config", str(cfg))
        after_one = await agentgw("tools", "diff", "--json", "--config", str(cfg))
        again = await agentgw("tools", "approve", "docs__search_docs", "--config", str(cfg))
        missing = await agentgw("tools", "approve", "docs__nothing", "--config", str(cfg))
        rest = await agentgw("tools", "approve", "--all", "--config", str(cfg))
        clean = await agentgw("tools", "diff", "--config", str(cfg))
    assert locked[0] == 0 and locked[1].startswith("pinned ")
    assert unchanged[:2] == (0, "no changes since the lock\n")
    code, out, _ = changed
    assert code == 1
    assert out.splitlines()[:2] == ["removed  docs__echo", "added    docs__extra"]
    assert "changed  docs__search_docs" in out
    assert "    description:\n      - Search the docs\n      + Search the docs<U+200B>\n" in out
    assert "    inputSchema.properties.limit.type:\n      + integer\n" in out
    assert [(c["change"], c["name"]) for c in orjson.loads(as_json[1])] == [
        ("removed", "docs__echo"),
        ("added", "docs__extra"),
        ("changed", "docs__search_docs"),
    ]
    assert one[:2] == (0, "approved changed docs__search_docs\n")
    assert [c["name"] for c in orjson.loads(after_one[1])] == ["docs__echo", "docs__extra"]
    assert again[:2] == (0, "docs__search_docs: already pinned\n")
    assert missing[0] == 1 and "docs__nothing: no such tool" in missing[2]
    assert (
        rest[0] == 0 and "approved added docs__extra" in rest[1] and "approved removed docs__echo" in rest[1]
    )
    assert clean[:2] == (0, "no changes since the lock\n")
    pins = Lock.load(tmp_path / "registry" / "tools.lock.yaml")
    assert "echo" not in pins.servers["docs"] and "extra" in pins.servers["docs"]


async def test_a_server_that_cannot_be_listed_keeps_its_pins_and_makes_the_exit_code_2(
    tmp_path: Path,
) -> None:
    docs = Upstream("docs")
    async with serve(docs) as up:
        down = server_entry("down", "http://127.0.0.1:9", timeout_s=1)
        cfg = write_config(tmp_path, registry(server_entry("docs", up), down))
        locked = await agentgw("tools", "lock", "--config", str(cfg))
        diff = await agentgw("tools", "diff", "--config", str(cfg))
    assert locked[0] == 2 and "down: cannot be listed" in locked[2]
    assert "pinned" in locked[1]  # the servers that answered are pinned all the same
    assert diff[0] == 2 and "(for the servers that could be listed)" in diff[1]


async def test_approve_through_a_running_gateway_applies_at_once(tmp_path: Path) -> None:
    async with serve(Upstream("docs")) as up:
        cfg = config(tmp_path, up, {"mode": "enforce"})
        async with running(cfg) as (url, _):
            one = await agentgw("tools", "approve", "docs__add", "--url", url, "--key", ADMIN_KEY)
            every = await agentgw("tools", "approve", "--all", "--url", url, "--key", ADMIN_KEY)
            wrong = await agentgw("tools", "approve", "docs__nothing", "--url", url, "--key", ADMIN_KEY)
        clean = await agentgw("tools", "diff", "--config", str(cfg))
    assert one[:2] == (0, "approved docs__add: pinned\n")
    assert every[0] == 0 and "approved docs__echo: pinned" in every[1] and "docs__add" not in every[1]
    assert wrong[0] == 1 and "404: Unknown tool: docs__nothing" in wrong[2]
    assert clean[:2] == (0, "no changes since the lock\n")


def test_approve_needs_names_or_all_and_registry_names() -> None:
    runner = CliRunner()
    neither = runner.invoke(main, ["tools", "approve"])
    both = runner.invoke(main, ["tools", "approve", "docs__add", "--all"])
    bad = runner.invoke(main, ["tools", "approve", "add"])
    remote = runner.invoke(main, ["tools", "approve", "docs__add", "--url", "http://127.0.0.1:9"], env={})
    assert neither.exit_code == both.exit_code == 2
    assert "name the tools to approve" in neither.output
    assert bad.exit_code == 2 and "not a registry tool name" in bad.output
    assert remote.exit_code == 2 and "needs an admin key" in remote.output
