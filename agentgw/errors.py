"""The GatewayError tree: every failure a client can see, as an HTTP status, a stable code and a public message.

Planes render these in their own envelope; nothing else (no traceback, no upstream secret) reaches a client.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """A failure with a stable public shape. `message` is safe to show to the caller."""

    status: int = 500
    code: str = "internal_error"
    type: str = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}
        self.detail = detail

    def public(self) -> GatewayError:
        """What the caller is told: this error, unless it is answered as another (Concealed)."""
        return self


class BadRequest(GatewayError):
    status, code, type = 400, "invalid_request", "invalid_request_error"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class Unauthenticated(GatewayError):
    status, code, type = 401, "invalid_api_key", "authentication_error"


class Forbidden(GatewayError):
    status, code, type = 403, "permission_denied", "permission_error"


class Concealed(Forbidden):
    """A policy denial answered as `shown` (the plane's error for a target that does not exist). The Exchange
    keeps this error, so audit, metrics and traces say 403 permission_denied; the caller sees only `shown`."""

    def __init__(self, message: str, shown: GatewayError) -> None:
        super().__init__(message)
        self.shown = shown

    def public(self) -> GatewayError:
        return self.shown


class NotFound(GatewayError):
    status, code, type = 404, "not_found", "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"

    @classmethod
    def named(cls, name: object) -> ModelNotFound:
        """The one answer for a model that does not exist, and for one the caller may not use (authz)."""
        return cls(f"The model '{name}' does not exist or you do not have access to it.")


class PayloadTooLarge(GatewayError):
    status, code, type = 413, "payload_too_large", "invalid_request_error"


class UnsupportedMediaType(GatewayError):
    status, code, type = 415, "unsupported_media_type", "invalid_request_error"


class UpstreamError(GatewayError):
    """Every upstream target failed; the message names the last cause (scrubbed of credentials)."""

    status, code, type = 502, "upstream_error", "api_error"


class UpstreamTimeout(UpstreamError):
    status, code = 504, "upstream_timeout"


class UpstreamInvalidResponse(UpstreamError):
    """The upstream answered success with something unreadable (HTML, bad JSON, the wrong content type)."""

    code = "upstream_invalid_response"


class UpstreamRejected(GatewayError):
    """The upstream answered 4xx to the request itself; relayed with its status, credentials scrubbed."""

    type = "invalid_request_error"


class Unavailable(GatewayError):
    status, code, type = 503, "unavailable", "api_error"


class InternalError(GatewayError):
    """An unexpected exception inside a stage: a denial (fail closed), never a skipped check."""

    status, code, type = 500, "internal_error", "api_error"
