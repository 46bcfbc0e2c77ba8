"""API keys: generation, SHA-256 storage, and the in-memory lookup table authn uses.

Only hashes are kept (config or a keys file); the key itself is printed once by `agentgw keys create`.
The keys file is re-read when it changes: a key created while the gateway runs works without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from agentgw.configfile import ConfigError, Problem, validation_problems
from agentgw.exchange import Principal
from agentgw.names import clash
from agentgw.settings import ApiKey, Settings, _load_keys_file

KEY_PREFIX = "agw-"

log = logging.getLogger("agentgw.keys")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint(digest: str) -> str:
    """A short, non-secret id for a key (the first 12 hex digits of its hash) for logs and audit."""
    return digest[:12]


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def append_key(
    path: Path, subject: str, roles: list[str], name: str | None = None, taken: frozenset[str] = frozenset()
) -> str:
    """Create a key, store its hash in `path` (a YAML list, written 0600), return the key.

    Raises ConfigError when the existing file is not a valid keys file or the entry would not be valid, including
    a subject named like a role (`taken`, the roles of the file's keys, or the key's own)."""
    key = generate_key()
    problems: list[Problem] = []
    entries: list[object] = []
    in_use = set(taken) | set(roles)
    if path.exists():
        existing = _load_keys_file(path, problems)  # refuse to add to a file the gateway cannot read
        in_use.update(r for k in existing for r in k.roles)
        if not problems:
            entries = list(yaml.safe_load(path.read_text()) or [])
    entry: dict[str, object] = {"subject": subject, "roles": roles, "sha256": hash_key(key)}
    if name:
        entry["name"] = name
    entry["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        ApiKey.model_validate(entry)
    except ValidationError as err:
        problems.extend(validation_problems(str(path), err, (len(entries),)))
    why = clash(subject, in_use)
    if why and not problems:
        problems.append(Problem(str(path), f"[{len(entries)}].subject", why))
    if problems:
        raise ConfigError(problems)
    entries.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(entries, fh, sort_keys=False)
    os.replace(tmp, path)
    return key


def name_clashes(settings: Settings, roles: set[str]) -> list[Problem]:
    """Keys whose subject is also a role name (`roles`: those of the policy, plus every key's and the admin and
    metrics roles): refused by `check-config` and `serve`, as `keys create` refuses to write them."""
    in_use = roles | {r for k in settings.all_keys for r in k.roles}
    in_use.update(settings.auth.admin_roles, settings.metrics.roles)
    sources = [(str(settings.path), "auth.api_keys", list(settings.auth.api_keys))]
    file_keys = _load_keys_file(settings.keys_path(), [])
    sources.append((str(settings.keys_path()), "", file_keys))
    problems = []
    for file, prefix, keys in sources:
        for i, k in enumerate(keys):
            why = clash(k.subject, in_use)
            if why:
                problems.append(Problem(file, f"{prefix}[{i}].subject", why))
    return problems


class KeyStore:
    """hash → (principal, loopback_only); a lookup is one dict hit.

    The keys file is re-read when it changes (size, mtime or inode): checked on every unknown key, so a key
    created while the gateway runs works at once, and at most every `check_interval_s` otherwise, so a key
    removed from the file stops working within that interval. A broken file keeps the last good table.
    """

    def __init__(self, settings: Settings, *, check_interval_s: float = 1.0) -> None:
        self._static = list(settings.auth.api_keys)
        self._file = settings.keys_path()
        self._interval = check_interval_s
        self._checked = time.monotonic()
        self._table: dict[str, tuple[Principal, bool]] = {}
        self._build(list(settings.all_keys))
        try:
            self._sig = self._signature()
        except OSError:
            self._sig = None

    def _build(self, keys: list[ApiKey]) -> None:
        table: dict[str, tuple[Principal, bool]] = {}
        for k in keys:
            if k.sha256 in table:
                continue  # the first definition wins (check-config reports the duplicate)
            principal = Principal(k.subject, tuple(k.roles), "api_key", fingerprint(k.sha256))
            table[k.sha256] = (principal, k.loopback_only)
        self._table = table

    def _signature(self) -> tuple[int, int, int] | None:
        """Changes whenever the file is rewritten (`append_key` replaces it, so the inode changes too)."""
        try:
            st = os.stat(self._file)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _maybe_reload(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self._interval:
            return
        self._checked = now
        try:
            sig = self._signature()
        except OSError:
            return
        if sig == self._sig:
            return
        self._sig = sig
        keys: list[ApiKey] = []
        if sig is not None:
            problems: list[Problem] = []
            keys = _load_keys_file(self._file, problems)
            if problems:
                log.warning("keys file not reloaded, keeping the previous keys: %s", problems[0])
                return
        self._build(self._static + keys)
        log.info("keys file reloaded: %d keys", len(self._table))

    def lookup(self, key: str) -> tuple[Principal, bool] | None:
        digest = hash_key(key)
        self._maybe_reload(force=False)
        hit = self._table.get(digest)
        if hit is None:
            self._maybe_reload(force=True)
            hit = self._table.get(digest)
        return hit
