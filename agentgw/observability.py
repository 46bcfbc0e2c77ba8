"""The `metrics:` and `telemetry:` sections of agentgw.yaml: who may scrape `GET /metrics`, and where (if
anywhere) OpenTelemetry spans are exported. Validated like the rest of the file (frozen, extra="forbid")."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricsSettings(Frozen):
    enabled: bool = True  # serve GET /metrics and count every Exchange
    # Secure by default: a credential with an admin role (auth.admin_roles) or one of `roles` is required.
    # `public: true` serves the endpoint without credentials (Prometheus' default scrape config): only do that
    # when the gateway's port is reachable by trusted networks alone.
    public: bool = False
    roles: list[str] = Field(default_factory=list)  # extra roles that may scrape, e.g. [metrics]


class Otlp(Frozen):
    # OTLP/HTTP (protobuf). A URL without a path gets the traces path `/v1/traces` appended.
    endpoint: str = "http://127.0.0.1:4318"
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. {Authorization: "Bearer ${OTLP_TOKEN}"}
    timeout_s: float = Field(default=10.0, gt=0)
    compression: Literal["none", "gzip"] = "none"

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def traces_url(self) -> str:
        parts = urlsplit(self.endpoint)
        if parts.path in ("", "/"):
            return self.endpoint.rstrip("/") + "/v1/traces"
        return self.endpoint


class TelemetrySettings(Frozen):
    enabled: bool = False  # off: the OpenTelemetry SDK is not even imported
    service_name: str = Field(default="agentgw", min_length=1)
    resource_attributes: dict[str, str] = Field(default_factory=dict)  # e.g. deployment.environment.name
    # Share of traces exported, decided on the trace id (so a trace is kept or dropped whole, across replicas).
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    otlp: Otlp = Field(default_factory=Otlp)
    max_queue_size: int = Field(default=8192, ge=1)  # spans waiting for export; past this they are dropped
    max_export_batch_size: int = Field(default=512, ge=1)
    schedule_delay_ms: float = Field(default=1000.0, gt=0)
