"""agentgw.yaml: frozen, validated settings (declare → load → run), plus loading the registry files it names.

`load_settings(path)` interpolates `${VAR}` / `${VAR:-default}`, validates with `extra="forbid"`, merges the
registry, runs cross-file checks, and raises ConfigError listing every problem as `file: key.path: what`.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from agentgw.registry import Registry

_ENV = re.compile(r"\$(\$)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Listen(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class Policies(Frozen):
    model: str = "policies/model.conf"
    policy: str = "policies/policy.csv"


class ApiKey(Frozen):
    subject: str = Field(min_length=1)
    roles: list[str] = Field(default_factory=list)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # A well-known demo key: accepted only while the gateway listens on loopback, and only from loopback peers.
    loopback_only: bool = False
    name: str | None = None


class Auth(Frozen):
    api_keys: list[ApiKey] = Field(default_factory=list)
    keys_file: str | None = None  # YAML list of ApiKey entries; `agentgw keys create` appends here
    public_paths: list[str] = Field(default_factory=lambda: ["/healthz", "/readyz"])


class Limits(Frozen):
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)


class Server(Frozen):
    workers: int = Field(default=1, ge=1, le=64)
    graceful_shutdown_s: float = Field(default=30.0, ge=0)
    access_log: bool = False


class CircuitBreaker(Frozen):
    failures: int = Field(default=5, ge=1)  # consecutive failures that open the circuit
    cooldown_s: float = Field(default=30.0, ge=0)  # open → half-open (one trial call)


class RetryDefaults(Frozen):
    attempts: int = Field(default=2, ge=1, le=10)
    backoff_ms: float = Field(default=100.0, ge=0)
    max_backoff_ms: float = Field(default=2000.0, ge=0)


class Upstream(Frozen):
    pool_size: int = Field(default=1000, ge=1)  # total keep-alive connections per process
    pool_per_host: int = Field(default=0, ge=0)  # 0 = no per-host cap
    retry: RetryDefaults = Field(default_factory=RetryDefaults)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)


class AuditLog(Frozen):
    enabled: bool = True
    path: str | None = None  # JSON lines file; default: the gateway log (stderr)


class Audit(Frozen):
    log: AuditLog = Field(default_factory=AuditLog)


class Logging(Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class Settings(Frozen):
    listen: Listen = Field(default_factory=Listen)
    registry: list[str] = Field(default_factory=lambda: ["registry/*.yaml"])
    policies: Policies | None = None
    auth: Auth = Field(default_factory=Auth)
    limits: Limits = Field(default_factory=Limits)
    server: Server = Field(default_factory=Server)
    upstream: Upstream = Field(default_factory=Upstream)
    audit: Audit = Field(default_factory=Audit)
    logging: Logging = Field(default_factory=Logging)

    _path: Path = PrivateAttr(default=Path("agentgw.yaml"))
    _registry: Registry = PrivateAttr(default_factory=Registry)
    _keys: tuple[ApiKey, ...] = PrivateAttr(default=())

    @property
    def path(self) -> Path:
        return self._path

    @property
    def base_dir(self) -> Path:
        return self._path.parent

    @property
    def registry_data(self) -> Registry:
        return self._registry

    @property
    def all_keys(self) -> tuple[ApiKey, ...]:
        return self._keys

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.base_dir / p

    def keys_path(self) -> Path | None:
        return self.resolve(self.auth.keys_file) if self.auth.keys_file else None


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def interpolate(node: Any, file: str, problems: list[Problem], loc: tuple[Any, ...] = ()) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string; `$$` is a literal `$`. Unset → a problem."""
    if isinstance(node, dict):
        return {k: interpolate(v, file, problems, (*loc, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, file, problems, (*loc, i)) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name, default = m.group(2), m.group(3)
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            problems.append(Problem(file, _key_path(loc), f"environment variable {name} is not set"))
            return ""
        return value

    return _ENV.sub(sub, node)


def _read_yaml(path: Path, problems: list[Problem]) -> Any:
    try:
        with path.open("rb") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        problems.append(Problem(str(path), "", "file not found"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problems.append(Problem(str(path), where, f"invalid YAML: {getattr(exc, 'problem', exc)}"))
    except OSError as exc:
        problems.append(Problem(str(path), "", f"cannot read: {exc.strerror}"))
    return None


def _validation_problems(file: str, err: ValidationError, prefix: tuple[Any, ...] = ()) -> Iterator[Problem]:
    for e in err.errors(include_url=False):
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        loc = tuple(p for p in (*prefix, *e["loc"]) if not (isinstance(p, str) and p.startswith("function-")))
        yield Problem(file, _key_path(loc), msg)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_registry(settings: Settings, problems: list[Problem]) -> Registry:
    """Merge every registry file the settings name; names must be unique across files."""
    merged: dict[str, dict[str, list[Any]]] = {}
    origin: dict[tuple[str, str], str] = {}  # (kind, name) → file, for duplicate reports
    files: list[Path] = []
    for pattern in settings.registry:
        found = sorted(glob.glob(str(settings.resolve(pattern))))
        if not found:
            problems.append(Problem(str(settings.path), "registry", f"no file matches {pattern!r}"))
        files.extend(Path(f) for f in found)
    sections = {"llm": ("providers", "models"), "mcp": ("servers", "virtual_servers"), "a2a": ("agents",)}
    for file in files:
        fname = str(file)
        data = _read_yaml(file, problems)
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(Problem(fname, "", "expected a mapping with llm, mcp and a2a sections"))
            continue
        data = interpolate(data, fname, problems)
        try:  # validate each file on its own first, so problems name the file they are in
            Registry.model_validate(data)
        except ValidationError as err:
            problems.extend(_validation_problems(fname, err))
            continue
        for section, lists in sections.items():
            for list_name in lists:
                for i, item in enumerate((data.get(section) or {}).get(list_name) or []):
                    kind = f"{section}.{list_name}"
                    key = (kind, str(item.get("name")))
                    if key in origin:
                        problems.append(
                            Problem(
                                fname, f"{kind}[{i}].name", f"{key[1]!r} is also defined in {origin[key]}"
                            )
                        )
                        continue
                    origin[key] = fname
                    merged.setdefault(section, {}).setdefault(list_name, []).append(item)
    try:
        registry = Registry.model_validate(merged)
    except ValidationError as err:  # pragma: no cover - every file validated on its own above
        problems.extend(_validation_problems("registry", err))
        return Registry()
    providers = {p.name: p for p in registry.llm.providers}
    for m in registry.llm.models:
        for i, t in enumerate(m.targets):
            if t.provider not in providers:
                problems.append(
                    Problem(
                        origin[("llm.models", m.name)],
                        f"llm.models[{m.name}].targets[{i}].provider",
                        f"unknown provider {t.provider!r}",
                    )
                )
    return registry


def _load_keys_file(path: Path, problems: list[Problem]) -> list[ApiKey]:
    if not path.exists():
        return []
    data = _read_yaml(path, problems)
    if data is None:
        return []
    if not isinstance(data, list):
        problems.append(Problem(str(path), "", "expected a list of keys"))
        return []
    keys: list[ApiKey] = []
    for i, item in enumerate(data):
        try:
            keys.append(ApiKey.model_validate(item))
        except ValidationError as err:
            problems.extend(_validation_problems(str(path), err, (i,)))
    return keys


def load_settings(path: str | os.PathLike[str], *, host: str | None = None) -> Settings:
    """Load and check everything; raise ConfigError with every problem found (not just the first)."""
    cfg_path = Path(path).resolve()
    problems: list[Problem] = []
    raw = _read_yaml(cfg_path, problems)
    if problems:
        raise ConfigError(problems)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([Problem(str(cfg_path), "", "expected a mapping at the top level")])
    raw = interpolate(raw, str(cfg_path), problems)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as err:
        problems.extend(_validation_problems(str(cfg_path), err))
        raise ConfigError(problems) from None
    settings._path = cfg_path
    settings._registry = load_registry(settings, problems)
    keys = list(settings.auth.api_keys)
    if settings.keys_path() is not None:
        keys += _load_keys_file(settings.keys_path(), problems)  # type: ignore[arg-type]
    settings._keys = tuple(keys)
    listen_host = host or settings.listen.host
    for i, k in enumerate(settings.auth.api_keys):
        if k.loopback_only and not is_loopback(listen_host):
            problems.append(
                Problem(
                    str(cfg_path),
                    f"auth.api_keys[{i}].loopback_only",
                    f"a loopback-only key cannot be used while listening on {listen_host!r}",
                )
            )
    if settings.policies is not None:
        for key in ("model", "policy"):
            p = settings.resolve(getattr(settings.policies, key))
            if not p.exists():
                problems.append(Problem(str(cfg_path), f"policies.{key}", f"file not found: {p}"))
    if problems:
        raise ConfigError(problems)
    return settings
