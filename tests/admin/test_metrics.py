"""`GET /metrics`: after allowed, denied, failed and budget-refused calls through the real gateway, the
Prometheus text parses with the reference parser and every counter says what happened; the endpoint needs an
admin (or configured) role unless it is made public."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import MOCK_REGISTRY, OTHER_KEY, TEST_KEY, audit_records, gateway, serve, sha

ADMIN_KEY = "agw-admin-key-0123456789"
LIMITED_KEY = "agw-limited-key-0123456789"
POOR_KEY = "agw-poor-key-0123456789"
SCRAPER_KEY = "agw-scraper-key-0123456789"

KEYS: dict[str, Any] = {
    "auth": {
        "api_keys": [
            {"subject": "tester", "roles": ["agents"], "sha256": sha(TEST_KEY)},
            {"subject": "other", "roles": [], "sha256": sha(OTHER_KEY)},
            {"subject": "root", "roles": ["admins"], "sha256": sha(ADMIN_KEY)},
            {"subject": "limited", "roles": ["agents"], "sha256": sha(LIMITED_KEY)},
            {"subject": "poor", "roles": ["agents"], "sha256": sha(POOR_KEY)},
            {"subject": "prometheus", "roles": ["metrics"], "sha256": sha(SCRAPER_KEY)},
        ]
    }
}
BUDGETS: dict[str, Any] = {
    "budgets": {
        "rules": [
            {"match": {"subjects": ["limited"]}, "windows": {"requests_per_minute": 1}},
            {"match": {"subjects": ["poor"]}, "task": {"tokens": 5}},
        ]
    }
}
REGISTRY: dict[str, Any] = {
    "llm": {
        "providers": [
            {"name": "mock", "kind": "mock"},
            {
                "name": "broken",
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
            },  # nothing listens there
        ],
        "models": [
            {"name": "mock-fast", "targets": [{"provider": "mock", "model": "mock-fast-1"}]},
            {
                "name": "flaky",
                "targets": [{"provider": "broken", "model": "x"}],
                "retry": {"attempts": 1, "backoff_ms": 0, "max_backoff_ms": 0},
            },
        ],
    }
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by sample name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0)


async def chat(http: httpx.AsyncClient, url: str, key: str, model: str = "mock-fast") -> int:
    body = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "count these words"}]}
    r = await http.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    return r.status_code


async def scrape(http: httpx.AsyncClient, url: str, key: str | None = ADMIN_KEY) -> httpx.Response:
    return await http.get(f"{url}/metrics", headers={"authorization": f"Bearer {key}"} if key else {})


async def test_metrics_count_allowed_denied_failed_and_budget_refused_calls(tmp_path: Path) -> None:
    async with gateway(tmp_path, REGISTRY, {**KEYS, **BUDGETS}) as (url, _), httpx.AsyncClient() as http:
        statuses = [
            await chat(http, url, TEST_KEY),
            await chat(http, url, TEST_KEY),
            await chat(http, url, TEST_KEY, "flaky"),  # the upstream is down
            await chat(http, url, OTHER_KEY),  # no role: the policy says no
            await chat(http, url, "agw-not-a-key-0000"),
            await chat(http, url, LIMITED_KEY),
            await chat(http, url, LIMITED_KEY),  # one request a minute
            await chat(http, url, POOR_KEY),  # 5 tokens cannot cover the prompt and max_tokens
        ]
        r = await scrape(http, url)
    assert statuses == [200, 200, 502, 404, 401, 200, 429, 429]  # denied: answered as an unknown model
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = parse(r.text)
    requests = {
        s: value(m, "agentgw_requests_total", plane="llm", operation="chat", status=s)
        for s in ("ok", "error", "denied")
    }
    assert requests == {"ok": 3, "error": 1, "denied": 4}
    codes = ("upstream_error", "permission_denied", "invalid_api_key", "rate_limited", "budget_exhausted")
    assert {c: value(m, "agentgw_errors_total", plane="llm", code=c) for c in codes} == dict.fromkeys(
        codes, 1
    )
    stages = {
        s: value(m, "agentgw_denials_total", plane="llm", stage=s) for s in ("authn", "authz", "budget")
    }
    assert stages == {"authn": 1, "authz": 1, "budget": 2}
    budget = "agentgw_budget_rejections_total"
    assert value(m, budget, plane="llm", reason="rate_limited", phase="request") == 1
    assert value(m, budget, plane="llm", reason="budget_exhausted", phase="request") == 1
    attempts = "agentgw_upstream_attempts_total"
    assert value(m, attempts, plane="llm", target="mock/mock-fast-1", outcome="ok") == 3
    assert value(m, attempts, plane="llm", target="broken/x", outcome="error") == 1
    assert value(m, "agentgw_request_duration_seconds_count", plane="llm", operation="chat") == 8
    assert value(m, "agentgw_request_duration_seconds_bucket", plane="llm", operation="chat", le="+Inf") == 8
    assert ("agentgw_audit_queue_depth", frozenset()) in m
    assert value(m, "agentgw_build_info", version="0.1.0") == 1
    assert value(m, "process_resident_memory_bytes") > 0 and value(m, "process_cpu_seconds_total") > 0
    # token counters agree with the audit records of the same calls
    ok = [
        rec["usage"]
        for rec in audit_records(tmp_path)
        if rec["status"] == "ok" and rec["operation"] == "chat"
    ]
    assert len(ok) == 3
    for kind in ("input", "output"):
        assert (
            value(m, "agentgw_tokens_total", model="mock-fast", type=kind)
            == sum(u[f"{kind}_tokens"] for u in ok)
            > 0
        )


async def test_tool_calls_are_counted_by_server_tool_and_outcome(tmp_path: Path) -> None:
    docs = Upstream("docs")
    entry = server_entry("docs", "", tools={"tags": {"echo": ["dangerous"]}})
    async with serve(docs) as up:
        entry["url"] = f"{up}/mcp"
        async with gateway(tmp_path, registry(entry), KEYS) as (url, _), httpx.AsyncClient() as http:
            async with mcp_client(f"{url}/mcp") as agent:
                await agent.call_tool("docs__add", {"a": 1, "b": 2})
                await agent.call_tool("docs__add", {"a": 3, "b": 4})
                for name in ("docs__echo", "docs__nope"):  # denied by policy; no such tool
                    with pytest.raises(MCPError):
                        await agent.call_tool(name, {"text": "x"})
            m = parse((await scrape(http, url)).text)
    calls = "agentgw_tool_calls_total"
    assert value(m, calls, server="docs", tool="add", status="ok") == 2
    assert value(m, calls, server="docs", tool="echo", status="denied") == 1
    assert (
        value(m, calls, server="unknown", tool="unknown", status="error") == 1
    )  # the caller's name is no label
    assert value(m, "agentgw_denials_total", plane="mcp", stage="authz") == 1
    assert value(m, "agentgw_upstream_attempts_total", plane="mcp", target="mcp:docs", outcome="ok") == 2
    assert value(m, "agentgw_requests_total", plane="mcp", operation="tools/call", status="ok") == 2


@pytest.mark.parametrize(
    ("metrics", "key", "status", "code"),
    [
        ({}, None, 401, "missing_api_key"),  # secure by default: a credential is needed…
        ({}, TEST_KEY, 403, "metrics_role_required"),  # …with an admin role
        ({}, ADMIN_KEY, 200, None),
        ({}, SCRAPER_KEY, 403, "metrics_role_required"),
        ({"roles": ["metrics"]}, SCRAPER_KEY, 200, None),  # a least-privilege scrape key
        ({"public": True}, None, 200, None),  # Prometheus' default: no credentials
        ({"enabled": False}, ADMIN_KEY, 404, "unknown_url"),
    ],
)
async def test_who_may_scrape_metrics(
    tmp_path: Path, metrics: dict[str, Any], key: str | None, status: int, code: str | None
) -> None:
    async with (
        gateway(tmp_path, MOCK_REGISTRY, {**KEYS, "metrics": metrics}) as (url, _),
        httpx.AsyncClient() as http,
    ):
        r = await scrape(http, url, key)
        post = await http.post(f"{url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == status
    if code is None:
        assert "# TYPE agentgw_requests_total counter" in r.text
    else:
        assert r.json()["error"]["code"] == code
    assert post.status_code == (404 if status == 404 else 405)


async def test_a_stream_cut_by_the_budget_counts_as_a_stream_phase_rejection(tmp_path: Path) -> None:
    long = " ".join(f"word{i}" for i in range(200))
    reg = {
        "llm": {
            "providers": [{"name": "talker", "kind": "mock", "mock": {"replies": [long]}}],
            "models": [{"name": "talk", "targets": [{"provider": "talker", "model": "talk-1"}]}],
        }
    }
    settings = {**KEYS, "budgets": {"rules": [{"match": {"subjects": ["poor"]}, "task": {"tokens": 60}}]}}
    body = {"model": "talk", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    async with gateway(tmp_path, reg, settings) as (url, _), httpx.AsyncClient() as http:
        async with http.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {POOR_KEY}"}
        ) as r:
            frames = [line async for line in r.aiter_lines() if line.startswith("data: ")]
        m = parse((await scrape(http, url)).text)
    assert frames[-1] == "data: [DONE]" and '"finish_reason":"length"' in frames[-2]
    assert (
        value(m, "agentgw_budget_rejections_total", plane="llm", reason="budget_exhausted", phase="stream")
        == 1
    )
    assert value(m, "agentgw_requests_total", plane="llm", operation="chat", status="ok") == 1
    assert value(m, "agentgw_tokens_total", model="talk", type="output") > 0
