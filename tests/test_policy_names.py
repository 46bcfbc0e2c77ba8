"""Subjects and roles never share a name space: the Casbin request names a caller `user:<subject>` and each of its
roles `role:<name>`; a policy line names `user:<subject>`, `role:<name>`, or a bare name, which is a role. Names
that could be read either way are refused (`keys create`, `check-config`). A subject that happens to be called
like a role gets none of its permissions, whether the policy writes the role bare or typed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from agentgw.cli import main
from agentgw.configcheck import ambiguities, check
from agentgw.policy import PolicyEngine, PolicyError, PolicyStore, policy_problems
from agentgw.settings import load_settings
from tests.support import MOCK_REGISTRY, POLICIES, TEST_KEY, gateway, sha, write_config
from tests.test_identity import ADMIN_KEY, token
from tests.test_identity import settings as identity_settings
from tests.test_jwt import JWK1

NAMED_LIKE_A_ROLE = "agw-named-admins-0123456789"


def bare_policy(tmp_path: Path) -> Path:
    """The shipped policy as policies were written before the prefixes: every role bare (`p, admins, …`,
    `g, reviewer, interns`); only the one subject line keeps `user:`."""
    path = tmp_path / "bare.csv"
    path.write_text((POLICIES / "policy.csv").read_text().replace("role:", ""))
    assert "p, admins, *, *, allow" in path.read_text()
    return path


@pytest.fixture(params=["typed", "bare"])
def policy_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return POLICIES / "policy.csv" if request.param == "typed" else bare_policy(tmp_path)


@pytest.fixture
def engine(policy_file: Path) -> PolicyEngine:
    return PolicyEngine(POLICIES / "model.conf", policy_file)


@pytest.mark.parametrize(
    ("subject", "roles", "allowed"),
    [
        ("admins", (), False),  # a subject called like the role gets nothing from `p, [role:]admins, …`
        ("role:admins", (), False),  # nor does one that spells the prefix itself
        ("x", ("admins",), True),  # the role itself does
        ("interns", (), False),
        ("tenant:acme", (), False),
    ],
)
def test_a_subject_named_like_a_role_gets_none_of_the_roles_permissions(
    engine: PolicyEngine, subject: str, roles: tuple[str, ...], allowed: bool
) -> None:
    assert engine.decide(subject, roles, "mcp:acme-fs/rm", "call").allowed is allowed


def test_g_lines_give_subjects_roles_and_roles_inherit_roles(engine: PolicyEngine) -> None:
    assert engine.decide(
        "alice", (), "mcp:acme-docs/search", "call"
    ).allowed  # g, user:alice, role:tenant:acme
    assert not engine.decide("bob", (), "mcp:acme-docs/search", "call").allowed
    assert engine.decide("rex", ("reviewer",), "mcp:docs/resource/file:///a", "read").allowed
    assert engine.decide(
        "rex", ("reviewer",), "llm:mock-fast", "call"
    ).allowed  # g, role:reviewer, role:interns
    assert not engine.decide(None, ("tenant:acme",), "llm:mock-fast", "call").allowed


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("p, , llm:*, call, allow", "line 1: a subject or role name is empty"),
        ("g, user:alice, ", "line 1: a subject or role name is empty"),
        (
            "g, user:alice, user:bob",
            "line 1: 'user:bob' is a subject: only a role can be granted (role:<name> or a bare name)",
        ),
        (
            "g, a, user:bob",
            "line 1: 'user:bob' is a subject: only a role can be granted (role:<name> or a bare name)",
        ),
        ("p, role:, llm:*, call, allow", "line 1: 'role:' has an empty name"),
        ("p, user:, llm:*, call, allow", "line 1: 'user:' has an empty name"),
        (
            "p, user:role:x, llm:*, call, allow",
            "line 1: 'user:role:x' is ambiguous: a name may not start with role:",
        ),
        (
            "p, role:user:x, llm:*, call, allow",
            "line 1: 'role:user:x' is ambiguous: a name may not start with user:",
        ),
        ("g, role:role:x, y", "line 1: 'role:role:x' is ambiguous: a name may not start with role:"),
    ],
)
def test_a_policy_line_with_an_empty_or_doubly_prefixed_name_or_a_granted_subject_is_refused(
    tmp_path: Path, line: str, problem: str
) -> None:
    (tmp_path / "policy.csv").write_text(line + "\n")
    assert policy_problems(tmp_path / "policy.csv") == [problem]
    with pytest.raises(PolicyError, match=re.escape(problem)):
        PolicyEngine(POLICIES / "model.conf", tmp_path / "policy.csv")


def test_a_bare_name_in_a_policy_line_is_read_as_a_role(tmp_path: Path) -> None:
    (tmp_path / "policy.csv").write_text(
        "p, admins, *, *, allow\n"
        "p, agents, llm:*, call, allow\n"
        "g, reviewer, agents\n"
        "g, user:ivy, admins\n"
        "p, user:ci-bot, mcp:docs/search, call, allow\n"
    )
    assert policy_problems(tmp_path / "policy.csv") == []
    engine = PolicyEngine(POLICIES / "model.conf", tmp_path / "policy.csv")
    assert engine.decide("x", ("admins",), "mcp:fs/rm", "call") == engine.decide(
        None, ("admins",), "mcp:fs/rm", "call"
    )
    decision = engine.decide("x", ("agents",), "llm:mock-fast", "call")
    assert (decision.allowed, decision.rule, decision.line) == (True, "p, agents, llm:*, call, allow", 2)
    assert engine.decide("x", ("reviewer",), "llm:mock-fast", "call").allowed  # g, reviewer, agents
    assert engine.decide("ivy", (), "mcp:fs/rm", "call").allowed  # g, user:ivy, admins
    assert engine.decide("ci-bot", (), "mcp:docs/search", "call").allowed  # user: still names a subject
    for subject in ("admins", "agents", "reviewer"):  # never the subject of the same name
        assert not engine.decide(subject, (), "llm:mock-fast", "call").allowed
    assert not engine.decide(None, ("ci-bot",), "mcp:docs/search", "call").allowed


def test_the_shipped_policy_has_no_ambiguous_line() -> None:
    assert policy_problems(POLICIES / "policy.csv") == []


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def policy_config(tmp_path: Path, policy: str, keys: list[dict[str, object]]) -> Path:
    """A config with its own policy.csv (and the shipped model.conf) and these keys."""
    shutil.copy(POLICIES / "model.conf", tmp_path / "model.conf")
    (tmp_path / "policy.csv").write_text(policy)
    files = {"model": "model.conf", "policy": "policy.csv"}
    return write_config(tmp_path, {}, {"auth": {"api_keys": keys}, "policies": files})


def test_check_config_reports_malformed_policy_lines_and_subjects_named_like_roles(tmp_path: Path) -> None:
    keys: list[dict[str, object]] = [
        {"subject": "tester", "roles": ["agents"], "sha256": sha("a" * 24)},
        {"subject": "agents", "roles": [], "sha256": sha("b" * 24)},  # collides with a role
    ]
    policy = "# roles\np, role:agents, llm:*, call, allow\np, interns, llm:*, call, allow\np, user:role:x, *, *, allow\n"
    cfg = policy_config(tmp_path, policy, keys)
    code, _, err = run("check-config", "--config", str(cfg))
    assert code == 3
    assert err.splitlines() == [
        f"{tmp_path / 'policy.csv'}: line 4: 'user:role:x' is ambiguous: a name may not start with role:",
        f"{cfg}: auth.api_keys[1].subject: 'agents' is also a role name: subjects and roles must not share a name",
    ]


def bare_subject_config(tmp_path: Path) -> Path:
    """A policy written for the subject alice before the prefixes (`p, alice, …`: now the role alice)."""
    keys: list[dict[str, object]] = [
        {"subject": "alice", "roles": ["agents"], "sha256": sha("a" * 24)},
        {"subject": "bob", "roles": [], "sha256": sha("b" * 24)},
    ]
    policy = "p, agents, llm:*, call, allow\np, alice, mcp:*, call, allow\ng, user:bob, alice\n"
    return policy_config(tmp_path, policy, keys)


def test_check_config_flags_a_bare_policy_name_that_is_also_a_key_subject(tmp_path: Path) -> None:
    cfg = bare_subject_config(tmp_path)
    code, _, err = run("check-config", "--config", str(cfg))
    assert code == 3
    assert err.splitlines() == [
        f"{tmp_path / 'policy.csv'}: 'alice' in line 2 is read as a role; the key subject alice is not in it: "
        "write user:alice",
        f"{tmp_path / 'policy.csv'}: 'alice' in line 3 is a role, and a key subject too: rename one",
    ]


def test_serve_loads_a_policy_with_a_bare_name_that_is_also_a_key_subject_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(bare_subject_config(tmp_path))
    assert check(settings) == []  # what serve refuses
    assert len(ambiguities(settings)) == 2  # what only check-config refuses
    store = PolicyStore(
        tmp_path / "model.conf", tmp_path / "policy.csv", subjects=frozenset({"alice", "bob"})
    )
    with caplog.at_level("WARNING", logger="agentgw.policy"):
        assert store.load()
    assert [r.getMessage() for r in caplog.records] == [
        f"policy {tmp_path / 'policy.csv'}: 'alice' in line 2 is read as a role; the key subject alice is not in it:"
        " write user:alice",
        f"policy {tmp_path / 'policy.csv'}: 'alice' in line 3 is a role, and a key subject too: rename one",
    ]
    assert not store.decide("alice", ("agents",), "mcp:fs/rm", "call").allowed  # the line is the role's
    assert store.decide("bob", (), "mcp:fs/rm", "call").allowed  # g, user:bob, alice


def test_check_config_refuses_key_names_that_carry_a_prefix(tmp_path: Path) -> None:
    keys = [
        {"subject": "role:x", "roles": [], "sha256": sha("c" * 24)},
        {"subject": "y", "roles": ["user:z"], "sha256": sha("d" * 24)},
    ]
    cfg = write_config(tmp_path, {}, {"auth": {"api_keys": keys}})
    code, _, err = run("check-config", "--config", str(cfg))
    assert code == 3
    assert err.splitlines() == [
        f"{cfg}: auth.api_keys[0].subject: 'role:x' is ambiguous: a name may not start with role:",
        f"{cfg}: auth.api_keys[1].roles: 'user:z' is ambiguous: a name may not start with user:",
    ]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--subject", "role:x"], "'role:x' is ambiguous: a name may not start with role:"),
        (["--subject", "user:x"], "'user:x' is ambiguous: a name may not start with user:"),
        (
            ["--subject", "x", "--role", "role:agents"],
            "'role:agents' is ambiguous: a name may not start with role:",
        ),
        (["--subject", "admins"], "'admins' is also a role name: subjects and roles must not share a name"),
        (["--subject", "agents"], "'agents' is also a role name: subjects and roles must not share a name"),
        (["--subject", "ops", "--role", "ops"], "'ops' is also a role name"),
        (["--subject", "reviewer"], "'reviewer' is also a role name"),  # `g, role:reviewer, role:interns`
    ],
)
def test_keys_create_refuses_names_that_mix_subjects_and_roles(
    tmp_path: Path, args: list[str], problem: str
) -> None:
    cfg = write_config(tmp_path, MOCK_REGISTRY)
    code, out, err = run("keys", "create", *args, "--config", str(cfg))
    assert (code, out) == (3, "")
    assert problem in err
    assert not (tmp_path / "keys.yaml").exists()


def test_keys_create_refuses_a_subject_named_like_a_bare_policy_role(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, MOCK_REGISTRY, {"policies": {"policy": str(bare_policy(tmp_path))}})
    code, out, err = run("keys", "create", "--subject", "interns", "--config", str(cfg))
    assert (code, out) == (3, "")
    assert "'interns' is also a role name" in err


@pytest.mark.parametrize(
    ("who", "extra", "verdict", "code"),
    [
        ("role:admins", [], "allowed: role admins call mcp:fs/rm", 0),
        ("admins", [], "denied: admins (roles: none) call mcp:fs/rm", 1),  # a bare name is a subject
        ("user:admins", [], "denied: admins (roles: none) call mcp:fs/rm", 1),
        ("user:tester", [], "allowed: tester (roles: agents) call mcp:fs/rm", 0),  # its keys' roles
        ("tester", ["--role", "admins"], "allowed: tester (roles: admins) call mcp:fs/rm", 0),
    ],
)
def test_policy_check_names_a_role_with_role_and_a_subject_bare_or_with_user(
    tmp_path: Path, who: str, extra: list[str], verdict: str, code: int
) -> None:
    cfg = str(write_config(tmp_path, {}))
    result = CliRunner().invoke(main, ["policy", "check", who, "mcp:fs/rm", "call", *extra, "--config", cfg])
    assert result.exit_code == code, result.output
    assert result.stdout.splitlines()[0] == verdict


def jwt_and_keys(tmp_path: Path, policy_file: Path, second: dict[str, object]) -> dict[str, object]:
    """Settings with the policy `policy_file`, JWTs signed by JWK1, TEST_KEY (tester, role agents) and
    NAMED_LIKE_A_ROLE for `second`."""
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [JWK1]}))
    jwt = {"issuer": "https://issuer.test", "audiences": ["agentgw"], "jwks_file": "jwks.json"}
    keys = [
        {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
        {**second, "sha256": sha(NAMED_LIKE_A_ROLE)},
    ]
    return {
        "policies": {"policy": str(policy_file)},
        "auth": {"api_keys": keys, "jwt": {**jwt, "algorithms": ["RS256"]}},
    }


async def test_a_key_or_token_whose_subject_is_a_role_name_gets_none_of_the_roles_rights(
    tmp_path: Path, policy_file: Path
) -> None:
    settings = jwt_and_keys(tmp_path, policy_file, {"subject": "admins", "roles": []})
    jwt_admins = token(sub="admins", roles=[])
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient() as c:
        for credential in (NAMED_LIKE_A_ROLE, jwt_admins):
            auth = {"authorization": f"Bearer {credential}"}
            models = await c.get(f"{url}/v1/models", headers=auth)
            chat = await c.post(
                f"{url}/v1/chat/completions",
                json={"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]},
                headers=auth,
            )
            admin = await c.get(
                f"{url}/admin/policy/check?subject=x&object=llm:mock-fast&action=call", headers=auth
            )
            assert models.json()["data"] == []
            assert chat.status_code in (403, 404) and chat.json()["error"]["code"] != "ok"
            assert (admin.status_code, admin.json()["error"]["code"]) == (403, "admin_role_required")


async def test_keys_and_tokens_get_the_rights_of_their_roles_from_bare_or_typed_policy_lines(
    tmp_path: Path, policy_file: Path
) -> None:
    settings = jwt_and_keys(tmp_path, policy_file, {"subject": "root", "roles": ["admins"]})
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient() as c:
        for credential in (TEST_KEY, token(sub="someone", roles=["agents"])):
            chat = await c.post(
                f"{url}/v1/chat/completions",
                json={"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {credential}"},
            )
            assert chat.status_code == 200, chat.text
        admin = await c.get(  # the admin API takes the key with the role admins; the role decides by its line
            f"{url}/admin/policy/check?subject=role:admins&object=llm:mock-fast&action=call",
            headers={"authorization": f"Bearer {NAMED_LIKE_A_ROLE}"},
        )
    assert (admin.status_code, admin.json()["allowed"]) == (200, True)
    assert admin.json()["rule"].replace("role:", "") == "p, admins, *, *, allow"


@pytest.mark.parametrize(
    ("subject", "allowed", "rule"),
    [
        ("role:admins", True, "p, role:admins, *, *, allow"),  # the role alone
        ("admins", False, None),  # a bare name is a subject, never the role
        ("user:admins", False, None),
    ],
)
async def test_the_admin_policy_check_names_roles_and_subjects_like_the_cli(
    tmp_path: Path, subject: str, allowed: bool, rule: str | None
) -> None:
    q = f"subject={subject}&object=llm:mock-fast&action=call"
    async with (
        gateway(tmp_path, MOCK_REGISTRY, identity_settings(tmp_path)) as (url, _),
        httpx.AsyncClient() as c,
    ):
        r = await c.get(f"{url}/admin/policy/check?{q}", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert (r.json()["allowed"], r.json()["rule"]) == (allowed, rule)
