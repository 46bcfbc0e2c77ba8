"""MCP conformance fixture: the tools, resources and prompts the official conformance suite
(`@modelcontextprotocol/conformance` 0.2.0-alpha.12, `conformance server`) calls by name, built on the `mcp`
Python SDK's low-level `Server` (mcp 2.3.0).

One Streamable HTTP endpoint, http://127.0.0.1:PORT/mcp, serves both protocol eras (the SDK routes on the
`MCP-Protocol-Version` header): the 2025-11-25 handshake era (sessions, server-to-client sampling/elicitation
on the POST stream, logging, resource subscriptions, SSE resumability through an in-memory event store) and the
stateless 2026-07-28 era (`server/discover`, `InputRequiredResult` round trips with a sealed `requestState`,
`subscriptions/listen`, caching hints, `Mcp-Param-*` headers).

The names and payloads follow the scenario descriptions shipped in the suite (`conformance server --help`,
`dist/index.js`): e.g. `test_simple_text` returns "This is a simple text response for testing.".

Usage:  python conformance/fixture_server.py PORT [--no-capability-checks]
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import re
import sys
import warnings
from typing import Any, cast

import anyio
import mcp.types as types
import uvicorn
from mcp.server import Server
from mcp.server.caching import CACHEABLE_METHODS, CacheableMethod, CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import MISSING_REQUIRED_CLIENT_CAPABILITY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

# Logging, sampling and roots are deprecated as of 2026-07-28 but are exactly what the 2025-11-25 scenarios test.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

log = logging.getLogger("conformance.fixture")

Ctx = ServerRequestContext[Any, Any]

NAME = "conformance-fixture"
VERSION = "1.0.0"

# A 1x1 red PNG and a minimal (silent, 8 kHz mono, 2 samples) WAV.
RED_PIXEL_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
SILENT_WAV = base64.b64encode(
    b"RIFF"
    + (40).to_bytes(4, "little")
    + b"WAVEfmt "
    + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little")
    + (1).to_bytes(2, "little")
    + (8000).to_bytes(4, "little")
    + (16000).to_bytes(4, "little")
    + (2).to_bytes(2, "little")
    + (16).to_bytes(2, "little")
    + b"data"
    + (4).to_bytes(4, "little")
    + b"\x00\x00\x00\x00"
).decode()

NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}

JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _tool(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": schema or NO_ARGS}


def _str_args(*names: str, required: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {n: {"type": "string"} for n in names}}
    if required:
        schema["required"] = list(names)
    return schema


# Deterministic order; `test_simple_text` first (http-header-validation calls tools[0] without arguments).
TOOLS: list[dict[str, Any]] = [
    _tool("test_simple_text", "Returns a simple text response."),
    _tool("test_image_content", "Returns a 1x1 red PNG image."),
    _tool("test_audio_content", "Returns a short WAV audio clip."),
    _tool("test_embedded_resource", "Returns an embedded text resource."),
    _tool("test_multiple_content_types", "Returns text, image and an embedded resource."),
    _tool("test_tool_with_logging", "Sends three info log messages while running."),
    _tool("test_logging_tool", "Logs (only when the request opted in with a log level) and returns."),
    _tool("test_error_handling", "Always fails with isError: true."),
    _tool("test_tool_with_progress", "Reports progress 0, 50, 100 of 100."),
    _tool("test_sampling", "Asks the client's LLM (sampling/createMessage).", _str_args("prompt")),
    _tool("test_elicitation", "Asks the user for a username and an email.", _str_args("message")),
    _tool(
        "test_elicitation_sep1034_defaults", "Elicitation whose schema has defaults for every primitive type."
    ),
    _tool("test_elicitation_sep1330_enums", "Elicitation with the five enum schema variants."),
    _tool("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features", JSON_SCHEMA_2020_12),
    _tool(
        "test_reconnection", "Closes its SSE stream mid-call; the result arrives after the client reconnects."
    ),
    _tool("test_missing_capability", "Needs the client's sampling capability (-32021 without it)."),
    _tool("test_streaming_elicitation", "Streams an elicitation request as an InputRequiredResult."),
    _tool("test_trigger_tool_change", "Announces a tools/list change."),
    _tool("test_trigger_prompt_change", "Announces a prompts/list change."),
    _tool("test_trigger_resource_change", "Announces a resources/list change."),
    _tool("test_input_required_result_elicitation", "InputRequiredResult with one elicitation (user_name)."),
    _tool("test_input_required_result_sampling", "InputRequiredResult with one sampling request."),
    _tool("test_input_required_result_list_roots", "InputRequiredResult with one roots/list request."),
    _tool("test_input_required_result_request_state", "InputRequiredResult with a requestState to echo."),
    _tool(
        "test_input_required_result_multiple_inputs",
        "InputRequiredResult with elicitation, sampling and roots.",
    ),
    _tool("test_input_required_result_multi_round", "Two InputRequiredResult rounds, then a result."),
    _tool(
        "test_input_required_result_tampered_state",
        "InputRequiredResult whose requestState is integrity-checked.",
    ),
    _tool("test_input_required_result_capabilities", "Asks only for what the client's capabilities allow."),
    _tool(
        "test_mcp_param_header",
        "Echoes a region that is mirrored in the Mcp-Param-Region header (x-mcp-header).",
        {
            "type": "object",
            "properties": {"region": {"type": "string", "description": "Region", "x-mcp-header": "Region"}},
            "required": ["region"],
        },
    ),
]
TOOL_NAMES = {t["name"] for t in TOOLS}

RESOURCES: list[dict[str, Any]] = [
    {
        "uri": "test://static-text",
        "name": "static-text",
        "description": "A static text resource",
        "mimeType": "text/plain",
    },
    {
        "uri": "test://static-binary",
        "name": "static-binary",
        "description": "A static binary resource (PNG)",
        "mimeType": "image/png",
    },
    {
        "uri": "test://watched-resource",
        "name": "watched-resource",
        "description": "A resource one can subscribe to",
        "mimeType": "text/plain",
    },
]
TEMPLATES: list[dict[str, Any]] = [
    {
        "uriTemplate": "test://template/{id}/data",
        "name": "template-data",
        "description": "Data for an id (parameter substitution)",
        "mimeType": "application/json",
    },
]
TEMPLATE_RE = re.compile(r"^test://template/([^/]+)/data$")

PROMPTS: list[dict[str, Any]] = [
    {"name": "test_simple_prompt", "description": "A simple prompt without arguments"},
    {
        "name": "test_prompt_with_arguments",
        "description": "A prompt with two required arguments",
        "arguments": [
            {"name": "arg1", "description": "First test argument", "required": True},
            {"name": "arg2", "description": "Second test argument", "required": True},
        ],
    },
    {
        "name": "test_prompt_with_embedded_resource",
        "description": "A prompt embedding a resource",
        "arguments": [
            {"name": "resourceUri", "description": "URI of the resource to embed", "required": True}
        ],
    },
    {"name": "test_prompt_with_image", "description": "A prompt with image content"},
    {
        "name": "test_input_required_result_prompt",
        "description": "A prompt that first asks the user for context",
    },
]

COMPLETIONS = {"arg1": ["paris", "park", "party"], "arg2": ["red", "green", "blue"]}


def _text(text: str, *, is_error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if is_error:
        result["isError"] = True
    return result


def _modern(ctx: Ctx) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _caps(ctx: Ctx) -> types.ClientCapabilities:
    return ctx.session.client_capabilities or types.ClientCapabilities()


def _elicit_request(message: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {"type": "object", "properties": properties, "required": required},
        },
    }


def _sampling_request(text: str, max_tokens: int) -> dict[str, Any]:
    return {
        "method": "sampling/createMessage",
        "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
            "maxTokens": max_tokens,
        },
    }


ROOTS_REQUEST: dict[str, Any] = {"method": "roots/list", "params": {}}


def _input_required(requests: dict[str, Any], state: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
    if state is not None:
        result["requestState"] = state
    return result


def _responses(ctx: Ctx) -> dict[str, Any]:
    raw = (ctx.params or {}).get("inputResponses")
    return raw if isinstance(raw, dict) else {}


def _accepted(response: Any) -> dict[str, Any] | None:
    """The content of an accepted elicitation response, else None."""
    if (
        isinstance(response, dict)
        and response.get("action") == "accept"
        and isinstance(response.get("content"), dict)
    ):
        return dict(response["content"])
    return None


def _sampled_text(response: Any) -> str | None:
    if isinstance(response, dict):
        content = response.get("content")
        if isinstance(content, dict) and isinstance(content.get("text"), str):
            return str(content["text"])
        if isinstance(content, list):
            return " ".join(c.get("text", "") for c in content if isinstance(c, dict))
    return None


def _roots(response: Any) -> list[Any] | None:
    if isinstance(response, dict) and isinstance(response.get("roots"), list):
        return list(response["roots"])
    return None


def _typed(ctx: Ctx, result: dict[str, Any]) -> dict[str, Any]:
    """2026-07-28 results carry `resultType` (the SDK validates handler dicts against the era's schema)."""
    if _modern(ctx) and "resultType" not in result:
        return {**result, "resultType": "complete"}
    return result


CHECK_CAPABILITIES = True  # `--no-capability-checks`: ask regardless (diagnosis of an intermediary only)


def _require(ctx: Ctx, capability: str) -> None:
    """A server MUST NOT ask for input the client did not declare it can give (2026-07-28: -32021, HTTP 400)."""
    if CHECK_CAPABILITIES and getattr(_caps(ctx), capability) is None:
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message=f"Missing required client capability: {capability}",
            data={"requiredCapabilities": {capability: {}}},
        )


