"""API keys: generation, SHA-256 storage, and the in-memory lookup table authn uses.

Only hashes are kept (config or a keys file); the key itself is printed once by `agentgw keys create`.
The keys file is re-read when it changes, so a key created while the gateway runs works without a restart.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

import yaml

from agentgw.exchange import Principal
from agentgw.settings import ApiKey, Problem, Settings, _load_keys_file

KEY_PREFIX = "agw-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint(digest: str) -> str:
    """A short, non-secret id for a key (the first 12 hex digits of its hash) for logs and audit."""
    return digest[:12]


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def append_key(path: Path, subject: str, roles: list[str], name: str | None = None) -> str:
    """Create a key, store its hash in `path` (a YAML list, created 0600 if missing), return the key."""
    key = generate_key()
    entries: list[dict[str, object]] = []
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or []
        if not isinstance(loaded, list):
            raise ValueError(f"{path}: expected a list of keys")
        entries = loaded
    entry: dict[str, object] = {"subject": subject, "roles": roles, "sha256": hash_key(key)}
    if name:
        entry["name"] = name
    entry["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entries.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(entries, fh, sort_keys=False)
    os.replace(tmp, path)
    return key


class KeyStore:
    """hash → (principal, loopback_only). Lookups are a dict hit; the keys file is re-checked at most once a
    second, and only when a presented key is unknown."""

    def __init__(self, settings: Settings) -> None:
        self._static = [k for k in settings.auth.api_keys]
        self._file = settings.keys_path()
        self._file_mtime: float | None = None
        self._checked = 0.0
        self._table: dict[str, tuple[Principal, bool]] = {}
        self._build(list(settings.all_keys))
        if self._file is not None and self._file.exists():
            self._file_mtime = self._file.stat().st_mtime

    def _build(self, keys: list[ApiKey]) -> None:
        table: dict[str, tuple[Principal, bool]] = {}
        for k in keys:
            principal = Principal(k.subject, tuple(k.roles), "api_key", fingerprint(k.sha256))
            table[k.sha256] = (principal, k.loopback_only)
        self._table = table

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if self._file is None or now - self._checked < 1.0:
            return
        self._checked = now
        try:
            mtime = self._file.stat().st_mtime
        except OSError:
            return
        if mtime == self._file_mtime:
            return
        problems: list[Problem] = []
        keys = _load_keys_file(self._file, problems)
        if not problems:  # a broken file keeps the last good table
            self._file_mtime = mtime
            self._build(self._static + keys)

    def lookup(self, key: str) -> tuple[Principal, bool] | None:
        digest = hash_key(key)
        hit = self._table.get(digest)
        if hit is None:
            self._maybe_reload()
            hit = self._table.get(digest)
        return hit
