"""What one audit record holds, through the real gateway: every field the auditor needs, for allowed, denied and
failed calls; never a credential (the caller's key, the provider's key echoed back, credential-named fields,
key-shaped strings); operator redaction (drop, mask, hash, patterns); full payloads only for the targets
configured, a stream reassembled; cost from the registry's pricing, estimated or provider-reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.audit.support import store_bytes
from tests.support import OTHER_KEY, TEST_KEY, audit_records, gateway, serve
from tests.upstreams import FakeOpenAI

PROVIDER_KEY = "sk-provider-secret-0123456789abcdef"
PRICING = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
AUTH = {"authorization": f"Bearer {TEST_KEY}", "x-agentgw-task": "job-1"}
FIELDS = {
    "v",
    "kind",
    "record_id",
    "ts",
    "time",
    "duration_ms",
    "trace_id",
    "span_id",
    "parent_span_id",
    "task_id",
    "parent_task_id",
    "child_task_id",
    "principal",
    "roles",
    "auth",
    "key_id",
    "client",
    "plane",
    "operation",
    "target",
    "endpoint",
    "status",
    "http_status",
    "error_code",
    "error",
    "stream_cut",
    "decisions",
    "attempts",
    "usage",
    "cost",
    "charged",
    "request",
    "response",
}


def registry(upstream: str | None = None) -> dict[str, Any]:
    providers: list[dict[str, Any]] = [{"name": "mock", "kind": "mock"}]
    models: list[dict[str, Any]] = [
        {"name": "echo", "pricing": PRICING, "targets": [{"provider": "mock", "model": "echo-1"}]},
        {"name": "plain", "targets": [{"provider": "mock", "model": "echo-1"}]},
    ]
    if upstream is not None:
        providers.append(
            {"name": "up", "kind": "openai", "base_url": f"{upstream}/v1", "api_key": PROVIDER_KEY}
        )
        models.append({"name": "real", "pricing": PRICING, "targets": [{"provider": "up", "model": "gpt-x"}]})
    return {"llm": {"providers": providers, "models": models}}


def chat(text: str, model: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_allowed_denied_and_failed_calls_each_leave_one_complete_record(tmp_path: Path) -> None:
    headers = {**AUTH, "x-agentgw-parent-task": "job-0", "traceparent": f"00-{'a' * 32}-{'b' * 16}-01"}
    async with gateway(tmp_path, registry()) as (url, _), httpx.AsyncClient(base_url=url) as c:
        ok = await c.post("/v1/chat/completions", json=chat("hello there", max_tokens=5), headers=headers)
        denied = await c.post(
            "/v1/chat/completions", json=chat("hi"), headers={"authorization": f"Bearer {OTHER_KEY}"}
        )
        failed = await c.post(
            "/v1/chat/completions", content=b"{nope", headers={**AUTH, "content-type": "application/json"}
        )
    # the denied caller is answered as if the model did not exist; its record keeps the real 403
    assert (ok.status_code, denied.status_code, failed.status_code) == (200, 404, 400)
    first, second, third = audit_records(tmp_path)
    assert set(first) == FIELDS
    assert (first["trace_id"], first["parent_span_id"]) == ("a" * 32, "b" * 16)
    assert (first["task_id"], first["parent_task_id"], first["principal"], first["roles"]) == (
        "job-1",
        "job-0",
        "tester",
        ["agents"],
    )
    assert (first["plane"], first["operation"], first["target"], first["status"], first["http_status"]) == (
        "llm",
        "chat",
        "llm:echo",
        "ok",
        200,
    )
    assert [d["stage"] for d in first["decisions"]] == ["authn", "authz"]
    assert first["decisions"][1]["rule"].startswith("policy.csv:")
    assert [a["outcome"] for a in first["attempts"]] == ["ok"]
    usage = first["usage"]
    assert first["cost"] == {
        "usd": round((usage["input_tokens"] * 3.0 + usage["output_tokens"] * 15.0) / 1e6, 9),
        "estimated": usage["estimated"],
        "source": "registry pricing",
    }
    assert first["request"] == {
        "model": "echo",
        "stream": False,
        "max_tokens": 5,
        "messages": 1,
        "tools": [],
        "last_message": {"role": "user", "content": "hello there"},
    }
    assert first["response"]["finish_reason"] in ("stop", "length") and first["response"]["content"]
    assert first["duration_ms"] > 0 and first["time"].endswith("Z")
    assert (second["principal"], second["status"], second["error_code"], second["http_status"]) == (
        "other",
        "denied",
        "permission_denied",
        403,
    )
    assert {
        "stage": "authz",
        "outcome": "deny",
        "rule": "default deny",
        "detail": "answered as model_not_found (authz.reveal_denied: false)",
    } in second["decisions"]
    assert (third["status"], third["error_code"], third["principal"]) == ("error", "invalid_json", "tester")


async def test_provider_reported_usage_is_priced_as_reported(tmp_path: Path) -> None:
    up = FakeOpenAI()
    async with serve(up.app()) as u, gateway(tmp_path, registry(u)) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            await c.post("/v1/chat/completions", json=chat("hi", model="real"), headers=AUTH)
    [record] = audit_records(tmp_path)
    assert record["usage"]["estimated"] is False
    assert record["cost"] == {
        "usd": round((11 * 3.0 + 7 * 15.0) / 1e6, 9),
        "estimated": False,
        "source": "registry pricing",
    }


async def test_no_credential_ever_reaches_a_record(tmp_path: Path) -> None:
    leaky = FakeOpenAI(reply=f"my key is {PROVIDER_KEY} and yours is {TEST_KEY}")
    text = f"use Bearer {TEST_KEY} or agw-another-key-0123456789 and eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    payloads = {"audit": {"payloads": [{"match": "llm:*"}]}}
    async with serve(leaky.app()) as u, gateway(tmp_path, registry(u), payloads) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            body = chat(
                text, model="real", api_key="sk-in-body-0123456789abcdefgh", user={"password": "hunter2"}
            )
            r = await c.post("/v1/chat/completions", json=body, headers={**AUTH, "x-api-key": "ignored"})
    assert r.status_code == 200
    raw = store_bytes(tmp_path)
    for secret in (
        TEST_KEY,
        PROVIDER_KEY,
        "agw-another-key",
        "eyJhbGciOiJIUzI1NiJ9",
        "sk-in-body",
        "hunter2",
    ):
        assert secret.encode() not in raw, secret
    [record] = audit_records(tmp_path)
    assert "[secret]" in record["request"]["last_message"]["content"]
    assert "[secret]" in record["response"]["content"]
    assert (
        "api_key" not in record["payload"]["request"]
        and "password" not in record["payload"]["request"]["user"]
    )


async def test_operator_rules_drop_mask_and_hash_fields_and_patterns(tmp_path: Path) -> None:
    redaction = {
        "drop": ["user"],
        "mask": ["metadata.email"],
        "hash": ["customer_id"],
        "patterns": [
            {"regex": r"\b\d{3}-\d{2}-\d{4}\b", "action": "mask"},
            {"regex": "TOP SECRET", "action": "drop"},
        ],
    }
    audit = {"audit": {"redaction": redaction, "payloads": [{"match": "llm:echo", "response": False}]}}
    body = chat(
        "my ssn is 123-45-6789",
        user="alice",
        metadata={"email": "a@example.com", "customer_id": "c-42", "note": "TOP SECRET plan"},
    )
    async with gateway(tmp_path, registry(), audit) as (url, _), httpx.AsyncClient(base_url=url) as c:
        await c.post("/v1/chat/completions", json=body, headers=AUTH)
        await c.post("/v1/chat/completions", json={**body, "model": "plain"}, headers=AUTH)
    captured, plain = audit_records(tmp_path)
    req = captured["payload"]["request"]
    assert "user" not in req
    assert req["metadata"]["email"] == "***"
    assert req["metadata"]["customer_id"].startswith("sha256:") and len(req["metadata"]["customer_id"]) == 23
    assert req["metadata"]["note"] == "[dropped]"
    assert req["messages"][0]["content"] == "my ssn is ***"
    assert captured["request"]["last_message"]["content"] == "my ssn is ***"
    assert "response" not in captured["payload"]  # request only, as configured
    assert "payload" not in plain  # llm:plain matches no capture rule


async def test_a_captured_stream_is_reassembled_and_summaries_can_hold_no_text(tmp_path: Path) -> None:
    audit = {"audit": {"payloads": [{"match": "llm:echo"}], "summaries": {"max_chars": 0}}}
    async with gateway(tmp_path, registry(), audit) as (url, _), httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/v1/chat/completions", json=chat("one two three", stream=True), headers=AUTH)
    assert r.text.endswith("data: [DONE]\n\n")
    [record] = audit_records(tmp_path)
    message = record["payload"]["response"]["choices"][0]["message"]
    assert message["content"] == "one two three"
    assert record["payload"]["request"]["stream"] is True
    assert record["request"]["last_message"]["content"] is None  # max_chars 0: structure only
    assert record["response"]["content"] is None and record["response"]["finish_reason"] == "stop"
    assert orjson.dumps(record["usage"]) and record["usage"]["output_tokens"] >= 3


async def test_a_jsonl_copy_of_each_record_can_be_kept_beside_the_store(tmp_path: Path) -> None:
    async with gateway(tmp_path, registry(), {"audit": {"jsonl": "copy.jsonl"}}) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            await c.post("/v1/chat/completions", json=chat("hi"), headers=AUTH)
            await c.post("/v1/chat/completions", json=chat("hi", model="nope"), headers=AUTH)
    lines = [orjson.loads(line) for line in (tmp_path / "copy.jsonl").read_bytes().splitlines()]
    assert lines == audit_records(tmp_path)
