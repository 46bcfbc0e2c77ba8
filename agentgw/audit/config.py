"""The `audit:` section of agentgw.yaml: which store keeps the records, how the writer batches and what it does
when full, redaction, full-payload capture per target, retention."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentgw.configfile import (
    ConfigError,
    Problem,
    add_problems,
    interpolated,
    read_yaml,
    validation_problems,
)

_IDENT = r"^[a-z_][a-z0-9_]{0,40}$"  # SQL identifiers are interpolated into statements: keep them plain


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SQLiteStore(Frozen):
    path: str = "audit.db"  # relative to agentgw.yaml
    busy_timeout_s: float = Field(default=10.0, gt=0)  # wait for another writer (another worker) this long


class PostgresStore(Frozen):
    dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    schema_name: str = Field(default="public", pattern=_IDENT)
    table_prefix: str = Field(default="agentgw_audit", pattern=_IDENT)
    pool_size: int = Field(default=4, ge=1, le=64)
    connect_timeout_s: float = Field(default=10.0, gt=0)


class PatternRule(Frozen):
    """A regular expression applied to every string value of a summary or payload."""

    regex: str
    action: Literal["mask", "hash", "drop"] = "mask"  # drop: the whole string becomes "[dropped]"

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class Redaction(Frozen):
    """Field rules match a key name (`email`, `*token*`) anywhere, or a dotted path (`arguments.user.*`);
    case-insensitive globs. Secrets (credentials, keys, tokens, passwords) are removed whatever is set here."""

    drop: list[str] = Field(default_factory=list)
    mask: list[str] = Field(default_factory=list)
    hash: list[str] = Field(default_factory=list)
    patterns: list[PatternRule] = Field(default_factory=list)


class Summaries(Frozen):
    max_chars: int = Field(default=200, ge=0)  # longest text kept in a summary; 0: structure only, no text
    max_items: int = Field(default=8, ge=1)  # longest list kept (first and last items)


class PayloadCapture(Frozen):
    """Keep the full request and/or response (redacted) of calls whose target matches `match`."""

    match: str = Field(min_length=1)  # a target glob: `llm:*`, `mcp:docs/*`, `a2a:planner`
    request: bool = True
    response: bool = True
    max_bytes: int = Field(default=65536, ge=256)  # larger payloads are cut (and marked as cut)


class Retention(Frozen):
    max_age_days: float | None = Field(default=None, gt=0)  # None: keep everything
    check_interval_s: float = Field(default=3600.0, gt=0)


class Checkpoints(Frozen):
    """Signed checkpoints of the chain kept in a second store, so deleting the newest records is provable."""

    sink: str | None = None  # a JSON-lines file (relative to agentgw.yaml) or a postgresql:// DSN; None: off
    every_records: int = Field(default=1000, ge=1)
    every_s: float = Field(default=60.0, gt=0)


class Audit(Frozen):
    enabled: bool = True  # false only for benchmarks: nothing is recorded
    # process: records are built and stored by a writer process of their own (another core); inline: in the
    # gateway's event loop and a thread (one process, e.g. for debugging)
    writer: Literal["process", "inline"] = "process"
    store: Literal["sqlite", "postgres"] = "sqlite"
    sqlite: SQLiteStore = Field(default_factory=SQLiteStore)
    postgres: PostgresStore = Field(default_factory=PostgresStore)
    queue_size: int = Field(default=10_000, ge=1)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    batch_wait_ms: float = Field(default=100.0, ge=0, le=5000)  # let a batch fill this long before writing it
    on_full: Literal["block", "drop"] = "block"
    hmac_key: str | None = Field(default=None, min_length=16)  # keyed chain: use ${AGENTGW_AUDIT_KEY}
    jsonl: str | None = None  # also append every record to this JSON-lines file ("-": stderr)
    summaries: Summaries = Field(default_factory=Summaries)
    redaction: Redaction = Field(default_factory=Redaction)
    payloads: list[PayloadCapture] = Field(default_factory=list)  # the first matching entry applies
    retention: Retention = Field(default_factory=Retention)
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)


@dataclass(frozen=True)
class AuditOnly:
    """The `audit:` section of agentgw.yaml and where relative paths start: all that reading the store needs."""

    audit: Audit
    path: Path

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.path.parent / p


def load_audit_settings(path: str | os.PathLike[str]) -> AuditOnly:
    """Only the `audit:` section (its `${VAR}`s interpolated, nothing else): an auditor running `agentgw audit
    verify` or `agentgw trace` needs the store's settings, not the providers' keys or the upstreams' tokens.
    Raises ConfigError for problems in that section (an unset variable it names, an invalid value)."""
    cfg_path = Path(path).resolve()
    file = str(cfg_path)
    problems: list[Problem] = []
    raw = read_yaml(cfg_path, problems)
    if raw is not None and not isinstance(raw, dict):
        problems.append(Problem(file, "", "expected a mapping at the top level"))
    section = raw.get("audit") if isinstance(raw, dict) else None
    audit = Audit()
    if section is not None and not problems:
        section, unset = interpolated(section, file, problems, ("audit",))
        try:
            audit = Audit.model_validate(section)
        except ValidationError as err:
            add_problems(problems, validation_problems(file, err, ("audit",)), unset)
    if problems:
        raise ConfigError(problems)
    return AuditOnly(audit, cfg_path)
