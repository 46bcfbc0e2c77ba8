"""Authorization on the LLM plane: default deny, roles and globs from the shipped policy, filtered model
listings, denied models that answer exactly like unknown ones (unless `authz.reveal_denied`), and the deciding
policy line in the audit record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import MOCK_REGISTRY, OTHER_KEY, POLICIES, TEST_KEY, audit_records, gateway, sha

INTERN_KEY = "agw-intern-key-0123456789"
KEYS = {
    "auth": {
        "api_keys": [
            {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
            {"subject": "other", "roles": [], "sha256": sha(OTHER_KEY)},
            {"subject": "ivy", "roles": ["interns"], "sha256": sha(INTERN_KEY)},
        ]
    }
}


def concealed(rule: str) -> dict[str, str]:
    """The authz decision of a denial answered as an unknown model."""
    detail = "answered as model_not_found (authz.reveal_denied: false)"
    return {"stage": "authz", "outcome": "deny", "rule": rule, "detail": detail}


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("key", "model", "status"),
    [
        (TEST_KEY, "mock-fast", 200),  # agents: llm:* allowed
        (TEST_KEY, "mock-embed", 200),
        (INTERN_KEY, "mock-fast", 200),  # interns: only llm:mock-fast
        (INTERN_KEY, "mock-embed", 403),
        (OTHER_KEY, "mock-fast", 403),  # no role, no rule: default deny
        (INTERN_KEY, "MOCK-FAST", 404),  # case changes name another (unknown) model
        (INTERN_KEY, "mock-fast ", 404),
        (INTERN_KEY, "mock\u2010fast", 404),  # a Unicode hyphen is another name
    ],
)
async def test_chat_is_allowed_only_where_the_policy_allows(
    tmp_path: Path, key: str, model: str, status: int
) -> None:
    settings = {**KEYS, "authz": {"reveal_denied": True}}  # 403s, to tell denials from unknown names here
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient() as c:
        r = await c.post(
            f"{url}/v1/chat/completions", json=chat(model), headers={"authorization": f"Bearer {key}"}
        )
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["error"]["code"] == {403: "permission_denied", 404: "model_not_found"}[status]


@pytest.mark.parametrize(
    ("key", "visible"),
    [(TEST_KEY, ["mock-embed", "mock-fast"]), (INTERN_KEY, ["mock-fast"]), (OTHER_KEY, [])],
)
async def test_model_listing_shows_exactly_what_the_caller_may_call(
    tmp_path: Path, key: str, visible: list[str]
) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, KEYS) as (url, _), httpx.AsyncClient() as c:
        r = await c.get(f"{url}/v1/models", headers={"authorization": f"Bearer {key}"})
    assert [m["id"] for m in r.json()["data"]] == visible


async def test_retrieving_a_model_you_may_not_call_looks_like_it_does_not_exist(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, KEYS) as (url, _), httpx.AsyncClient() as c:
        hidden = await c.get(f"{url}/v1/models/mock-embed", headers={"authorization": f"Bearer {INTERN_KEY}"})
        missing = await c.get(f"{url}/v1/models/nope", headers={"authorization": f"Bearer {INTERN_KEY}"})
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["message"].replace("mock-embed", "X") == missing.json()["error"][
        "message"
    ].replace("nope", "X")


async def test_the_audit_record_names_the_policy_line_that_decided(tmp_path: Path) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, KEYS) as (url, _), httpx.AsyncClient() as c:
        await c.post(
            f"{url}/v1/chat/completions",
            json=chat("mock-fast"),
            headers={"authorization": f"Bearer {TEST_KEY}"},
        )
        await c.post(
            f"{url}/v1/chat/completions",
            json=chat("mock-fast"),
            headers={"authorization": f"Bearer {OTHER_KEY}"},
        )
    allowed, denied = audit_records(tmp_path)[-2:]
    assert {
        "stage": "authz",
        "outcome": "allow",
        "rule": "policy.csv:8: p, role:agents, llm:*, call, allow",
    } in allowed["decisions"]
    assert denied["status"] == "denied"
    assert concealed("default deny") in denied["decisions"]


# Agents may call every model but one: an unknown name passes the policy, the denied one does not.
ALL_BUT_ONE = "p, role:agents, llm:*, call, allow\np, role:agents, llm:mock-embed, *, deny\n"


def all_but_one(tmp_path: Path, **authz: bool) -> dict[str, object]:
    (tmp_path / "policy.csv").write_text(ALL_BUT_ONE)
    return {
        **KEYS,
        "policies": {"model": str(POLICIES / "model.conf"), "policy": str(tmp_path / "policy.csv")},
        **({"authz": authz} if authz else {}),
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", chat),
        ("/v1/embeddings", lambda model: {"model": model, "input": "hi"}),
    ],
)
async def test_a_denied_model_answers_exactly_like_an_unknown_one(
    tmp_path: Path, path: str, body: Callable[[str], dict[str, object]]
) -> None:
    auth = {"authorization": f"Bearer {TEST_KEY}", "x-agentgw-task": "same-task"}
    async with gateway(tmp_path, MOCK_REGISTRY, all_but_one(tmp_path)) as (url, _), httpx.AsyncClient() as c:
        denied = await c.post(f"{url}{path}", json=body("mock-embed"), headers=auth)
        unknown = await c.post(f"{url}{path}", json=body("no-such-model"), headers=auth)
    assert denied.status_code == unknown.status_code == 404
    varies = {"content-length", "date"}  # the name's length; the clock
    assert {k: v for k, v in denied.headers.items() if k not in varies} == {
        k: v for k, v in unknown.headers.items() if k not in varies
    }
    assert denied.content.replace(b"mock-embed", b"M") == unknown.content.replace(b"no-such-model", b"M")
    assert denied.json()["error"]["code"] == "model_not_found"
    # the audit record keeps the real reason: a denial, and the line that decided it
    record = next(r for r in audit_records(tmp_path) if r["target"] == "llm:mock-embed")
    assert record["status"] == "denied"
    assert concealed("policy.csv:2: p, role:agents, llm:mock-embed, *, deny") in record["decisions"]
    assert (record["error_code"], record["http_status"]) == ("permission_denied", 403)


async def test_reveal_denied_answers_a_denied_model_with_403(tmp_path: Path) -> None:
    auth = {"authorization": f"Bearer {TEST_KEY}"}
    settings = all_but_one(tmp_path, reveal_denied=True)
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient() as c:
        denied = await c.post(f"{url}/v1/chat/completions", json=chat("mock-embed"), headers=auth)
        unknown = await c.post(f"{url}/v1/chat/completions", json=chat("no-such-model"), headers=auth)
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "permission_denied")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")


async def test_an_unknown_model_is_refused_before_any_later_stage_could_answer_it_differently(
    tmp_path: Path,
) -> None:
    # One request a minute: were an unknown name mediated, the budget stage would answer it 429 while the denied
    # one gets 404 from authz, telling them apart.
    rule = {"match": {"roles": ["agents"]}, "windows": {"requests_per_minute": 1}}
    settings = {**all_but_one(tmp_path), "budgets": {"rules": [rule]}}
    auth = {"authorization": f"Bearer {TEST_KEY}"}
    async with gateway(tmp_path, MOCK_REGISTRY, settings) as (url, _), httpx.AsyncClient() as c:
        spent = await c.post(f"{url}/v1/chat/completions", json=chat("mock-fast"), headers=auth)
        denied = await c.post(f"{url}/v1/chat/completions", json=chat("mock-embed"), headers=auth)
        unknown = await c.post(f"{url}/v1/chat/completions", json=chat("no-such-model"), headers=auth)
    assert spent.status_code == 200
    assert (denied.status_code, unknown.status_code) == (404, 404)
    assert denied.json()["error"]["code"] == unknown.json()["error"]["code"] == "model_not_found"
