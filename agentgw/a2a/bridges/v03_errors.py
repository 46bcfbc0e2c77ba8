"""The 0.3 bridge's ground: BridgeError, the lazily loaded a2a-sdk converters (a2a-sdk is optional at runtime, so a
missing SDK is a clean JSON-RPC error, never an ImportError), JSON-RPC error objects across eras (pure dicts, no
SDK needed) and the extended card as a 0.3 client reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from agentgw.a2a.errors import REST

INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
INVALID_AGENT_RESPONSE = -32006
# A2A 1.0 codes 0.3 does not know: sent to a 0.3 client as InternalError, as the a2a-sdk's own 0.3 adapter does.
_V10_ONLY = frozenset({-32008, -32009})  # ExtensionSupportRequired, VersionNotSupported
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


class BridgeError(Exception):
    """A translation that cannot be made: `code` is the JSON-RPC code to answer with (-32602 for a client's bad
    params, -32006 for an agent's untranslatable answer, -32603 when the bridge itself is unavailable)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _SDK:
    t03: Any  # a2a.compat.v0_3.types
    conv: Any  # a2a.compat.v0_3.conversions
    pb: Any  # a2a.types.a2a_pb2
    MessageToDict: Any
    ParseDict: Any
    is_legacy_version: Any


_loaded: list[_SDK] = []


def sdk() -> _SDK:
    """The a2a-sdk's 0.3 converters, imported on first use; BridgeError(-32603) when a2a-sdk is not installed."""
    if _loaded:
        return _loaded[0]
    try:
        from a2a.compat.v0_3 import conversions, versions
        from a2a.compat.v0_3 import types as t03
        from a2a.types import a2a_pb2
        from google.protobuf.json_format import (  # type: ignore[import-untyped]
            MessageToDict,
            ParseDict,
        )
    except ImportError as exc:
        raise BridgeError(
            INTERNAL_ERROR, f"A2A 0.3 translation is unavailable on this gateway ({exc.name or 'a2a-sdk'})."
        ) from None
    found = _SDK(t03, conversions, a2a_pb2, MessageToDict, ParseDict, versions.is_legacy_version)
    _loaded.append(found)
    return found


# -- errors --------------------------------------------------------------------------------------------------------


def error_to_v03(error: dict[str, Any]) -> dict[str, Any]:
    """A 1.0 JSON-RPC error object as a 0.3 client reads it. -32008/-32009 become -32603 (message kept). The
    gateway's own codes (-32010…-32015) are kept as they are, with their `data` ({code, status, task}): JSON-RPC
    2.0 reserves -32000…-32099 for implementation-defined server errors, so they are valid 0.3 errors too, and a
    client switches on the same code in either era (the HTTP status is the front door's, unchanged). A 1.0 `data`
    (a list of typed google.rpc details) becomes its ErrorInfo's metadata, or is dropped when that is empty."""
    code = error.get("code")
    message = error.get("message")
    out: dict[str, Any] = {
        "code": INTERNAL_ERROR if not isinstance(code, int) or code in _V10_ONLY else code,
        "message": message if isinstance(message, str) else "",
    }
    data = error.get("data")
    if isinstance(data, list):
        data = next(
            (
                d.get("metadata")
                for d in data
                if isinstance(d, dict)
                and d.get("@type") == _ERROR_INFO
                and isinstance(d.get("metadata"), dict)
            ),
            None,
        )
        data = data or None
    if data is not None:
        out["data"] = data
    return out


def error_to_v10(error: dict[str, Any]) -> dict[str, Any]:
    """A 0.3 agent's JSON-RPC error object in 1.0 shape: the codes are the same (0.3's are a subset); an object
    `data` becomes a google.rpc.ErrorInfo (reason by code, metadata values as strings, as ErrorInfo requires),
    typed details are kept, any other `data` is dropped."""
    code = error.get("code")
    message = error.get("message")
    out: dict[str, Any] = {
        "code": code if isinstance(code, int) else INTERNAL_ERROR,
        "message": message if isinstance(message, str) else "",
    }
    data = error.get("data")
    if isinstance(data, list) and all(isinstance(d, dict) and "@type" in d for d in data):
        out["data"] = data
    elif isinstance(data, dict):
        reason = REST.get(out["code"], (0, "", "INTERNAL_ERROR"))[2]
        meta = {str(k): v if isinstance(v, str) else _json(v) for k, v in data.items()}
        out["data"] = [
            {"@type": _ERROR_INFO, "reason": reason, "domain": "a2a-protocol.org", "metadata": meta}
        ]
    return out


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


# -- cards ---------------------------------------------------------------------------------------------------------


def card_to_v03(card: Any) -> dict[str, Any]:
    """A 1.0 agent card (as the gateway rewrote it) as a 0.3 card: `url`, `preferredTransport`, `protocolVersion`,
    `additionalInterfaces`. The gateway serves 0.3 on the card's JSON-RPC endpoint whatever the agent speaks, so a
    card listing only 1.0 interfaces gets that endpoint as its 0.3 primary interface."""
    s = sdk()
    if not isinstance(card, dict):
        raise ValueError("the card is not a JSON object")
    core = s.ParseDict(card, s.pb.AgentCard(), ignore_unknown_fields=True)
    ifaces = list(core.supported_interfaces)
    if not any(i.protocol_version and s.is_legacy_version(i.protocol_version) for i in ifaces):
        rpc = next((i for i in ifaces if i.protocol_binding == "JSONRPC"), None)
        if rpc is None:
            raise ValueError("the card names no JSON-RPC interface")
        legacy = s.pb.AgentInterface(url=rpc.url, protocol_binding="JSONRPC", protocol_version="0.3")
        if rpc.tenant:
            legacy.tenant = rpc.tenant
        del core.supported_interfaces[:]
        core.supported_interfaces.extend([legacy, *ifaces])
    compat = s.conv.to_compat_agent_card(core)
    return cast(dict[str, Any], compat.model_dump(mode="json", by_alias=True, exclude_none=True))
