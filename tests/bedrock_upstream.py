"""A scriptable AWS Bedrock runtime for tests: a real Starlette app on loopback speaking the real wire format.

Where the shapes come from: botocore's bundled service model, botocore/data/bedrock-runtime/2023-09-30/
service-2.json (operations Converse `POST /model/{modelId}/converse` and ConverseStream `.../converse-stream`,
InvokeModel `.../invoke`; protocol rest-json, signing name `bedrock`; the shapes ConverseRequest/Response,
Message, ContentBlock, ToolUseBlock, ToolResultBlock, TokenUsage, the ConverseStreamOutput event union, the
exceptions and their HTTP statuses), and the AWS event stream encoding (each message: total length and headers
length as big-endian uint32, the CRC32 of those 8 bytes, the headers — name length uint8, name, value type
7 = string, value length uint16, value — the payload, then the CRC32 of everything before it). botocore's
own decoder and parsers read what this app writes (tests/llm/providers/test_bedrock.py drives it with a
botocore client).

Every request's SigV4 signature is verified: recomputed with botocore's signer over the method, the raw path
and query, the signed headers and the body as received, with the secret of the access key named in the
Authorization header; a mismatch is answered 403 as Bedrock does. Requests are recorded; answers are scripted:
Converse answers (as JSON, or streamed as the event sequence Bedrock sends for them), raw event scripts,
error statuses with Bedrock's error body and `x-amzn-ErrorType` header, and Titan embeddings.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REGION = "us-east-1"
KEY_ID = "AKIDEXAMPLE0BEDROCK1"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYbedrocksecret"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessiontoken0123456789"

ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)
_PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke)$")


# -- the event stream encoding ------------------------------------------------------------------------------


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message (string headers only, which is all Bedrock sends)."""
    raw_headers = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw_headers += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)


def event(event_type: str, body: dict[str, Any]) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, orjson.dumps({**body, "p": "abcdefghij"}))  # Bedrock pads events with "p"


def exception(exception_type: str, message: str) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, orjson.dumps({"message": message}))


# -- Converse answers ---------------------------------------------------------------------------------------

DEFAULT_USAGE = {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17}


def text(value: str) -> dict[str, Any]:
    return {"text": value}


def tool_use(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}}


