"""The secret values a configuration holds (provider keys, upstream headers and the credentials inside them, env
values of supervised upstreams that are marked or named secret, values of secret-named `${VAR}`s, the audit key,
the gateway secret) and a Scrubber that cuts every occurrence of them out of text: audit records, trace output,
/admin answers and log lines."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import orjson

from agentgw.audit.redact import SECRET, is_secret_name

if TYPE_CHECKING:
    from agentgw.settings import Settings

MIN_LEN = 8  # shorter values are not scrubbed: they would cut ordinary words out of records
_SECRET_VAR = re.compile(r"(?i)key|token|secret|passw|pwd|credential|auth|cookie|session|private")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
_SCHEMES = {"bearer", "basic", "token", "apikey", "api-key", "key", "digest"}


def looks_secret(name: str) -> bool:
    """An environment variable or field name that holds a credential (`OPENAI_API_KEY`, `DOCS_TOKEN`, …)."""
    return is_secret_name(name) or bool(_SECRET_VAR.search(name))


def credential_parts(value: str) -> list[str]:
    """A header value and the credentials inside it: `Bearer <token>` → the token too; `Basic <b64>` → also the
    decoded `user:password` and the password (an upstream may echo any of them)."""
    out = [value]
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if rest and scheme.lower() in _SCHEMES:
        out.append(rest)
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(rest, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            if decoded:
                out += [decoded, decoded.partition(":")[2]]
    return out


def referenced_secret_values(files: Iterable[Path]) -> list[str]:
    """The values of the secret-named `${VAR}`s these config files reference (set in this environment)."""
    out: list[str] = []
    for path in files:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        for name in {m.group(1) for m in _VAR.finditer(text)}:
            value = os.environ.get(name)
            if value and looks_secret(name):
                out.append(value)
    return out


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value the gateway holds under `settings`."""
    from agentgw.registry import Agent, MCPServer, Provider
    from agentgw.settings import registry_files, secret_of

    reg = settings.registry_data
    out: list[str] = [p.api_key for p in reg.llm.providers if p.api_key]
    out += [  # Bedrock's SigV4 credentials (the key id is not secret; the secret key and session token are)
        s for p in reg.llm.providers for s in (p.aws_secret_access_key, p.aws_session_token) if s
    ]
    entries: list[Provider | MCPServer | Agent] = [*reg.llm.providers, *reg.mcp.servers, *reg.a2a.agents]
    for entry in entries:
        for value in entry.headers.values():
            out += credential_parts(value)
        marked = set(entry.secret_env)
        out += [v for k, v in entry.env.items() if k in marked or looks_secret(k)]
    if settings.audit.hmac_key:
        out.append(settings.audit.hmac_key)
    secret = secret_of(settings)
    if secret:
        out.append(secret)
    out += referenced_secret_values([settings.path, *registry_files(settings, [])])
    return out


def without_credentials(url: str | None) -> str | None:
    """A registry URL as /admin may show it: no userinfo (`user:password@`), query or fragment (which may carry a
    key); the scheme, host, port and path stay."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return urlunsplit((parts.scheme, host + (f":{port}" if port is not None else ""), parts.path, "", ""))


class Scrubber:
    """Replaces every configured secret value (and its JSON-escaped form) in a text with `[secret]`: one compiled
    alternation of the escaped values, longest first, so a value inside another is never half-kept. `update`
    swaps the values in place (a registry reload), so every holder of this Scrubber scrubs the new ones at once."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        for s in secrets:
            if len(s) >= MIN_LEN:
                values.add(s)
                values.add(orjson.dumps(s).decode()[1:-1])  # as it appears inside a JSON string
        ordered = sorted(values, key=len, reverse=True)
        raw = tuple(v.encode() for v in ordered)
        text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        data = re.compile(b"|".join(map(re.escape, raw))) if ordered else None
        # One assignment: a log line scrubbed from another thread sees the old values or the new, never a mix.
        self._state = (tuple(ordered), raw, text, data)

    @property
    def values(self) -> tuple[str, ...]:
        return self._state[0]

    def __bool__(self) -> bool:
        return self._state[2] is not None

    def text(self, value: str) -> str:
        pattern = self._state[2]
        return pattern.sub(SECRET, value) if pattern is not None else value

    def data(self, value: bytes) -> bytes:
        pattern = self._state[3]
        return pattern.sub(SECRET.encode(), value) if pattern is not None else value

    def finds(self, value: bytes) -> bool:
        """Whether `value` holds a secret (substring tests: faster than the alternation for the common miss)."""
        return any(v in value for v in self._state[1])


class ScrubLogs(logging.Filter):
    """A log filter that scrubs the formatted message (and exception text) of every record."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        if self.scrubber:
            message = record.getMessage()
            clean = self.scrubber.text(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.scrubber.text(record.exc_text)
        return True


def scrub_logs(scrubber: Scrubber) -> None:
    """Install the filter on every handler of the root logger (where the gateway's log lines are written); a
    handler that already has one scrubs with `scrubber` from now on (the gateway's own, which reloads update)."""
    for handler in logging.getLogger().handlers:
        installed = [f for f in handler.filters if isinstance(f, ScrubLogs)]
        for f in installed:
            f.scrubber = scrubber
        if not installed:
            handler.addFilter(ScrubLogs(scrubber))


def audit_scrubber(config: Path, hmac_key: str | None) -> Scrubber:
    """What the audit CLI can know without loading provider settings: the audit key and the values of the
    secret-named `${VAR}`s that agentgw.yaml and its registry files reference (where this environment sets them)."""
    import glob

    from agentgw.configfile import read_yaml

    files = [config]
    raw = read_yaml(config, [])
    patterns = raw.get("registry") if isinstance(raw, dict) else None
    for pattern in patterns if isinstance(patterns, list) else []:
        if isinstance(pattern, str):
            full = pattern if Path(pattern).is_absolute() else f"{glob.escape(str(config.parent))}/{pattern}"
            files += [Path(f) for f in sorted(glob.glob(full, recursive=True))]
    return Scrubber([*([hmac_key] if hmac_key else []), *referenced_secret_values(files)])
