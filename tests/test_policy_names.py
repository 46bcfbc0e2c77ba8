"""Subjects and roles never share a name space: the Casbin request names a caller `user:<subject>` and each of its
roles `role:<name>`, policy lines must say which they mean, and names that could be read either way are refused
(`keys create`, `check-config`). A subject that happens to be called like a role gets none of its permissions."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from agentgw.cli import main
from agentgw.policy import PolicyEngine, PolicyError, policy_problems
from tests.support import MOCK_REGISTRY, POLICIES, TEST_KEY, gateway, sha, write_config
from tests.test_identity import ADMIN_KEY, token
from tests.test_identity import settings as identity_settings
from tests.test_jwt import JWK1

NAMED_LIKE_A_ROLE = "agw-named-admins-0123456789"


@pytest.fixture
def engine() -> PolicyEngine:
    return PolicyEngine(POLICIES / "model.conf", POLICIES / "policy.csv")


@pytest.mark.parametrize(
    ("subject", "roles", "allowed"),
    [
        ("admins", (), False),  # a subject called like the role gets nothing from `p, role:admins, …`
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
        (
            "p, admins, *, *, allow",
            "line 1: 'admins' names neither a subject nor a role: write user:admins or role:admins",
        ),
        (
            "g, alice, role:admins",
            "line 1: 'alice' names neither a subject nor a role: write user:alice or role:alice",
        ),
        (
            "g, user:alice, user:bob",
            "line 1: 'user:bob' is a subject: only a role can be granted (role:<name>)",
        ),
        ("g, role:a, user:bob", "line 1: 'user:bob' is a subject: only a role can be granted (role:<name>)"),
        ("p, role:, llm:*, call, allow", "line 1: 'role:' has an empty name"),
        (
            "p, user:role:x, llm:*, call, allow",
            "line 1: 'user:role:x' is ambiguous: a name may not start with role:",
        ),
        (
            "p, role:user:x, llm:*, call, allow",
            "line 1: 'role:user:x' is ambiguous: a name may not start with user:",
        ),
    ],
)
def test_a_policy_line_that_does_not_say_subject_or_role_is_refused(
    tmp_path: Path, line: str, problem: str
) -> None:
    (tmp_path / "policy.csv").write_text(line + "\n")
    assert policy_problems(tmp_path / "policy.csv") == [problem]
    with pytest.raises(PolicyError, match=re.escape(problem)):
        PolicyEngine(POLICIES / "model.conf", tmp_path / "policy.csv")


def test_the_shipped_policy_has_no_ambiguous_line() -> None:
    assert policy_problems(POLICIES / "policy.csv") == []


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_check_config_reports_ambiguous_policy_lines_and_subjects_named_like_roles(tmp_path: Path) -> None:
    shutil.copy(POLICIES / "model.conf", tmp_path / "model.conf")
    (tmp_path / "policy.csv").write_text(
        "# roles\np, role:agents, llm:*, call, allow\np, interns, llm:*, call, allow\n"
    )
    keys = [
        {"subject": "tester", "roles": ["agents"], "sha256": sha("a" * 24)},
        {"subject": "agents", "roles": [], "sha256": sha("b" * 24)},  # collides with a role
    ]
    cfg = write_config(
        tmp_path,
        {},
        {"auth": {"api_keys": keys}, "policies": {"model": "model.conf", "policy": "policy.csv"}},
    )
    code, _, err = run("check-config", "--config", str(cfg))
    assert code == 3
    assert err.splitlines() == [
        f"{tmp_path / 'policy.csv'}: line 3: 'interns' names neither a subject nor a role: write user:interns or"
        " role:interns",
        f"{cfg}: auth.api_keys[1].subject: 'agents' is also a role name: subjects and roles must not share a name",
    ]


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


async def test_a_key_or_token_whose_subject_is_a_role_name_gets_none_of_the_roles_rights(
    tmp_path: Path,
) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [JWK1]}))
    settings = {
        "auth": {
            "api_keys": [
                {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
                {"subject": "admins", "roles": [], "sha256": sha(NAMED_LIKE_A_ROLE)},
            ],
            "jwt": {
                "issuer": "https://issuer.test",
                "audiences": ["agentgw"],
                "jwks_file": "jwks.json",
                "algorithms": ["RS256"],
            },
        }
    }
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
