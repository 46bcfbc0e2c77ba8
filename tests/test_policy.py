"""The policy engine and its store: deciding lines, deny-wins, tags, roles via `g`, reload on change and on
SIGHUP, and a broken file that keeps the last good policy while /readyz reports it."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import anyio
import httpx
import pytest

from agentgw.policy import PolicyEngine, PolicyError, PolicyStore, object_match
from tests.support import MOCK_REGISTRY, POLICIES, TEST_KEY, gateway

TAGS = {"mcp:fs/write_file": frozenset({"write"}), "mcp:fs/rm": frozenset({"write", "dangerous"})}


@pytest.fixture
def engine() -> PolicyEngine:
    return PolicyEngine(POLICIES / "model.conf", POLICIES / "policy.csv", TAGS)


@pytest.mark.parametrize(
    ("subject", "roles", "obj", "act", "allowed", "line"),
    [
        ("bot", ("agents",), "llm:anything", "call", True, 8),
        ("bot", ("agents",), "mcp:fs/read_file", "call", True, 9),
        ("bot", ("agents",), "mcp:fs/rm", "call", False, 12),  # tag:dangerous deny wins over mcp:* allow
        ("bot", ("agents",), "a2a:planner", "call", True, 10),
        ("ivy", ("interns",), "llm:mock-fast", "call", True, 15),
        ("ivy", ("interns",), "llm:mock-smart", "call", False, None),
        ("ivy", ("interns",), "mcp:fs/read_file", "call", True, 16),
        ("ivy", ("interns",), "mcp:fs/write_file", "call", False, 17),
        ("ivy", ("interns",), "mcp:docs/resource/file:///a", "read", False, None),
        (
            "rex",
            ("reviewer",),
            "mcp:docs/resource/file:///a",
            "read",
            True,
            26,
        ),  # g, role:reviewer, role:interns
        ("rex", ("reviewer",), "mcp:fs/write_file", "call", False, 17),  # inherits the intern deny
        ("alice", (), "mcp:acme-docs/search", "call", True, 20),  # g, user:alice, role:tenant:acme
        ("alice", (), "mcp:other/search", "call", False, None),
        ("root", ("admins",), "mcp:fs/rm", "call", True, 5),
        ("nobody", (), "llm:mock-fast", "call", False, None),
    ],
)
def test_decisions_follow_the_shipped_policy_and_name_the_deciding_line(
    engine: PolicyEngine,
    subject: str,
    roles: tuple[str, ...],
    obj: str,
    act: str,
    allowed: bool,
    line: int | None,
) -> None:
    d = engine.decide(subject, roles, obj, act)
    assert (d.allowed, d.line) == (allowed, line)
    if line is not None:
        assert d.rule == (POLICIES / "policy.csv").read_text().splitlines()[line - 1].strip()


@pytest.mark.parametrize(
    ("obj", "pattern", "match"),
    [
        ("mcp:docs/search", "mcp:docs/*", True),
        ("mcp:docs/resource/file:///x", "mcp:*/resource/*", True),
        ("mcp:docsx/search", "mcp:docs/*", False),
        ("MCP:docs/search", "mcp:*", False),
        ("mcp:docs/search", "mcp:docs/searc?", True),
        ("mcp:a.b/c", "mcp:a?b/c", True),
        ("mcp:a+b/c", "mcp:a+b/c", True),  # regex characters are literal
        ("mcp:aab/c", "mcp:a+b/c", False),
        ("mcp:fs/rm", "tag:dangerous", True),
        ("mcp:fs/ls", "tag:dangerous", False),
    ],
)
def test_object_patterns_are_literal_globs_or_tags(obj: str, pattern: str, match: bool) -> None:
    assert object_match(obj, pattern, TAGS) is match


def test_a_broken_policy_file_keeps_the_last_good_policy(tmp_path: Path) -> None:
    shutil.copy(POLICIES / "model.conf", tmp_path / "model.conf")
    (tmp_path / "policy.csv").write_text("p, role:agents, llm:*, call, allow\n")
    store = PolicyStore(tmp_path / "model.conf", tmp_path / "policy.csv")
    assert store.load()
    (tmp_path / "model.conf").write_text("[matchers]\nm = this is not a model\n")
    assert not store.load()
    assert store.error is not None
    assert store.decide("x", ("agents",), "llm:m", "call").allowed  # still the last good one
    shutil.copy(POLICIES / "model.conf", tmp_path / "model.conf")
    assert store.load()
    assert store.error is None


async def test_the_gateway_reloads_the_policy_when_the_file_changes_and_on_sighup(tmp_path: Path) -> None:
    pol = tmp_path / "pol"
    pol.mkdir()
    shutil.copy(POLICIES / "model.conf", pol / "model.conf")
    (pol / "policy.csv").write_text("p, role:agents, llm:*, call, allow\n")
    settings = {
        "policies": {"model": str(pol / "model.conf"), "policy": str(pol / "policy.csv")},
        "authz": {"reveal_denied": True},  # a denial is a 403 here, not the unknown-model 404
    }
    body = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"authorization": f"Bearer {TEST_KEY}"}
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, app), httpx.AsyncClient() as c:
        assert (await c.post(f"{url}/v1/chat/completions", json=body, headers=auth)).status_code == 200
        (pol / "policy.csv").write_text("p, role:agents, llm:*, call, deny\n")
        os.utime(pol / "policy.csv", (1, 1))  # a distinct mtime even within the filesystem's resolution
        os.kill(os.getpid(), signal.SIGHUP)
        with anyio.fail_after(5):
            while (
                app.policy.engine is None
                or app.policy.engine.decide("t", ("agents",), "llm:x", "call").allowed
            ):
                await anyio.lowlevel.checkpoint()
        assert (await c.post(f"{url}/v1/chat/completions", json=body, headers=auth)).status_code == 403

        (pol / "model.conf").write_text("broken")
        os.kill(os.getpid(), signal.SIGHUP)
        with anyio.fail_after(5):
            while app.policy.error is None:
                await anyio.lowlevel.checkpoint()
        ready = await c.get(f"{url}/readyz")
        assert ready.json()["policy"]["error"]
        assert (await c.post(f"{url}/v1/chat/completions", json=body, headers=auth)).status_code == 403


def write(tmp_path: Path, text: str) -> PolicyEngine:
    (tmp_path / "policy.csv").write_text(text)
    return PolicyEngine(POLICIES / "model.conf", tmp_path / "policy.csv", TAGS)


@pytest.mark.parametrize(
    ("effects", "winner"),
    [
        (("allow",), "allow"),
        (("allow", "confirm"), "confirm"),
        (("confirm", "approve", "allow"), "approve"),
        (("approve", "deny", "confirm"), "deny"),
        (("deny", "allow"), "deny"),
    ],
)
def test_the_strictest_matching_line_wins_deny_approve_confirm_allow(
    tmp_path: Path, effects: tuple[str, ...], winner: str
) -> None:
    # each effect on a different name the principal decides as: the subject, a role, a role inherited via g
    subjects = ["user:bot", "role:agents", "role:base"]
    lines = ["g, role:agents, role:base"]
    lines += [f"p, {subjects[i]}, mcp:fs/*, call, {effect}" for i, effect in enumerate(effects)]
    engine = write(tmp_path, "\n".join(lines) + "\n")
    d = engine.decide("bot", ("agents",), "mcp:fs/write_file", "call")
    assert d.effect == winner
    assert d.allowed is (winner != "deny")
    assert d.line == 2 + effects.index(winner)
    assert d.rule == lines[1 + effects.index(winner)]


def test_no_matching_line_is_a_deny_without_a_rule(tmp_path: Path) -> None:
    engine = write(tmp_path, "p, role:agents, mcp:fs/read_file, call, approve\n")
    d = engine.decide("bot", ("agents",), "mcp:fs/write_file", "call")
    assert (d.effect, d.allowed, d.rule, d.line) == ("deny", False, None, None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("p, role:a, llm:*, call, allow\np, role:a, mcp:*, call, permit\n", "line 2: effect 'permit'"),
        ("\n\np, role:a, mcp:*, call, Allow\n", "line 3: effect 'Allow'"),
        ("p, role:a, mcp:*, call\n", "line 1: a p line is"),
    ],
)
def test_a_bad_effect_or_a_short_line_is_a_load_error_naming_the_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    with pytest.raises(PolicyError, match=problem):
        write(tmp_path, text)
