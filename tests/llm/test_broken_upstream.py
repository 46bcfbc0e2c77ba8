"""An LLM upstream that answers 200 with something that is not the API's answer (HTML, bad JSON, the wrong
content type on a stream, frames that are not JSON): a 502 `upstream_invalid_response`, nothing charged, an error
on the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.budget.test_budgets import auth, budgets, chat, spent
from tests.support import audit_records, gateway, serve

HTML = b"<html><body>502 Bad Gateway (nginx)</body></html>"
CASES = {
    "html body": (False, "text/html", HTML),
    "bad json": (False, "application/json", b'{"id": "chatcmpl-1", "choices": ['),
    "json that is no object": (False, "application/json", b'"ok"'),
    "stream answered as json": (True, "application/json", b'{"id": "x", "choices": []}'),
    "stream answered as html": (True, "text/html", HTML),
    "stream of non-json frames": (True, "text/event-stream", b"data: <html>oops</html>\n\n"),
}


def broken(content_type: str, body: bytes) -> Starlette:
    async def chat_completions(request: Request) -> Response:
        await request.body()
        return Response(body, status_code=200, media_type=content_type)

    return Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])


def registry(url: str) -> dict[str, Any]:
    return {
        "llm": {
            "providers": [{"name": "up", "kind": "openai", "base_url": f"{url}/v1", "api_key": "sk-test"}],
            "models": [{"name": "m", "targets": [{"provider": "up", "model": "real"}]}],
        }
    }


@pytest.mark.parametrize("case", list(CASES))
async def test_a_broken_200_from_an_llm_upstream_is_a_502_that_charges_nothing(
    tmp_path: Path, case: str
) -> None:
    stream, content_type, body = CASES[case]
    settings = {**budgets({"tokens": 1000}), "upstream": {"retry": {"attempts": 1}}}
    async with serve(broken(content_type, body)) as up:
        async with gateway(tmp_path, registry(up), settings) as (url, app), httpx.AsyncClient() as c:
            resp = await c.post(
                f"{url}/v1/chat/completions", json=chat(model="m", stream=stream), headers=auth(task="job")
            )
            left = await spent(app, "tester/job")
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["code"] == "upstream_invalid_response"
    assert left == (0, 0)  # nothing spent, the reservation released
    record = next(r for r in audit_records(tmp_path) if r["target"] == "llm:m")
    assert record["status"] == "error" and record["error_code"] == "upstream_invalid_response"
