"""Credentials in free text: provider keys and tokens recognised by their documented shapes, PEM private keys,
GCP service-account JSON, password assignments, and (optionally) other high-entropy tokens."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping

import re2  # type: ignore[import-untyped]

from agentgw.guardrails.detectors.sensitive import (
    compile_custom,
    custom_hits,
    padded_windows,
    resolve_overlaps,
)
from agentgw.guardrails.findings import Finding

KINDS = (
    "aws_access_key",
    "aws_secret_key",
    "private_key",
    "jwt",
    "github_token",
    "openai_key",
    "anthropic_key",
    "slack_token",
    "stripe_key",
    "google_api_key",
    "gcp_service_account",
    "azure_storage_key",
    "password_assignment",
    "high_entropy",
)

# One RE2 pass (~2 µs/KB on clean text) finds the places worth a closer look: long tokens (every key shape and
# every entropy candidate is one), the words a password assignment starts with, and the literal markers of PEM
# blocks, service-account JSON and Azure connection strings. Everything after it is per candidate.
_PREFILTER = re2.compile(
    r"([A-Za-z0-9+/_-]{20,}|eyJ[A-Za-z0-9_-]{5,19}\.)|((?i:passw(?:or)?d|passphrase|pwd))|(PRIVATE KEY|service_account|AccountKey=)"
)
_TOKEN_SHAPES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    # (prefix, kind, full shape of the token); the first prefix that fits decides.
    # AWS's own documented example (AKIAI44QH8DHBEXAMPLE) has an 8: not strictly base32, so [A-Z0-9].
    ("AKIA", "aws_access_key", re.compile(r"AKIA[A-Z0-9]{16}")),
    ("ASIA", "aws_access_key", re.compile(r"ASIA[A-Z0-9]{16}")),
    ("github_pat_", "github_token", re.compile(r"github_pat_[A-Za-z0-9_]{22,255}")),
    ("gh", "github_token", re.compile(r"gh[pousr]_[A-Za-z0-9]{30,255}")),
    ("sk-ant-", "anthropic_key", re.compile(r"sk-ant-[A-Za-z0-9_-]{20,}")),
    ("sk-", "openai_key", re.compile(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("xox", "slack_token", re.compile(r"xox[baprs]-(?=[A-Za-z0-9-]*\d)[A-Za-z0-9-]{10,}")),
    ("sk_live_", "stripe_key", re.compile(r"sk_live_[A-Za-z0-9]{16,}")),
    ("rk_live_", "stripe_key", re.compile(r"rk_live_[A-Za-z0-9]{16,}")),
    ("AIza", "google_api_key", re.compile(r"AIza[0-9A-Za-z_-]{35}")),
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_PEM = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----")
_GCP = re.compile(r'"type"\s*:\s*"service_account"')
_AZURE = re.compile(r"AccountKey=([A-Za-z0-9+/]{40,}={0,2})")
_AWS_CONTEXT = re.compile(r"(?i)aws|amazon|secret_access_key")
# A key (DB_PASSWORD, "password", user.passwd) then : or =, then a quoted or bare value; the span is the value.
_PASSWORD = re.compile(
    r"""(?i)[A-Za-z0-9_.-]*(?:passw(?:or)?d|passphrase|pwd)[A-Za-z0-9_]*["']?[ \t]*[:=][ \t]*"""
    r"""(?:"([^"\n]{1,200})"|'([^'\n]{1,200})'|([^\s"',;&<>()]{1,200}))"""
)
_PLACEHOLDER = re.compile(
    r"(?i)(.)\1*|<.*>|\$.*|\{\{.*|%\(.*|\[.*\]|\*+.*|.*(?:your|example|placeholder|redacted|changeme|dummy).*"
    r"|none|null|nil|true|false|undefined|required|optional|string|str|password|passwd|secret|\.\.\.+"
)
# Bare values that are code, not secrets: a call, an index, an attribute path, a snake_case or ALL_CAPS name.
_CODE_VALUE = re.compile(
    r".*[(\[{].*|[A-Za-z_]\w*(?:\.\w+)+|[a-z]+(?:_[a-z0-9]+)+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*"
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]+")
# Object ids of the LLM and agent APIs agents talk to: random-looking by design, public by design.
_OBJECT_ID = re.compile(
    r"(?:chatcmpl|cmpl|msg|call|toolu|resp|run|step|file|asst|thread|batch|req|evt|task|tsk|ctx|span|trace)[-_]"
)
_HASH_CONTEXT = re.compile(
    r"(?i)(?:sha\d*|md5|h1|blake\w*|commit|digest|hash|checksum|integrity|revision|rev|sum|etag|@|;base64,)\W{0,4}$"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(?:bearer|basic)\s+$")
_SECRET_CONTEXT = re.compile(r"(?i)key|token|secret|passw|auth|bearer|credential|api")
_WORD_SEGMENT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_PATH_SEGMENT = re.compile(r"[A-Za-z][a-z]*\d*|[a-z0-9_.-]+|\d+|")


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _jwt_ok(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header


def _is_prose_base64(token: str) -> bool:
    """Base64 of ordinary text (it decodes to printable ASCII with spaces) is encoded prose, not a key. Basic-auth
    `user:password` has no space, so it still counts."""
    if len(token) % 4 or any(c in token for c in "_-"):
        return False
    try:
        raw = base64.b64decode(token, validate=True)
    except (ValueError, binascii.Error):
        return False
    return b" " in raw and all(32 <= b < 127 or b in (9, 10, 13) for b in raw)


def _high_entropy(text: str, start: int, end: int, padded: int) -> bool:
    token = text[start:end]
    before = text[max(0, start - 40) : start]
    if len(token) < 20 or _UUID.fullmatch(token):
        return False
    if _AUTH_SCHEME.search(before):
        return True  # `Authorization: Bearer …` / `Basic …`: a credential whatever its entropy
    if _OBJECT_ID.match(token):
        return False  # an id an API handed out (chatcmpl-…, msg_…, call_…): agents pass them around
    if _HASH_CONTEXT.search(before):  # sha512-…, "sha256": "…", commit 3f78…, h1:…: hashes and digests
        return False
    word_start = max(before.rfind(" "), before.rfind("\n"), before.rfind("\t"), before.rfind('"'))
    if "://" in before[word_start + 1 :] and not before.endswith("="):
        return False  # part of a URL's host or path; a query value (…?sig=…) is still looked at
    if before.endswith(("/", "~", ".", "\\")) or token.startswith("/"):
        return False  # a file path
    if _HEX.fullmatch(token):
        # Hex of 32+ is far more often a hash (git SHA, checksum, trace id) than a key, so it needs a secret word
        # (key, token, secret, auth…) just before it, and 3.0 bits/char.
        return len(token) >= 32 and _entropy(token) >= 3.0 and _SECRET_CONTEXT.search(before) is not None
    if not (
        any(c.isdigit() for c in token)
        and any(c.isupper() for c in token)
        and any(c.islower() for c in token)
    ):
        return False  # slugs, snake_case, ALL_CAPS, plain words: a random base64 token of 20+ has all three
    if "/" in token and all(_PATH_SEGMENT.fullmatch(seg) for seg in token.split("/")):
        return False  # src/components/UserCard2: every segment a word
    words = _WORD_SEGMENT.findall(token)
    if words and len(token) / len(words) >= 4.5:
        return False  # camelCase identifiers split into long words; random text splits into 2-3 char pieces
    # Random base64 of n characters rarely scores below ~0.84·log2(n) (the 1st percentile for n = 20..40);
    # capped at 4.5 so long tokens are not held to a bound even random ones miss.
    if _entropy(token) < min(0.84 * math.log2(len(token)), 4.5):
        return False
    return not _is_prose_base64(text[start:padded])


def _json_object_end(text: str, start: int) -> int:
    """Index just past the `}` closing the object opened at text[start], strings respected; len(text) if the
    text ends first (a truncated paste still gets masked to its end)."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


class Secrets:
    """Detector for credential kinds (all by default). `entropy=False` turns `high_entropy` off even when listed
    in `kinds`; `patterns` adds custom `name -> regex` kinds (RE2 syntax)."""

    def __init__(
        self,
        kinds: Iterable[str] | None = None,
        entropy: bool = True,
        patterns: Mapping[str, str] | None = None,
    ) -> None:
        chosen = set(KINDS) if kinds is None else set(kinds)
        unknown = sorted(chosen - set(KINDS))
        if unknown:
            raise ValueError(f"unknown secret kinds {unknown}; valid ones are {', '.join(KINDS)}")
        if not entropy:
            chosen.discard("high_entropy")
        self.kinds = frozenset(chosen)
        self._custom = compile_custom(patterns)

    def find(self, text: str) -> list[Finding]:
        hits: list[tuple[int, int, int, str, float]] = []
        keywords: list[tuple[int, int]] = []
        markers = False
        for m in _PREFILTER.finditer(text):
            if m.group(1) is not None:
                self._token(text, m.start(), m.end(), hits)
            elif m.group(2) is not None:
                keywords.append(m.span())
            else:
                markers = True
        if keywords and "password_assignment" in self.kinds:
            self._passwords(text, keywords, hits)
        if markers:
            self._blocks(text, hits)
        hits.extend(custom_hits(self._custom, text))
        return resolve_overlaps(hits)

    def _token(self, text: str, start: int, end: int, hits: list[tuple[int, int, int, str, float]]) -> None:
        if text[end - 1] == ".":  # a short JWT header (`{"alg":"none"}`) the prefilter caught by its dot
            end -= 1
        token = text[start:end]
        if token.startswith("eyJ") and "jwt" in self.kinds:
            m = _JWT.match(text, start)
            if m and _jwt_ok(m.group()):
                hits.append((start, m.end(), 0, "jwt", 1.0))
                return
        # The prefilter's tokens are maximal runs, so a prefix inside a longer word (XAKIA…, task-…) never leads.
        for prefix, kind, shape in _TOKEN_SHAPES:
            if token.startswith(prefix):
                if (
                    shape.fullmatch(token)
                    and kind in self.kinds
                    and (kind != "openai_key" or _mixed(token[3:]))
                ):
                    hits.append((start, end, 0, kind, 1.0))
                    return
                break
        if (
            "aws_secret_key" in self.kinds
            and len(token) == 40
            and "_" not in token
            and "-" not in token
            and _AWS_CONTEXT.search(text, max(0, start - 100), start)
            and _mixed(token)
        ):
            hits.append((start, end, 0, "aws_secret_key", 1.0))
            return
        if "high_entropy" in self.kinds:
            while end < len(text) and text[end] == "=" and end - start < len(token) + 2:
                end += 1  # base64 padding belongs to the token
            if _high_entropy(text, start, start + len(token), end):
                hits.append((start, end, 9, "high_entropy", 0.7))

    def _passwords(
        self, text: str, keywords: list[tuple[int, int]], hits: list[tuple[int, int, int, str, float]]
    ) -> None:
        for a, b in padded_windows(text, keywords, 64, 230):
            for m in _PASSWORD.finditer(text, a, b):
                group = 1 if m.group(1) is not None else 2 if m.group(2) is not None else 3
                value = m.group(group)
                if group == 3:  # a bare value ends a sentence or a key: "password: hunter2." / "pwd=x:"
                    value = value.rstrip(".:")
                if _password_ok(value, quoted=group != 3):
                    start = m.start(group)
                    hits.append((start, start + len(value), 1, "password_assignment", 0.9))

    def _blocks(self, text: str, hits: list[tuple[int, int, int, str, float]]) -> None:
        if "private_key" in self.kinds and "PRIVATE KEY" in text:
            for m in _PEM.finditer(text):
                end_marker = f"-----END {m.group(1)}-----"
                stop = text.find(end_marker, m.end())
                if stop >= 0:
                    end = stop + len(end_marker)
                else:  # only the header: mask to the end of its line
                    end = text.find("\n", m.end())
                    end = len(text) if end < 0 else end
                hits.append((m.start(), end, 0, "private_key", 1.0))
        if "gcp_service_account" in self.kinds and "service_account" in text:
            for m in _GCP.finditer(text):
                opening = text.rfind("{", 0, m.start())
                if opening < 0:
                    continue
                close = _json_object_end(text, opening)
                if '"private_key"' in text[opening:close]:
                    hits.append((opening, close, 0, "gcp_service_account", 1.0))
        if "azure_storage_key" in self.kinds and "AccountKey=" in text:
            hits.extend((m.start(1), m.end(1), 0, "azure_storage_key", 1.0) for m in _AZURE.finditer(text))


def _mixed(s: str) -> bool:
    """Digits and both cases: what a generated key has and a kebab-case slug or a word does not."""
    return any(c.isdigit() for c in s) and any(c.isupper() for c in s) and any(c.islower() for c in s)


def _password_ok(value: str, quoted: bool) -> bool:
    value = value.strip()
    if len(value) < 6 or _PLACEHOLDER.fullmatch(value):
        return False
    if not quoted and (_CODE_VALUE.fullmatch(value) or value.startswith(("http://", "https://"))):
        return False
    # A real password has a digit, a symbol, or a capital after the first letter, or is long (a passphrase):
    # "Password: required" and "password: see below" are prose.
    return (
        any(c.isdigit() or not c.isalnum() for c in value)
        or any(c.isupper() for c in value[1:])
        or len(value) >= 16
    )
