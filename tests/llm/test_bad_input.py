"""Bad input gets a clear error in the OpenAI envelope and never a 500: a table of malformed requests, and a
property test over arbitrary bodies. The gateway runs in-process (ASGI) with its lifespan started."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentgw import create_app, load_settings
from tests.support import MOCK_REGISTRY, TEST_KEY, audit_records, write_config

AUTH = {"authorization": f"Bearer {TEST_KEY}", "content-type": "application/json"}
OK_CHAT = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}


@contextlib.asynccontextmanager
async def client(tmp: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(load_settings(write_config(tmp, MOCK_REGISTRY, {"limits": {"max_body_bytes": 4096}})))
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c
    finally:
        await app.shutdown()


def j(obj: Any) -> bytes:
    return orjson.dumps(obj)


CASES: list[tuple[str, str, str, bytes, dict[str, str], int, str]] = [
    # (name, method, path, body, headers, status, code)
    ("invalid json", "POST", "/v1/chat/completions", b"{nope", AUTH, 400, "invalid_json"),
    ("not utf-8", "POST", "/v1/chat/completions", b"\xff\xfe{}", AUTH, 400, "invalid_json"),
    ("empty body", "POST", "/v1/chat/completions", b"", AUTH, 400, "invalid_json"),
    ("array body", "POST", "/v1/chat/completions", b"[1,2]", AUTH, 400, "invalid_request"),
    ("missing model", "POST", "/v1/chat/completions", j({"messages": []}), AUTH, 400, "missing_model"),
    (
        "model not a string",
        "POST",
        "/v1/chat/completions",
        j({**OK_CHAT, "model": 7}),
        AUTH,
        400,
        "missing_model",
    ),
    (
        "unknown model",
        "POST",
        "/v1/chat/completions",
        j({**OK_CHAT, "model": "gpt-9"}),
        AUTH,
        404,
        "model_not_found",
    ),
    ("no messages", "POST", "/v1/chat/completions", j({"model": "mock-fast"}), AUTH, 400, "invalid_messages"),
    (
        "messages not a list",
        "POST",
        "/v1/chat/completions",
        j({"model": "mock-fast", "messages": "hi"}),
        AUTH,
        400,
        "invalid_messages",
    ),
    (
        "message without role",
        "POST",
        "/v1/chat/completions",
        j({"model": "mock-fast", "messages": [{"content": "x"}]}),
        AUTH,
        400,
        "invalid_messages",
    ),
    (
        "stream not a bool",
        "POST",
        "/v1/chat/completions",
        j({**OK_CHAT, "stream": "yes"}),
        AUTH,
        400,
        "invalid_type",
    ),
    (
        "negative max_tokens",
        "POST",
        "/v1/chat/completions",
        j({**OK_CHAT, "max_tokens": -1}),
        AUTH,
        400,
        "invalid_type",
    ),
    (
        "tools not a list",
        "POST",
        "/v1/chat/completions",
        j({**OK_CHAT, "tools": {"a": 1}}),
        AUTH,
        400,
        "invalid_type",
    ),
    (
        "tool_calls not a list",
        "POST",
        "/v1/chat/completions",
        j({"model": "mock-fast", "messages": [{"role": "assistant", "tool_calls": 5}, {"role": "user"}]}),
        AUTH,
        200,
        "",
    ),
    (
        "tool_choice with a string function",
        "POST",
        "/v1/chat/completions",
        j({**OK_CHAT, "tools": [{"type": "function"}], "tool_choice": {"function": "x"}}),
        AUTH,
        200,
        "",
    ),
    ("too deep", "POST", "/v1/chat/completions", b"[" * 2000 + b"]" * 2000, AUTH, 400, "json_too_deep"),
    (
        "wrong content type",
        "POST",
        "/v1/chat/completions",
        j(OK_CHAT),
        {**AUTH, "content-type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    (
        "no content type",
        "POST",
        "/v1/chat/completions",
        j(OK_CHAT),
        {"authorization": AUTH["authorization"]},
        415,
        "unsupported_media_type",
    ),
    (
        "body over the limit",
        "POST",
        "/v1/chat/completions",
        j({**OK_CHAT, "pad": "x" * 5000}),
        AUTH,
        413,
        "payload_too_large",
    ),
    (
        "no credentials",
        "POST",
        "/v1/chat/completions",
        j(OK_CHAT),
        {"content-type": "application/json"},
        401,
        "missing_api_key",
    ),
    (
        "wrong key",
        "POST",
        "/v1/chat/completions",
        j(OK_CHAT),
        {**AUTH, "authorization": "Bearer agw-nope"},
        401,
        "invalid_api_key",
    ),
    (
        "basic auth scheme",
        "POST",
        "/v1/chat/completions",
        j(OK_CHAT),
        {**AUTH, "authorization": "Basic eDp5"},
        401,
        "missing_api_key",
    ),
    (
        "bad json and no key",
        "POST",
        "/v1/chat/completions",
        b"{nope",
        {"content-type": "application/json"},
        401,
        "missing_api_key",
    ),
    ("GET on a POST route", "GET", "/v1/chat/completions", b"", AUTH, 405, "method_not_allowed"),
    ("unknown /v1 path", "POST", "/v1/completions2", j(OK_CHAT), AUTH, 404, "unknown_url"),
    ("unknown path", "GET", "/nowhere", b"", AUTH, 404, "unknown_url"),
    (
        "embeddings without input",
        "POST",
        "/v1/embeddings",
        j({"model": "mock-embed"}),
        AUTH,
        400,
        "invalid_input",
    ),
    (
        "embeddings with empty list",
        "POST",
        "/v1/embeddings",
        j({"model": "mock-embed", "input": []}),
        AUTH,
        400,
        "invalid_input",
    ),
    ("retrieve unknown model", "GET", "/v1/models/nope", b"", AUTH, 404, "model_not_found"),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "headers", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
async def test_malformed_requests_get_the_right_status_and_stable_code(
    tmp_path: Path,
    case: str,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    async with client(tmp_path) as c:
        r = await c.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text
    if status == 200:  # odd but acceptable input: answered, not crashed
        return
    err = r.json()["error"]
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert set(err) >= {"message", "type", "code"}


async def test_a_rejected_request_is_still_audited_with_who_sent_it(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        await c.post("/v1/chat/completions", content=b"{nope", headers=AUTH)
    record = audit_records(tmp_path)[-1]
    assert record["principal"] == "tester"
    assert record["error_code"] == "invalid_json"
    assert record["status"] == "error"


_apps: dict[Path, httpx.AsyncClient] = {}


def cached_client(tmp: Path) -> httpx.AsyncClient:
    """One gateway per test function, shared by its hypothesis examples (no lifespan: the mock provider needs
    no upstream pool, and the audit sink writes through)."""
    if tmp not in _apps:
        app = create_app(
            load_settings(write_config(tmp, MOCK_REGISTRY, {"limits": {"max_body_bytes": 4096}}))
        )
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
        _apps[tmp] = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")
    return _apps[tmp]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
chat_like = st.fixed_dictionaries(
    {"model": st.sampled_from(["mock-fast", "mock-embed", "", "x"])},
    optional={
        "messages": json_values
        | st.lists(st.dictionaries(st.sampled_from(["role", "content", "name", "tool_calls"]), json_values)),
        "stream": json_values,
        "max_tokens": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "stream_options": json_values,
        "input": json_values,
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=chat_like | json_values, path=st.sampled_from(["/v1/chat/completions", "/v1/embeddings"]))
async def test_no_request_body_produces_a_server_error(tmp_path: Path, body: Any, path: str) -> None:
    # stdlib json: it writes what orjson would refuse (huge integers, NaN, Infinity) — clients can send those too
    r = await cached_client(tmp_path).post(path, content=json.dumps(body).encode(), headers=AUTH)
    assert r.status_code in (200, 400, 404, 413), (
        r.text
    )  # the mock is in-process: no 502 is acceptable either
    if r.status_code >= 400:
        assert r.json()["error"]["code"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
async def test_no_byte_string_produces_a_server_error(tmp_path: Path, raw: bytes) -> None:
    r = await cached_client(tmp_path).post("/v1/chat/completions", content=raw, headers=AUTH)
    assert r.status_code in (400, 404, 413), r.text
