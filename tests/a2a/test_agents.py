"""Agents as a user finds them through the gateway: the directory (GET /a2a, filtered by policy), the rewritten card
(interfaces at the gateway, the gateway's security, re-signed so the a2a-sdk's verifier accepts it against the
gateway's JWKS, a stable ETag and 304), and the audit trail (plane a2a, the 1.0 operation, target a2a:<agent>, the
child task handed to the agent, and the agent's own calls nested under the step that delegated to it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from a2a.client.card_resolver import A2ACardResolver
from a2a.types import AgentCard
from a2a.utils.signing import InvalidSignaturesError, create_signature_verifier
from google.protobuf.json_format import ParseDict
from jwt import PyJWK

from agentgw import load_settings
from agentgw.audit.factory import open_store
from agentgw.audit.tree import task_tree
from tests.a2a.agents import run_agent
from tests.a2a.plane import KEYS, Plane, message, rpc, run_plane
from tests.support import audit_records

CARD = "/.well-known/agent-card.json"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide: one gateway and its agents serve the card and directory tests


@pytest.fixture(scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    async with run_agent("echo", "gone") as gone:
        pass  # `gone` stops here: registered, but its card cannot be fetched
    async with (
        run_agent("echo") as echo,
        run_agent("signed") as signed,
        run_agent("streamer") as streamer,
        run_plane(tmp_path_factory.mktemp("agents"), echo, signed, streamer, gone) as p,
    ):
        yield p


async def test_the_directory_lists_the_agents_the_caller_may_use(plane: Plane) -> None:
    with anyio.fail_after(20):
        alice = await plane.http.get("/a2a", headers=plane.headers())
        carol = await plane.http.get("/a2a", headers=plane.headers("carol"))
        anonymous = await plane.http.get("/a2a")
    assert alice.status_code == 200
    entries = {a["name"]: a for a in alice.json()["agents"]}
    assert sorted(entries) == ["echo", "gone", "signed", "streamer"]
    echo = entries["echo"]
    assert echo["url"] == f"{plane.url}/a2a/echo" and echo["card_url"] == f"{plane.url}/a2a/echo{CARD}"
    assert (
        echo["available"] is True and echo["version"] == "1.0.0" and echo["description"].startswith("a echo")
    )
    assert echo["skills"] == [
        {"id": "echo", "name": "echo", "description": echo["skills"][0]["description"], "tags": ["test"]}
    ]
    assert entries["gone"]["available"] is False and "skills" not in entries["gone"]
    # carol's policy names only `echo`: the others do not exist for her
    assert [a["name"] for a in carol.json()["agents"]] == ["echo"]
    assert anonymous.status_code == 401


async def test_the_card_points_at_the_gateway_and_names_the_gateways_security(plane: Plane) -> None:
    with anyio.fail_after(20):
        r = await plane.http.get(f"/a2a/echo{CARD}", headers=plane.headers())
        hidden = await plane.http.get(f"/a2a/signed{CARD}", headers=plane.headers("carol"))
    assert r.status_code == 200
    card = r.json()
    assert card["supportedInterfaces"] == [
        {"url": f"{plane.url}/a2a/echo", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        {"url": f"{plane.url}/a2a/echo/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
    ]
    assert set(card["securitySchemes"]) == {"gatewayApiKey", "gatewayBearer"}
    assert card["securitySchemes"]["gatewayApiKey"]["apiKeySecurityScheme"]["name"] == "x-api-key"
    assert "signatures" not in card  # the agent's card was not signed: the gateway signs nothing either
    ParseDict(card, AgentCard())  # every field is an A2A 1.0 card field
    assert hidden.status_code == 404


async def test_the_card_is_served_under_the_host_the_client_used(plane: Plane) -> None:
    localhost = plane.url.replace("127.0.0.1", "localhost")
    with anyio.fail_after(20):
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{localhost}/a2a/echo{CARD}", headers=plane.headers())
    assert r.status_code == 200, r.text
    assert r.json()["supportedInterfaces"][0]["url"] == f"{localhost}/a2a/echo"


async def test_a_signed_card_is_re_signed_and_verifies_against_the_gateways_jwks_with_the_sdk(
    plane: Plane,
) -> None:
    with anyio.fail_after(20):
        jwks = (await plane.http.get("/.well-known/jwks.json")).json()
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEYS['alice']}"}) as http:
            resolver = A2ACardResolver(http, f"{plane.url}/a2a/signed")
            fetched: list[tuple[str | None, str | None]] = []

            def key_provider(kid: str | None, jku: str | None) -> PyJWK:
                fetched.append((kid, jku))
                return PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))

            verifier = create_signature_verifier(key_provider, ["ES256", "RS256", "EdDSA"])
            card = await resolver.get_agent_card(signature_verifier=verifier)
    assert card.name == "signed" and card.supported_interfaces[0].url == f"{plane.url}/a2a/signed"
    [(kid, jku)] = fetched
    assert kid != "agent-key" and jku == f"{plane.url}/.well-known/jwks.json"
    card.description = "tampered"
    with pytest.raises(InvalidSignaturesError):
        verifier(card)


async def test_the_card_etag_is_stable_and_if_none_match_answers_304(plane: Plane) -> None:
    with anyio.fail_after(20):
        first = await plane.http.get(f"/a2a/signed{CARD}", headers=plane.headers())
        second = await plane.http.get(f"/a2a/signed{CARD}", headers=plane.headers())
        etag = first.headers["etag"]
        cached = await plane.http.get(f"/a2a/signed{CARD}", headers=plane.headers(**{"If-None-Match": etag}))
        stale = await plane.http.get(
            f"/a2a/signed{CARD}", headers=plane.headers(**{"If-None-Match": '"other"'})
        )
    assert etag.startswith('"') and second.headers["etag"] == etag and second.content == first.content
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    assert stale.status_code == 200 and stale.content == first.content
    # how long the gateway's copy stays fresh (the agent sent no caching headers: a2a.card_ttl_s), then revalidate
    directive, age = first.headers["cache-control"].split(", max-age=")
    assert directive == "private" and 0 <= int(age) <= 300


async def test_an_unreachable_agents_card_is_a_clean_503(plane: Plane) -> None:
    with anyio.fail_after(20):
        r = await plane.http.get(f"/a2a/gone{CARD}", headers=plane.headers())
        send = await plane.http.post(
            "/a2a/gone", json=rpc("SendMessage", {"message": message("hi")}), headers=plane.headers()
        )
    assert r.status_code == 503 and r.json()["error"]["details"][0]["reason"] == "AGENT_UNAVAILABLE"
    assert send.status_code == 503 and send.json()["error"]["code"] == -32013


async def read_tree(tmp: Path, task: str, principal: str) -> dict[str, Any] | None:
    settings = load_settings(tmp / "agentgw.yaml")
    store = open_store(settings.audit, settings.resolve)
    await store.open()
    try:
        return await task_tree(store, task, principal)
    finally:
        await store.aclose()


async def test_every_operation_is_an_audit_record_and_the_agents_calls_nest_under_its_delegation(
    tmp_path: Path,
) -> None:
    budget = {"budgets": {"rules": [{"task": {"tokens": 100_000, "agent_calls": 10}}]}}
    async with run_agent("caller") as caller:
        with anyio.fail_after(20):
            async with run_plane(tmp_path, caller, settings=budget) as p:
                h = p.headers(**{"x-agentgw-task": "trip-42", "A2A-Extensions": "https://example.com/ext/v1"})
                sent = await p.http.post(
                    "/a2a/caller", json=rpc("SendMessage", {"message": message("plan")}), headers=h
                )
                task = sent.json()["result"]["task"]
                await p.http.get(f"/a2a/caller/rest/tasks/{task['id']}", headers=h)
                await p.http.get(f"/a2a/caller{CARD}", headers=h)
    assert sent.headers["x-agentgw-task"] == "trip-42"
    child = caller.messages[-1]["io.agentgw/task"]
    assert child.startswith("c-")  # the child task minted for the delegation: in the message metadata...
    assert caller.requests[0]["x-agentgw-task"] == child  # ...and the header
    assert (
        caller.requests[1]["x-agentgw-task"] == "trip-42"
    )  # a read delegates nothing: the caller's own task
    assert caller.calls == [200]
    for sent_up in caller.requests:  # what the agent sees: never the caller's credential
        assert KEYS["alice"] not in " ".join(sent_up.values())
        assert sent_up["a2a-version"] == "1.0" and sent_up["a2a-extensions"] == "https://example.com/ext/v1"

    records = audit_records(tmp_path)
    mine = [r for r in records if r["task_id"] == "trip-42"]
    assert [(r["plane"], r["operation"], r["target"], r["status"]) for r in mine] == [
        ("a2a", "SendMessage", "a2a:caller", "ok"),
        ("a2a", "GetTask", "a2a:caller", "ok"),
        ("a2a", "GetAgentCard", "a2a:caller", "ok"),
    ]
    send = mine[0]
    assert (
        send["principal"] == "alice"
        and send["child_task_id"] == child
        and send["charged"] == {"agent_calls": 1}
    )
    assert send["response"]["task_id"] == task["id"] and send["response"]["state"] == "TASK_STATE_COMPLETED"
    # the agent got the step's trace context: its upstream attempt's span under the record's trace
    assert caller.requests[0]["traceparent"] == f"00-{send['trace_id']}-{send['attempts'][0]['span_id']}-01"
    [llm] = [r for r in records if r["plane"] == "llm"]
    assert llm["task_id"] == child and llm["principal"] == "agent"

    tree = await read_tree(tmp_path, "trip-42", "alice")
    assert tree is not None
    step = tree["steps"][0]
    assert step["operation"] == "SendMessage"
    [nested] = step["child_tasks"]
    assert nested["task_id"] == child and [s["operation"] for s in nested["steps"]] == ["chat"]
    assert tree["totals"]["steps"] == 4
