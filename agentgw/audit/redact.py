"""Redaction of what goes into an audit record: secrets are always removed (credential-named fields, strings
that look like keys or tokens, the gateway's own configured secrets); operator rules drop, mask or hash fields
and regex matches. Runs in the audit writer, never on the request path."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import orjson

from agentgw.audit.config import Redaction

SECRET = "[secret]"
MASK = "***"
DROPPED = "[dropped]"
_SORTED = orjson.OPT_SORT_KEYS

# Field names that always hold credentials (compared lower-cased, with '-' and '_' removed).
_SECRET_NAMES = {
    "authorization",
    "proxyauthorization",
    "apikey",
    "xapikey",
    "apitoken",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "authtoken",
    "bearer",
    "password",
    "passwd",
    "pwd",
    "secret",
    "clientsecret",
    "secretkey",
    "privatekey",
    "cookie",
    "setcookie",
    "credential",
    "credentials",
    "sessiontoken",
    "awssecretaccesskey",
}
_SECRET_SUFFIXES = ("token", "secret", "password", "apikey", "privatekey")

# Strings that look like credentials wherever they appear.
_SECRET_VALUES = re.compile(
    r"(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"  # an Authorization header value
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"  # OpenAI/Anthropic/Stripe-style keys
    r"|\bagw-[A-Za-z0-9_-]{8,}"  # agentgw API keys
    r"|\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"  # JWTs
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
)


# Every secret shape above contains one of these (lower-cased): a cheap substring test first, and the regex
# only for the few strings that might hold one (the regex alone was 3 µs for a short sentence).
_TRIGGERS = (
    "bearer",
    "basic",
    "sk-",
    "pk-",
    "rk-",
    "agw-",
    "eyj",
    "akia",
    "asia",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "xox",
    "private key",
)


def is_secret_name(name: str) -> bool:
    n = name.lower().replace("-", "").replace("_", "")
    return n in _SECRET_NAMES or n.endswith(_SECRET_SUFFIXES)


class Redactor:
    """Applies the always-on secret rules, then the operator's rules, to a JSON-like value (returns a copy)."""

    def __init__(self, cfg: Redaction, known_secrets: Iterable[str] = (), key: bytes | None = None) -> None:
        self.key = key or b"agentgw-audit-redaction"
        self.drop = [p.lower() for p in cfg.drop]
        self.mask = [p.lower() for p in cfg.mask]
        self.hash = [p.lower() for p in cfg.hash]
        self.patterns = [(re.compile(p.regex), p.action) for p in cfg.patterns]
        self.use_secrets(known_secrets)
        self._field_rules = bool(self.drop or self.mask or self.hash)

    def use_secrets(self, known_secrets: Iterable[str]) -> None:
        """Exact values the gateway itself holds (provider keys, upstream headers): never echoed into a record.
        One pattern with the shapes of secrets, so each string is scanned once. Called again on a registry
        reload."""
        secrets = sorted({s for s in known_secrets if len(s) >= 8}, key=len, reverse=True)
        known = "|".join(re.escape(s) for s in secrets)
        self.secrets = re.compile(f"{known}|{_SECRET_VALUES.pattern}" if known else _SECRET_VALUES.pattern)
        self.known = tuple(secrets)

    def digest(self, value: str) -> str:
        """A keyed, truncated hash: equal values stay comparable across records without being readable."""
        return "sha256:" + hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:16]

    def text(self, value: str) -> str:
        """Secrets and pattern rules applied to one string."""
        if len(value) >= 8 and self._may_hold_secret(value):  # nothing shorter is a credential
            value = self.secrets.sub(SECRET, value)
        for rx, action in self.patterns:
            if action == "drop":
                if rx.search(value):
                    return DROPPED
            elif action == "mask":
                value = rx.sub(MASK, value)
            else:
                value = rx.sub(lambda m: self.digest(m.group(0)), value)
        return value

    def _may_hold_secret(self, value: str) -> bool:
        low = value.lower()
        return any(t in low for t in _TRIGGERS) or any(s in value for s in self.known)

    def _rule(self, name: str, path: str) -> str | None:
        if not self._field_rules:
            return None
        name, path = name.lower(), path.lower()
        for action, globs in (("drop", self.drop), ("mask", self.mask), ("hash", self.hash)):
            for g in globs:
                if fnmatchcase(path if "." in g else name, g):
                    return action
        return None

    def value(self, obj: Any, path: str = "", limits: Limits | None = None, depth: int = 0) -> Any:
        """A redacted copy of `obj` (dicts, lists, strings, scalars). With `limits`, also bounded: strings cut
        (after redaction, so a secret is never half-kept by the cut), long lists keep their first and last items,
        nesting deeper than `limits.depth` elided."""
        if isinstance(obj, str):
            return limits.cut(self.text(obj)) if limits is not None else self.text(obj)
        if limits is not None and depth >= limits.depth and isinstance(obj, dict | list | tuple):
            return "…"
        if isinstance(obj, dict):
            out: dict[str, Any] = {}
            for k, v in obj.items():
                key = str(k)
                if is_secret_name(key):
                    continue
                sub = f"{path}.{key}" if path else key
                action = self._rule(key, sub)
                if action == "drop":
                    continue
                if action == "mask":
                    out[key] = MASK
                elif action == "hash":
                    out[key] = self.digest(
                        v if isinstance(v, str) else orjson.dumps(v, option=_SORTED).decode()
                    )
                else:
                    out[key] = self.value(v, sub, limits, depth + 1)
            return out
        if isinstance(obj, list | tuple):
            items = list(enumerate(obj))
            n = limits.items if limits is not None else 0
            if n and len(items) > n:
                head, tail = items[: n // 2], items[len(items) - (n - n // 2) :]
                return [
                    *(self.value(v, f"{path}.{i}", limits, depth + 1) for i, v in head),
                    f"…({len(items) - n} more)",
                    *(self.value(v, f"{path}.{i}", limits, depth + 1) for i, v in tail),
                ]
            return [self.value(v, f"{path}.{i}" if path else str(i), limits, depth + 1) for i, v in items]
        return obj


@dataclass(frozen=True, slots=True)
class Limits:
    chars: int  # 0: no text at all
    items: int
    depth: int = 5

    def cut(self, value: str) -> str | None:
        if not self.chars:
            return None
        if len(value) > self.chars:
            return value[: self.chars] + f"…(+{len(value) - self.chars})"
        return value
