"""What upstream servers announce reaches the right callers through agentgw: log messages on the request they
belong to (at the caller's level), resource updates to their subscribers (URIs mapped), list changes to listening
callers; and argument completion is asked of the server that owns the prompt or template."""

from __future__ import annotations

from pathlib import Path

import anyio
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged

from tests.mcp.support import Upstream, mcp_client, registry, server_entry
from tests.support import gateway, serve

# Logging is deprecated as of 2026-07-28 (SEP-2577), which is exactly what some of these exercise.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

CLIENT_MODES = ["legacy", "2026-07-28"]
ERAS = ["handshake", "modern"]
README = "agentgw://docs/file:///readme.md"


async def capabilities(client: Client) -> types.ServerCapabilities:
    """What the gateway advertises: the initialize answer, or (2026-07-28) server/discover."""
    if client.protocol_version == "2025-11-25":
        assert client.server_capabilities is not None
        return client.server_capabilities
    raw = await client.session.send_discover("2026-07-28")
    return types.DiscoverResult.model_validate(raw).capabilities


@pytest.mark.parametrize("upstream_era", ERAS)
@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_upstream_log_messages_reach_the_caller_from_its_level_up(
    tmp_path: Path, client_mode: str, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    logs: list[tuple[str, object]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append((params.level, params.data))

    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(
            f"{url}/mcp", mode=client_mode, logging_callback=on_log, log_level="info"
        ) as client:
            if client_mode == "legacy":
                await client.set_logging_level("info")
            result = await client.call_tool("docs__chatty", {})
    assert result.content[0].text == "said it all"  # type: ignore[union-attr]
    assert logs == [("info", "info from docs"), ("warning", "warning from docs")]
    # A handshake-era server's one session (shared by every caller) is set to the most verbose level asked for.
    assert docs.log_levels == (["info"] if upstream_era == "handshake" else [])


@pytest.mark.parametrize("upstream_era", ERAS)
@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_a_caller_that_chose_no_log_level_gets_no_log_messages(
    tmp_path: Path, client_mode: str, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    logs: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.level)

    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode=client_mode, logging_callback=on_log) as client:
            await client.call_tool("docs__chatty", {})
    assert logs == []


@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_completion_is_asked_of_the_server_that_owns_the_prompt_or_template_under_its_own_names(
    tmp_path: Path, client_mode: str
) -> None:
    alpha, docs = Upstream("alpha"), Upstream("docs", handshake_only=True)
    async with serve(alpha) as a, serve(docs) as d:
        reg = registry(server_entry("alpha", a), server_entry("docs", d))
        async with gateway(tmp_path, reg) as (url, _), mcp_client(f"{url}/mcp", mode=client_mode) as client:
            caps = await capabilities(client)
            prompt = await client.complete(
                types.PromptReference(name="docs__greet"), {"name": "name", "value": "A"}
            )
            template = await client.complete(
                types.ResourceTemplateReference(uri="agentgw://alpha/file:///notes/{topic}"),
                {"name": "topic", "value": "er"},
            )
    assert caps.completions is not None
    assert prompt.completion.values == ["Ada (greet)", "Alan (greet)"]
    assert template.completion.values == ["erda (file:///notes/{topic})", "erlan (file:///notes/{topic})"]


@pytest.mark.parametrize("upstream_era", ERAS)
async def test_a_handshake_subscriber_hears_of_resource_updates_under_the_gateway_uri_until_it_unsubscribes(
    tmp_path: Path, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    updates: list[str] = []
    heard = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            heard.set()

    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, gw):
        async with mcp_client(f"{url}/mcp", message_handler=on_message) as client:
            caps = await capabilities(client)
            await client.subscribe_resource(README)
            await client.call_tool("docs__touch", {})
            with anyio.fail_after(10):
                await heard.wait()
            await client.unsubscribe_resource(README)
            watched = dict(gw.mcp.upstreams.by_name["docs"]._watched)
    assert caps.resources is not None and caps.resources.subscribe is True
    assert updates == [README]
    assert watched == {}
    if upstream_era == "handshake":
        assert docs.subscribed == ["file:///readme.md"] and docs.unsubscribed == ["file:///readme.md"]


@pytest.mark.parametrize("upstream_era", ERAS)
async def test_a_listen_stream_hears_of_updates_to_the_resources_it_may_read_under_its_own_id(
    tmp_path: Path, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode="2026-07-28") as client:
            unknown = "agentgw://nowhere/file:///x"
            async with client.listen(resource_subscriptions=[README, unknown]) as sub:
                honored = sub.honored.resource_subscriptions
                await client.call_tool("docs__touch", {})
                with anyio.fail_after(10):
                    event = await sub.__anext__()
    assert honored == [README]
    assert event == ResourceUpdated(uri=README)


@pytest.mark.parametrize("upstream_era", ERAS)
@pytest.mark.parametrize("client_mode", CLIENT_MODES)
async def test_an_upstream_tool_list_change_is_announced_to_callers_that_listen(
    tmp_path: Path, client_mode: str, upstream_era: str
) -> None:
    docs = Upstream("docs", handshake_only=upstream_era == "handshake")
    heard = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            heard.set()

    async with serve(docs) as up, gateway(tmp_path, registry(server_entry("docs", up))) as (url, _):
        async with mcp_client(f"{url}/mcp", mode=client_mode, message_handler=on_message) as client:
            caps = await capabilities(client)
            assert caps.tools is not None and caps.tools.list_changed is True
            if client_mode == "legacy":  # the session's GET stream
                await client.call_tool("docs__grow", {})
                with anyio.fail_after(10):
                    await heard.wait()
            else:
                async with client.listen(tools_list_changed=True, prompts_list_changed=True) as sub:
                    await client.call_tool("docs__grow", {})
                    with anyio.fail_after(10):
                        event = await sub.__anext__()
                assert event == ToolsListChanged()
            names = [t.name for t in (await client.list_tools()).tools]
    assert "docs__fresh" in names