def answer(
    *blocks: dict[str, Any], stop_reason: str = "end_turn", usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A complete Converse answer with the given content blocks."""
    return {
        "output": {"message": {"role": "assistant", "content": list(blocks)}},
        "stopReason": stop_reason,
        "usage": {**DEFAULT_USAGE, **(usage or {})},
        "metrics": {"latencyMs": 42},
    }


def _pieces(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)]


def events_for(reply: dict[str, Any], piece: int = 4, *, metadata: bool = True) -> list[bytes]:
    """The ConverseStream Bedrock sends for `reply`: messageStart; text blocks as deltas (no block start);
    toolUse blocks opened by contentBlockStart (id and name), their input as partial JSON string deltas;
    contentBlockStop each; messageStop with the stop reason; metadata with usage and metrics."""
    frames = [event("messageStart", {"role": "assistant"})]
    for index, block in enumerate(reply["output"]["message"]["content"]):
        if "text" in block:
            deltas = [{"text": p} for p in _pieces(block["text"], piece)]
        else:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            frames.append(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            args = orjson.dumps(use["input"]).decode() if use["input"] else ""
            deltas = [{"toolUse": {"input": p}} for p in _pieces(args, piece)]
        frames += [event("contentBlockDelta", {"contentBlockIndex": index, "delta": d}) for d in deltas]
        frames.append(event("contentBlockStop", {"contentBlockIndex": index}))
    frames.append(event("messageStop", {"stopReason": reply["stopReason"]}))
    if metadata:
        frames.append(event("metadata", {"usage": reply["usage"], "metrics": {"latencyMs": 42}}))
    return frames


def titan_vector(value: str, dims: int) -> list[float]:
    """The embedding this fake answers for `value` (InvokeModel on a Titan text embeddings model)."""
    return [round(b / 255, 4) for b in hashlib.sha256(value.encode()).digest()[:dims]]


# -- the app ------------------------------------------------------------------------------------------------


def bedrock_error(status: int, message: str, error_type: str | None = None) -> JSONResponse:
    kind = error_type or ERROR_TYPES.get(status, "InternalServerException")
    headers = {
        "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.coral.service/",
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    return JSONResponse({"message": message}, status_code=status, headers=headers)


@dataclass
class FakeBedrock:
    # access key id → (secret, session token or None): the credentials whose signatures this runtime accepts
    credentials: dict[str, tuple[str, str | None]] = field(
        default_factory=lambda: {KEY_ID: (SECRET, SESSION_TOKEN)}
    )
    replies: list[dict[str, Any]] = field(default_factory=lambda: [answer(text("hello from bedrock"))])
    streams: list[list[bytes]] = field(default_factory=list)  # raw event-stream scripts, used first
    failures: list[int] = field(default_factory=list)  # statuses to answer with, in order, before succeeding
    error_message: str = "scripted failure"
    split: int = 7  # a stream's bytes go out in pieces this long, so messages straddle reads
    region: str = REGION
    requests: list[dict[str, Any]] = field(default_factory=list)  # the ones whose signature checked out
    rejected: list[dict[str, Any]] = field(default_factory=list)  # refused requests: reason and headers

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/model/{rest:path}", self.model, methods=["POST"])])

    def _next_reply(self) -> dict[str, Any]:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    async def model(self, request: Request) -> Response:
        body = await request.body()
        match = _PATH.match(request.scope["raw_path"].decode())
        if match is None:
            return bedrock_error(404, "Unknown operation", "UnknownOperationException")
        refused = self.check_signature(request, body)
        if refused is not None:
            self.rejected.append({"reason": refused[1], "headers": dict(request.headers)})
            return bedrock_error(403, refused[1], refused[0])
        model_id, action = unquote(match.group(1)), match.group(2)
        self.requests.append(
            {
                "model": model_id,
                "action": action,
                "path": request.scope["raw_path"].decode(),
                "headers": dict(request.headers),
                "key_id": _AUTH.match(request.headers["authorization"]).group(1),  # type: ignore[union-attr]
                "body": orjson.loads(body),
            }
        )
        if self.failures:
            return bedrock_error(self.failures.pop(0), self.error_message)
        if action == "invoke":
            return self._embedding(orjson.loads(body))
        request_id = {"x-amzn-RequestId": "req-0001"}
        if action == "converse":
            return JSONResponse(self._next_reply(), headers=request_id)
        frames = self.streams.pop(0) if self.streams else events_for(self._next_reply())
        data = b"".join(frames)
        pieces = [data[i : i + self.split] for i in range(0, len(data), self.split)]
        return StreamingResponse(
            _relay(pieces), media_type="application/vnd.amazon.eventstream", headers=request_id
        )

    def _embedding(self, body: dict[str, Any]) -> Response:
        vector = titan_vector(body["inputText"], body.get("dimensions", 4))
        return JSONResponse({"embedding": vector, "inputTextTokenCount": len(body["inputText"].split())})

    def check_signature(self, request: Request, body: bytes) -> tuple[str, str] | None:
        """None when the request is signed by known credentials; else (AWS error type, message)."""
        match = _AUTH.fullmatch(request.headers.get("authorization", ""))
        if match is None:
            return (
                "IncompleteSignatureException",
                "Authorization header requires Credential, SignedHeaders, Signature.",
            )
        key_id, day, region, service, signed, signature = match.groups()
        known = self.credentials.get(key_id)
        if known is None:
            return "UnrecognizedClientException", "The security token included in the request is invalid."
        secret, token = known
        if token is not None and request.headers.get("x-amz-security-token") != token:
            return "UnrecognizedClientException", "The security token included in the request is invalid."
        amz_date = request.headers.get("x-amz-date", "")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "IncompleteSignatureException", "X-Amz-Date is missing or malformed."
        if abs((datetime.now(UTC) - when).total_seconds()) > 15 * 60:
            return "InvalidSignatureException", "Signature expired."
        names = signed.split(";")
        must = {"host", "x-amz-date"} | ({"x-amz-security-token"} if token else set())
        if (region, service, day) != (self.region, "bedrock", amz_date[:8]) or not must <= set(names):
            return "InvalidSignatureException", SIGNATURE_MISMATCH
        if any(n not in request.headers for n in names):
            return "InvalidSignatureException", SIGNATURE_MISMATCH
        query = request.scope["query_string"].decode()
        url = f"http://{request.headers['host']}{request.scope['raw_path'].decode()}" + (
            f"?{query}" if query else ""
        )
        signed_request = AWSRequest(
            method=request.method, url=url, data=body, headers={n: request.headers[n] for n in names}
        )
        signed_request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(key_id, secret, token), "bedrock", self.region)
        if signer.signed_headers(signer.headers_to_sign(signed_request)) != signed:
            return "InvalidSignatureException", SIGNATURE_MISMATCH
        content_hash = request.headers.get("x-amz-content-sha256")
        if content_hash is not None and content_hash != hashlib.sha256(body).hexdigest():
            return "InvalidSignatureException", SIGNATURE_MISMATCH
        expected = signer.signature(
            signer.string_to_sign(signed_request, signer.canonical_request(signed_request)), signed_request
        )
        if not hmac.compare_digest(expected, signature):
            return "InvalidSignatureException", SIGNATURE_MISMATCH
        return None


async def _relay(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
