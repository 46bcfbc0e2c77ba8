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

from agentgw.exchange import Principal
from agentgw.policy import PolicyEngine, PolicyError, PolicyStore, object_match
from agentgw.stages.authz import facts
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


EXAMPLES_MARKER = "# Argument rules:"


def shipped_examples() -> list[str]:
    """The commented argument-rule examples at the end of the shipped policy, uncommented as written."""
    text = (POLICIES / "policy.csv").read_text()
    tail = text[text.index(EXAMPLES_MARKER) :]
    return [line[2:] for line in tail.splitlines() if line.startswith("# p, ")]


@pytest.fixture
def examples(tmp_path: Path) -> PolicyEngine:
    shipped = (POLICIES / "policy.csv").read_text()
    (tmp_path / "policy.csv").write_text(shipped + "\n".join(shipped_examples()) + "\n")
    return PolicyEngine(POLICIES / "model.conf", tmp_path / "policy.csv", TAGS)


def test_the_shipped_policy_carries_the_five_kinds_of_argument_rule_examples() -> None:
    targets = [line.split(",")[2].strip() for line in shipped_examples()]
    assert targets == [
        "mcp:fetch/fetch",
        "mcp:git/*",
        "mcp:fs/write_file",
        "mcp:fs/edit_file",
        "mcp:db/query",
        "llm:*",
    ]


@pytest.mark.parametrize(
    ("roles", "target", "args", "allowed"),
    [
        (("agents",), "mcp:fetch/fetch", {"url": "https://example.com/a"}, True),
        (("agents",), "mcp:fetch/fetch", {"url": "https://DOCS.python.org./3/"}, True),
        (("agents",), "mcp:fetch/fetch", {"url": "http://example.com/a"}, False),
        (("agents",), "mcp:fetch/fetch", {"url": "https://example.com@evil.com/"}, False),
        (("agents",), "mcp:fetch/fetch", {"url": "https://evil.com/?example.com"}, False),
        (("agents",), "mcp:fetch/fetch", {"url": ["https://example.com/"]}, False),
        (("agents",), "mcp:fetch/fetch", {}, False),
        (("agents",), "mcp:git/git_status", {"repo_path": "/r"}, True),
        (("agents",), "mcp:git/git_log", {}, True),
        (("agents",), "mcp:git/git_commit", {"message": "x"}, False),
        (("agents",), "mcp:git/git_status_and_push", {}, False),
        (("agents",), "mcp:fs/write_file", {"path": "/workspace/bot/notes.md", "content": ""}, True),
        (("agents",), "mcp:fs/write_file", {"path": "/workspace/bot/../alice/x", "content": ""}, False),
        (("agents",), "mcp:fs/write_file", {"path": "/workspace/botnet/x", "content": ""}, False),
        (("agents",), "mcp:fs/edit_file", {"path": "/etc/passwd"}, False),
        (("agents",), "mcp:fs/read_file", {"path": "/etc/hosts"}, True),  # reads are not limited
        (("agents",), "mcp:db/query", {"sql": "SELECT * FROM t WHERE a = 1"}, True),
        (("agents",), "mcp:db/query", {"sql": "  select 1;"}, True),
        (("agents",), "mcp:db/query", {"sql": "DELETE FROM t"}, False),
        (("agents",), "mcp:db/query", {"sql": "SELECT 1; DROP TABLE t"}, False),
        (("agents",), "mcp:db/query", {"sql": "SELECT * INTO copy FROM t"}, False),
        (("agents",), "mcp:db/query", {"sql": ["SELECT 1"]}, False),
        (("interns",), "llm:mock-fast", {"model": "mock-fast", "max_tokens": 1000}, True),
        (("interns",), "llm:mock-fast", {"model": "mock-fast", "max_tokens": 1001}, False),
        (("interns",), "llm:mock-fast", {"model": "mock-fast"}, False),
        (("interns",), "llm:mock-fast", {"model": "mock-fast", "max_tokens": "100"}, False),
        (("interns",), "llm:mock-fast", {"max_tokens": 10, "max_completion_tokens": 5000}, False),
        (("agents",), "llm:mock-fast", {"model": "mock-fast", "max_tokens": 5000}, True),  # interns only
    ],
)
def test_each_shipped_example_works_as_written(
    examples: PolicyEngine, roles: tuple[str, ...], target: str, args: dict[str, object], allowed: bool
) -> None:
    principal = Principal("bot", roles)
    d = examples.decide("bot", roles, target, "call", facts(principal, target, args, None))
    assert d.allowed is allowed, d