def _need_modern(ctx: Ctx, name: str) -> dict[str, Any] | None:
    if _modern(ctx):
        return None
    return _text(
        f"{name} exercises InputRequiredResult, which exists from protocol 2026-07-28 on", is_error=True
    )


class Fixture:
    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self.subscriptions: set[str] = set()
        self.server: Server[Any] = Server(
            NAME,
            version=VERSION,
            instructions="Conformance fixture for the MCP conformance suite.",
            cache_hints={
                cast(CacheableMethod, m): CacheHint(ttl_ms=0, scope="private") for m in CACHEABLE_METHODS
            },
        )
        # Raw dict results (the SDK validates them against the negotiated era's schema); capabilities follow
        # from which methods have a handler.
        add = self.server.add_request_handler
        add("tools/list", types.PaginatedRequestParams, self.list_tools)
        add("tools/call", types.CallToolRequestParams, self.call_tool)
        add("resources/list", types.PaginatedRequestParams, self.list_resources)
        add("resources/templates/list", types.PaginatedRequestParams, self.list_templates)
        add("resources/read", types.ReadResourceRequestParams, self.read_resource)
        add("resources/subscribe", types.SubscribeRequestParams, self.subscribe)
        add("resources/unsubscribe", types.UnsubscribeRequestParams, self.unsubscribe)
        add("subscriptions/listen", types.SubscriptionsListenRequestParams, self.listen)
        add("prompts/list", types.PaginatedRequestParams, self.list_prompts)
        add("prompts/get", types.GetPromptRequestParams, self.get_prompt)
        add("completion/complete", types.CompleteRequestParams, self.complete)
        add("logging/setLevel", types.SetLevelRequestParams, self.set_level)
        # requestState is sealed on the way out and verified on the way in (AES-GCM, TTL, request binding):
        # a tampered echo is refused with -32602 before any handler runs.
        self.server.middleware.append(
            RequestStateBoundary(RequestStateSecurity.ephemeral(ttl=300), default_audience=NAME)
        )

    # -- listings ----------------------------------------------------------------------------------------------

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams) -> dict[str, Any]:
        return _typed(ctx, {"tools": TOOLS})

    async def list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams) -> dict[str, Any]:
        return _typed(ctx, {"resources": RESOURCES})

    async def list_templates(self, ctx: Ctx, params: types.PaginatedRequestParams) -> dict[str, Any]:
        return _typed(ctx, {"resourceTemplates": TEMPLATES})

    async def list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams) -> dict[str, Any]:
        return _typed(ctx, {"prompts": PROMPTS})

    # -- resources ---------------------------------------------------------------------------------------------

    async def read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> dict[str, Any]:
        uri = str(params.uri)
        if uri == "test://static-text":
            contents = [
                {
                    "uri": uri,
                    "mimeType": "text/plain",
                    "text": "This is the content of the static text resource.",
                }
            ]
        elif uri == "test://static-binary":
            contents = [{"uri": uri, "mimeType": "image/png", "blob": RED_PIXEL_PNG}]
        elif uri == "test://watched-resource":
            contents = [{"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."}]
        elif (m := TEMPLATE_RE.match(uri)) is not None:
            ident = m.group(1)
            data = {"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"}
            contents = [
                {"uri": uri, "mimeType": "application/json", "text": json.dumps(data, separators=(",", ":"))}
            ]
        else:
            # SEP-2164: -32602 with the URI in data (not -32002, not an empty contents array).
            raise MCPError(code=-32602, message="Resource not found", data={"uri": uri})
        return _typed(ctx, {"contents": contents})

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> dict[str, Any]:
        self.subscriptions.add(str(params.uri))
        return {}

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> dict[str, Any]:
        self.subscriptions.discard(str(params.uri))
        return {}

    # -- prompts -----------------------------------------------------------------------------------------------

    async def get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> dict[str, Any]:
        args = params.arguments or {}
        name = params.name
        if name == "test_simple_prompt":
            messages = [
                {"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}
            ]
        elif name == "test_prompt_with_arguments":
            text = f"Prompt with arguments: arg1='{args.get('arg1', '')}', arg2='{args.get('arg2', '')}'"
            messages = [{"role": "user", "content": {"type": "text", "text": text}}]
        elif name == "test_prompt_with_embedded_resource":
            uri = args.get("resourceUri", "test://example-resource")
            messages = [
                {
                    "role": "user",
                    "content": {
                        "type": "resource",
                        "resource": {
                            "uri": uri,
                            "mimeType": "text/plain",
                            "text": "Embedded resource content for testing.",
                        },
                    },
                },
                {
                    "role": "user",
                    "content": {"type": "text", "text": "Please process the embedded resource above."},
                },
            ]
        elif name == "test_prompt_with_image":
            messages = [
                {
                    "role": "user",
                    "content": {"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"},
                },
                {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}},
            ]
        elif name == "test_input_required_result_prompt":
            if not _modern(ctx):
                raise MCPError(
                    code=-32602, message="This prompt needs protocol 2026-07-28 (InputRequiredResult)"
                )
            _require(ctx, "elicitation")
            context = _accepted(_responses(ctx).get("user_context"))
            if context is None or not isinstance(context.get("context"), str):
                return _input_required(
                    {
                        "user_context": _elicit_request(
                            "What context should the prompt use?",
                            {"context": {"type": "string"}},
                            ["context"],
                        )
                    }
                )
            messages = [
                {"role": "user", "content": {"type": "text", "text": f"Context: {context['context']}"}}
            ]
        else:
            raise MCPError(code=-32602, message=f"Unknown prompt: {name}", data={"name": name})
        description = next(p["description"] for p in PROMPTS if p["name"] == name)
        return _typed(ctx, {"description": description, "messages": messages})

    # -- completion and logging ---------------------------------------------------------------------------------

    async def complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> dict[str, Any]:
        candidates = COMPLETIONS.get(params.argument.name, [])
        values = [v for v in candidates if v.startswith(params.argument.value)]
        return _typed(ctx, {"completion": {"values": values, "total": len(values), "hasMore": False}})

    async def set_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> dict[str, Any]:
        return {}

    # -- tools -------------------------------------------------------------------------------------------------

    async def call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> dict[str, Any]:
        name = params.name
        if name not in TOOL_NAMES:
            raise MCPError(code=-32602, message=f"Unknown tool: {name}", data={"name": name})
        handler = getattr(self, f"tool_{name}")
        return _typed(ctx, await handler(ctx, params.arguments or {}))

    async def tool_test_simple_text(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        return _text("This is a simple text response for testing.")

    async def tool_test_image_content(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"}]}

    async def tool_test_audio_content(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "audio", "data": SILENT_WAV, "mimeType": "audio/wav"}]}

    async def tool_test_embedded_resource(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "content": [
                {
                    "type": "resource",
                    "resource": {
                        "uri": "test://embedded-resource",
                        "mimeType": "text/plain",
                        "text": "This is an embedded resource content.",
                    },
                }
            ]
        }

    async def tool_test_multiple_content_types(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "content": [
                {"type": "text", "text": "Multiple content types test:"},
                {"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"},
                {
                    "type": "resource",
                    "resource": {
                        "uri": "test://mixed-content-resource",
                        "mimeType": "application/json",
                        "text": json.dumps({"test": "data", "value": 123}),
                    },
                },
            ]
        }

    async def _log(self, ctx: Ctx, level: types.LoggingLevel, message: str) -> None:
        # Handshake era: on this request's POST stream. 2026-07-28: only if the request's _meta opted in
        # (io.modelcontextprotocol/logLevel); the SDK drops it otherwise.
        await ctx.session.send_log_message(
            level, message, logger="conformance", related_request_id=ctx.request_id
        )

    async def tool_test_tool_with_logging(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        await self._log(ctx, "info", "Tool execution started")
        await anyio.sleep(0.05)
        await self._log(ctx, "info", "Tool processing data")
        await anyio.sleep(0.05)
        await self._log(ctx, "info", "Tool execution completed")
        return _text("Tool with logging executed successfully")

    async def tool_test_logging_tool(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        await self._log(ctx, "info", "logging tool: first message")
        await self._log(ctx, "warning", "logging tool: second message")
        return _text("Logging tool executed")

    async def tool_test_error_handling(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        return _text("This tool intentionally returns an error for testing", is_error=True)

    async def tool_test_tool_with_progress(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        await ctx.session.report_progress(0, 100)
        await anyio.sleep(0.05)
        await ctx.session.report_progress(50, 100)
        await anyio.sleep(0.05)
        await ctx.session.report_progress(100, 100)
        return _text("Tool with progress executed successfully")

    async def tool_test_sampling(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        prompt = str(args.get("prompt", ""))
        if _modern(ctx):
            return await self._mrtr_sampling(ctx, "sampling", prompt, 100, lambda t: f"LLM response: {t}")
        if _caps(ctx).sampling is None:
            return _text("The client does not support sampling", is_error=True)
        result = await ctx.session.create_message(
            [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        text = content.text if isinstance(content, types.TextContent) else str(content)
        return _text(f"LLM response: {text}")

    async def _elicit(self, ctx: Ctx, key: str, message: str, schema: dict[str, Any]) -> dict[str, Any] | str:
        """Handshake era: an elicitation/create request on the POST stream; 2026-07-28: an InputRequiredResult.
        Returns the text describing the outcome, or the InputRequiredResult to send."""
        if _modern(ctx):
            _require(ctx, "elicitation")
            response = _responses(ctx).get(key)
            if not isinstance(response, dict) or "action" not in response:
                return _input_required(
                    {
                        key: {
                            "method": "elicitation/create",
                            "params": {"message": message, "requestedSchema": schema},
                        }
                    }
                )
            return f"action={response.get('action')}, content={json.dumps(response.get('content'))}"
        if _caps(ctx).elicitation is None:
            return "ERROR: the client does not support elicitation"
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        return f"action={result.action}, content={json.dumps(result.content)}"

    async def tool_test_elicitation(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        out = await self._elicit(
            ctx, "user_info", str(args.get("message", "Please provide your information")), schema
        )
        if isinstance(out, dict):
            return out
        return _text(f"User response: {out}", is_error=out.startswith("ERROR"))

    async def tool_test_elicitation_sep1034_defaults(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verified user", "default": True},
            },
            "required": [],
        }
        out = await self._elicit(
            ctx, "defaults", "Please review and update the form fields with defaults", schema
        )
        if isinstance(out, dict):
            return out
        return _text(f"Elicitation completed: {out}", is_error=out.startswith("ERROR"))

    async def tool_test_elicitation_sep1330_enums(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {
                    "type": "string",
                    "description": "Untitled single-select",
                    "enum": ["option1", "option2", "option3"],
                },
                "titledSingle": {
                    "type": "string",
                    "description": "Titled single-select",
                    "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"},
                    ],
                },
                "legacyEnum": {
                    "type": "string",
                    "description": "Legacy titled enum",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "description": "Untitled multi-select",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "description": "Titled multi-select",
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"},
                        ]
                    },
                },
            },
            "required": [],
        }
        out = await self._elicit(ctx, "enums", "Please pick from the enum fields", schema)
        if isinstance(out, dict):
            return out
        return _text(f"Elicitation completed: {out}", is_error=out.startswith("ERROR"))

    async def tool_json_schema_2020_12_tool(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        return _text(f"Received: {json.dumps(args, sort_keys=True)}")

    async def tool_test_reconnection(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        # SEP-1699: close the POST's SSE stream before answering; the response lands in the event store and is
        # replayed when the client reconnects with GET + Last-Event-ID.
        await anyio.sleep(0.1)
        if ctx.close_sse_stream is not None:
            await ctx.close_sse_stream()
        await anyio.sleep(0.3)
        return _text("Reconnection test completed")

    async def tool_test_missing_capability(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        if _caps(ctx).sampling is None:
            raise MCPError(
                code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="Missing required client capability: sampling",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        if _modern(ctx):
            return await self._mrtr_sampling(
                ctx, "capability_probe", "Say hello", 20, lambda t: f"Sampled: {t}"
            )
        return _text("The client declared sampling")

    async def tool_test_streaming_elicitation(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        out = await self._elicit(ctx, "stream_answer", "Streaming elicitation: what is your answer?", schema)
        if isinstance(out, dict):
            return out
        return _text(f"Streaming elicitation completed: {out}", is_error=out.startswith("ERROR"))

    async def _announce(self, ctx: Ctx, event: Any, legacy: str) -> None:
        if _modern(ctx):
            await self.bus.publish(event)  # every open subscriptions/listen stream that asked for this kind
        else:
            notify = {
                "tools": ctx.session.send_tool_list_changed,
                "prompts": ctx.session.send_prompt_list_changed,
                "resources": ctx.session.send_resource_list_changed,
            }[legacy]
            await notify()  # on the session's standalone GET stream

    async def tool_test_trigger_tool_change(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        await self._announce(ctx, ToolsListChanged(), "tools")
        return _text("tools/list_changed announced")

    async def tool_test_trigger_prompt_change(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        await self._announce(ctx, PromptsListChanged(), "prompts")
        return _text("prompts/list_changed announced")

    async def tool_test_trigger_resource_change(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        await self._announce(ctx, ResourcesListChanged(), "resources")
        return _text("resources/list_changed announced")

    # -- InputRequiredResult (2026-07-28, SEP-2322) -------------------------------------------------------------

    async def _mrtr_sampling(
        self, ctx: Ctx, key: str, prompt: str, max_tokens: int, render: Any
    ) -> dict[str, Any]:
        _require(ctx, "sampling")
        text = _sampled_text(_responses(ctx).get(key))
        if text is None:
            return _input_required({key: _sampling_request(prompt, max_tokens)})
        return _text(render(text))

    async def tool_test_input_required_result_elicitation(
        self, ctx: Ctx, args: dict[str, Any]
    ) -> dict[str, Any]:
        if (legacy := _need_modern(ctx, "test_input_required_result_elicitation")) is not None:
            return legacy
        _require(ctx, "elicitation")
        content = _accepted(_responses(ctx).get("user_name"))
        if content is None or not isinstance(content.get("name"), str):
            # Missing, wrong or malformed response: ask again (SEP-2322 recommends re-requesting).
            return _input_required(
                {"user_name": _elicit_request("What is your name?", {"name": {"type": "string"}}, ["name"])}
            )
        return _text(f"Hello, {content['name']}!")

    async def tool_test_input_required_result_sampling(
        self, ctx: Ctx, args: dict[str, Any]
    ) -> dict[str, Any]:
        if (legacy := _need_modern(ctx, "test_input_required_result_sampling")) is not None:
            return legacy
        return await self._mrtr_sampling(
            ctx,
            "capital_question",
            "What is the capital of France?",
            100,
            lambda t: f"Sampling response: {t}",
        )

    async def tool_test_input_required_result_list_roots(
        self, ctx: Ctx, args: dict[str, Any]
    ) -> dict[str, Any]:
        if (legacy := _need_modern(ctx, "test_input_required_result_list_roots")) is not None:
            return legacy
        _require(ctx, "roots")
        roots = _roots(_responses(ctx).get("client_roots"))
        if roots is None:
            return _input_required({"client_roots": ROOTS_REQUEST})
        uris = ", ".join(str(r.get("uri")) for r in roots if isinstance(r, dict))
        return _text(f"Client roots: {uris}")

    async def tool_test_input_required_result_request_state(
        self, ctx: Ctx, args: dict[str, Any]
    ) -> dict[str, Any]:
        if (legacy := _need_modern(ctx, "test_input_required_result_request_state")) is not None:
            return legacy
        _require(ctx, "elicitation")
        state = (ctx.params or {}).get("requestState")  # plaintext: the boundary verified and unsealed it
        content = _accepted(_responses(ctx).get("confirm"))
        if state != "awaiting-confirm" or content is None:
            return _input_required(
                {"confirm": _elicit_request("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
                state="awaiting-confirm",
            )
        return _text(f"state-ok: confirmed={content.get('ok')}")

    async def tool_test_input_required_result_multiple_inputs(
        self, ctx: Ctx, args: dict[str, Any]
    ) -> dict[str, Any]:
        if (legacy := _need_modern(ctx, "test_input_required_result_multiple_inputs")) is not None:
            return legacy
        for capability in ("elicitation", "sampling", "roots"):
            _require(ctx, capability)
        responses = _responses(ctx)
        name = _accepted(responses.get("user_name"))
        greeting = _sampled_text(responses.get("greeting"))
        roots = _roots(responses.get("client_roots"))
        if (
            (ctx.params or {}).get("requestState") != "multi"
            or name is None
            or greeting is None
            or roots is None
        ):
            return _input_required(
                {
                    "user_name": _elicit_request(
                        "What is your name?", {"name": {"type": "string"}}, ["name"]
                    ),
                    "greeting": _sampling_request("Generate a greeting", 50),
                    "client_roots": ROOTS_REQUEST,
                },
                state="multi",
            )
        return _text(f"{greeting} {name.get('name')} (roots: {len(roots)})")

    async def tool_test_input_required_result_multi_round(
        self, ctx: Ctx, args: dict[str, Any]
    ) -> dict[str, Any]:
        if (legacy := _need_modern(ctx, "test_input_required_result_multi_round")) is not None:
            return legacy
        _require(ctx, "elicitation")
        state = (ctx.params or {}).get("requestState")
        responses = _responses(ctx)
        if isinstance(state, str) and state.startswith("round-2:"):
            color = _accepted(responses.get("step2"))
            if color is not None:
                return _text(f"{state.removeprefix('round-2:')} likes {color.get('color')}")
        if state == "round-1":
            name = _accepted(responses.get("step1"))
            if name is not None:
                return _input_required(
                    {
                        "step2": _elicit_request(
                            "Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"]
                        )
                    },
                    state=f"round-2:{name.get('name')}",
                )
        return _input_required(
            {"step1": _elicit_request("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])},
            state="round-1",
        )

    async def tool_test_input_required_result_tampered_state(
        self, ctx: Ctx, args: dict[str, Any]
    ) -> dict[str, Any]:
        if (legacy := _need_modern(ctx, "test_input_required_result_tampered_state")) is not None:
            return legacy
        _require(ctx, "elicitation")
        if (ctx.params or {}).get("requestState") == "integrity-protected" and _accepted(
            _responses(ctx).get("confirm")
        ) is not None:
            return _text("state verified")
        return _input_required(
            {"confirm": _elicit_request("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
            state="integrity-protected",
        )

    async def tool_test_input_required_result_capabilities(
        self, ctx: Ctx, args: dict[str, Any]
    ) -> dict[str, Any]:
        if (legacy := _need_modern(ctx, "test_input_required_result_capabilities")) is not None:
            return legacy
        caps = _caps(ctx)
        responses = _responses(ctx)
        wanted: dict[str, Any] = {}
        if caps.elicitation is not None and _accepted(responses.get("user_name")) is None:
            wanted["user_name"] = _elicit_request(
                "What is your name?", {"name": {"type": "string"}}, ["name"]
            )
        if caps.sampling is not None and _sampled_text(responses.get("greeting")) is None:
            wanted["greeting"] = _sampling_request("Generate a greeting", 50)
        if caps.roots is not None and _roots(responses.get("client_roots")) is None:
            wanted["client_roots"] = ROOTS_REQUEST
        if wanted:
            return _input_required(wanted)
        if caps.elicitation is None and caps.sampling is None and caps.roots is None:
            raise MCPError(
                code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="Missing required client capability: one of elicitation, sampling, roots",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return _text("Used only the declared capabilities")

    async def tool_test_mcp_param_header(self, ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
        # The SDK has already checked Mcp-Param-Region against arguments.region (2026-07-28 HTTP).
        return _text(f"region={args.get('region')}")


class InMemoryEventStore(EventStore):
    """Resumability for the handshake era: every SSE event gets an id; GET + Last-Event-ID replays the rest of
    that one stream (priming events carry no message and are not replayed)."""

    def __init__(self, max_events: int = 10000) -> None:
        self._events: dict[str, tuple[str, Any]] = {}  # event id → (stream id, message)
        self._order: list[str] = []
        self._ids = itertools.count(1)
        self._max = max_events

    async def store_event(self, stream_id: str, message: Any) -> str:
        event_id = f"{next(self._ids)}"
        self._events[event_id] = (stream_id, message)
        self._order.append(event_id)
        if len(self._order) > self._max:
            self._events.pop(self._order.pop(0), None)
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        hit = self._events.get(last_event_id)
        if hit is None:
            return None
        stream_id = hit[0]
        start = self._order.index(last_event_id) + 1
        for event_id in self._order[start:]:
            sid, message = self._events[event_id]
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def build_app() -> Any:
    fixture = Fixture()
    return fixture.server.streamable_http_app(
        streamable_http_path="/mcp",
        host="127.0.0.1",  # DNS-rebinding protection: loopback Host/Origin only
        event_store=InMemoryEventStore(),
        retry_interval=500,
    )


def main() -> None:
    global CHECK_CAPABILITIES
    args = sys.argv[1:]
    if "--no-capability-checks" in args:
        # Not spec-conformant: the InputRequiredResult tools then ask for elicitation/sampling/roots even when the
        # client did not declare them. Useful to see what an intermediary does with a round trip it cannot declare.
        CHECK_CAPABILITIES = False
        args.remove("--no-capability-checks")
    if len(args) != 1 or not args[0].isdigit():
        print("usage: fixture_server.py PORT [--no-capability-checks]", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(build_app(), host="127.0.0.1", port=int(args[0]), log_level="warning")


if __name__ == "__main__":
    main()
