"""Authorization on the LLM plane: default deny, roles and globs from the shipped policy, filtered model
listings, and the deciding policy line in the audit record."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, audit_records, gateway, sha

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
        (INTERN_KEY, "MOCK-FAST", 403),  # case changes do not match
        (INTERN_KEY, "mock-fast ", 403),
        (INTERN_KEY, "mock\u2010fast", 403),  # a Unicode hyphen is another name
    ],
)
async def test_chat_is_allowed_only_where_the_policy_allows(
    tmp_path: Path, key: str, model: str, status: int
) -> None:
    async with gateway(tmp_path, MOCK_REGISTRY, KEYS) as (url, _), httpx.AsyncClient() as c:
        r = await c.post(
            f"{url}/v1/chat/completions", json=chat(model), headers={"authorization": f"Bearer {key}"}
        )
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["error"]["code"] == "permission_denied"


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
    assert {"stage": "authz", "outcome": "deny", "rule": "default deny"} in denied["decisions"]
