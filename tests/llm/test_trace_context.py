"""W3C trace context to LLM upstreams: every attempt (retries included) sends a `traceparent` in the caller's
trace that names that attempt's own span, for every HTTP provider kind, whether or not traces are exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.anthropic_upstream import FakeAnthropic
from tests.support import TEST_KEY, audit_records, gateway, serve
from tests.upstreams import FakeOpenAI

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def registry(kind: str, url: str) -> dict[str, Any]:
    provider: dict[str, Any] = {"name": "up", "kind": kind, "base_url": url, "api_key": "sk-upstream-secret"}
    if kind == "azure":
        provider["api_version"] = "2024-10-21"
    retry = {"attempts": 2, "backoff_ms": 0, "max_backoff_ms": 0}
    return {
        "llm": {
            "providers": [provider],
            "models": [{"name": "m", "targets": [{"provider": "up", "model": "dep-1"}], "retry": retry}],
        }
    }


@pytest.mark.parametrize(("kind", "path"), [("openai", "/v1"), ("azure", ""), ("anthropic", "")])
@pytest.mark.parametrize("stream", [False, True])
async def test_each_attempt_sends_a_traceparent_naming_its_own_span_in_the_callers_trace(
    tmp_path: Path, kind: str, path: str, stream: bool
) -> None:
    fake: FakeOpenAI | FakeAnthropic = (
        FakeAnthropic(failures=[529]) if kind == "anthropic" else FakeOpenAI(failures=[503])
    )
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {TEST_KEY}", "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    async with serve(fake.app()) as up, gateway(tmp_path, registry(kind, up + path)) as (url, _):
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            assert r.status_code == 200
    sent = [req["headers"]["traceparent"] for req in fake.requests]
    assert len(sent) == 2
    spans = []
    for tp in sent:
        version, trace_id, span_id, flags = tp.split("-")
        assert (version, trace_id, flags) == ("00", CALLER_TRACE, "01")
        spans.append(span_id)
    record = audit_records(tmp_path)[-1]
    assert (record["trace_id"], record["parent_span_id"]) == (CALLER_TRACE, CALLER_SPAN)
    # two attempts, two spans, neither the caller's nor the gateway's own server span
    assert len(set(spans)) == 2 and not {CALLER_SPAN, record["span_id"]} & set(spans)
    assert [a["outcome"] for a in record["attempts"]] == ["error", "ok"]