def test_listing_mode_counts_a_conditional_allow_and_ignores_a_conditional_deny(tmp_path: Path) -> None:
    engine = write(
        tmp_path,
        "p, role:agents, mcp:fs/*, call, allow, path(args.path).within('/w')\n"
        "p, role:agents, mcp:fs/rm, call, deny, args.force == true\n"
        "p, role:agents, mcp:fs/wipe, call, deny\n",
    )
    assert engine.decide("bot", ("agents",), "mcp:fs/read", "call", listing=True).allowed
    assert engine.decide("bot", ("agents",), "mcp:fs/rm", "call", listing=True).allowed
    assert not engine.decide("bot", ("agents",), "mcp:fs/wipe", "call", listing=True).allowed
    assert not engine.decide("bot", ("agents",), "mcp:fs/read", "call").allowed  # no args: fails closed


@pytest.mark.parametrize(
    ("effect", "fails_to"),
    [("allow", "deny"), ("deny", "deny"), ("approve", "approve"), ("confirm", "confirm")],
)
def test_a_condition_that_errors_fails_closed(tmp_path: Path, effect: str, fails_to: str) -> None:
    engine = write(
        tmp_path,
        f"p, role:agents, mcp:fs/*, call, allow, {'args.n > 1' if effect == 'allow' else 'true'}\n"
        + (f"p, role:agents, mcp:fs/*, call, {effect}, args.n > 1\n" if effect != "allow" else ""),
    )
    for args in ({}, {"n": "5"}, {"n": [5]}, {"n": None}):
        d = engine.decide("bot", ("agents",), "mcp:fs/x", "call", {"args": args})
        assert d.effect == fails_to, (args, d)
        assert d.errors


def test_decisions_without_conditions_are_cached_and_with_conditions_are_not(tmp_path: Path) -> None:
    engine = write(
        tmp_path,
        "p, role:agents, mcp:a/*, call, allow\np, role:agents, mcp:b/*, call, allow, args.ok == true\n",
    )
    first = engine.decide("bot", ("agents",), "mcp:a/x", "call")
    assert engine.decide("bot", ("agents",), "mcp:a/x", "call") is first
    assert engine.decide("bot", ("agents",), "mcp:b/x", "call", {"args": {"ok": True}}).allowed
    assert not engine.decide("bot", ("agents",), "mcp:b/x", "call", {"args": {"ok": False}}).allowed


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("p, role:a, mcp:*, call, allow, args.x ==\n", "line 1: condition does not compile"),
        (
            "\np, role:a, mcp:*, call, deny, argz.x == 1\n",
            r"line 2: condition names unknown variables \['argz'\]",
        ),
    ],
)
def test_a_condition_that_does_not_compile_is_a_load_error_naming_the_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    with pytest.raises(PolicyError, match=problem):
        write(tmp_path, text)


def test_a_condition_may_hold_commas_also_inside_strings(tmp_path: Path) -> None:
    engine = write(tmp_path, 'p, role:a, mcp:*, call, allow, args.q in ["a,b", "c"] && size(args.q) > 0\n')
    assert engine.decide("x", ("a",), "mcp:s/t", "call", {"args": {"q": "a,b"}}).allowed
    assert not engine.decide("x", ("a",), "mcp:s/t", "call", {"args": {"q": "a"}}).allowed


def test_a_model_whose_matcher_does_not_evaluate_keeps_the_last_good_policy(tmp_path: Path) -> None:
    shutil.copy(POLICIES / "model.conf", tmp_path / "model.conf")
    (tmp_path / "policy.csv").write_text("p, role:agents, llm:*, call, allow\n")
    store = PolicyStore(tmp_path / "model.conf", tmp_path / "policy.csv")
    assert store.load()
    model = (POLICIES / "model.conf").read_text().replace("objMatch(r.obj, p.obj)", "noSuchFunction(r.obj)")
    (tmp_path / "model.conf").write_text(model)
    assert not store.load()
    assert store.error is not None
    assert store.decide("x", ("agents",), "llm:m", "call").allowed
