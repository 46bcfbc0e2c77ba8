"""Every refusal on `/mcp` is a JSON-RPC error: whatever the SDK server answers a request it will not take (a wrong
or missing Content-Type, a missing Accept, …) reaches the caller in the envelope, with a stable code."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from tests.mcp.support import INIT, Upstream, modern_request, registry, server_entry
from tests.support import TEST_KEY, gateway, serve

BOTH = "application/json, text/event-stream"
MODERN = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
CASES = {
    "no content type": ("POST", {"accept": BOTH}, 400),
    "text content type": ("POST", {"accept": BOTH, "content-type": "text/plain"}, 400),
    "form content type": ("POST", {"accept": BOTH, "content-type": "application/x-www-form-urlencoded"}, 400),
    "no accept": ("POST", {"content-type": "application/json"}, 406),
    "json-only accept": ("POST", {"content-type": "application/json", "accept": "application/json"}, 406),
    "modern, no content type": ("POST", {"accept": BOTH, **MODERN}, 400),
    "modern, no accept": ("POST", {"content-type": "application/json", **MODERN}, 406),
    "GET without accept": ("GET", {}, 406),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_every_refusal_on_mcp_is_a_json_rpc_error(tmp_path: Path, case: str) -> None:
    method, headers, status = CASES[case]
    body = orjson.dumps(modern_request("tools/list") if "mcp-method" in headers else INIT)
    async with (
        serve(Upstream("docs")) as up,
        gateway(tmp_path, registry(server_entry("docs", up))) as (url, _),
    ):
        async with httpx.AsyncClient() as c:
            c.headers.pop("accept")  # only what the case sends
            resp = await c.request(
                method,
                f"{url}/mcp",
                headers={"authorization": f"Bearer {TEST_KEY}", **headers},
                content=body if method == "POST" else None,
            )
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/json")
    answer = resp.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None
    assert isinstance(answer["error"]["code"], int) and answer["error"]["message"]
    assert answer["error"]["data"]["status"] == status
    assert answer["error"]["data"]["code"] in ("unsupported_media_type", "not_acceptable", "invalid_request")
    assert "x-agentgw-task" in resp.headers
