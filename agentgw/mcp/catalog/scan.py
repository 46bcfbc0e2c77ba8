"""Injection markers in MCP tool definitions: text in a tool's description, title, annotations or schemas that
speaks to the model rather than describing the tool (tool poisoning), and characters a reviewer cannot see.
Pure functions; the answer is a list of findings (what and where), never a score.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Which parts of a tool definition reach the model (and so can carry instructions to it).
SCANNED = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
_EXCERPT = 60

# Characters a reviewer does not see but a model reads: zero-width, bidirectional controls (they reorder what
# a reviewer sees), Unicode tag characters (invisible ASCII look-alikes, a known smuggling channel).
_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u00ad\u034f")
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(
        pattern
    )  # matched on lower-cased text: IGNORECASE makes every pattern several times slower


_W = r"[\s\W_]{1,6}"  # words apart: spaces, punctuation, underscores (no more than a few)
# (kind, words one of which any match contains, pattern): instructions addressed to the model. Matched on text
# with invisible characters removed, compatibility-normalised and lower-cased, whitespace collapsed, so splitting
# a phrase with zero-width spaces or writing it in full-width letters does not hide it. The words are a cheap
# pre-check (most definitions contain none of them), the pattern decides.
_MARKERS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    (
        "override_instructions",
        ("ignore", "disregard", "forget", "override", "bypass"),
        _rx(
            rf"\b(ignore|disregard|forget|override|bypass)(?:{_W}(all|any|the|your|previous|prior|earlier|above"
            rf"|preceding|former|other|existing|system))*{_W}(instructions?|prompts?|rules|directions|guidelines"
            rf"|context|messages|constraints)\b"
        ),
    ),
    (
        "conceal_from_user",
        ("user", "human", "operator"),
        _rx(
            r"\b(do\s*n[o']?t|never|without)\s+(tell|telling|inform|informing|notify|notifying|mention|mentioning"
            r"|reveal|revealing|show|showing|alert|alerting|let)\b.{0,30}\b(the\s+)?(user|human|operator)\b"
            r"|\b(keep|hide)\b.{0,20}\b(secret|hidden|confidential)\b.{0,20}\b(from\s+the\s+)?(user|human)\b"
            r"|\b(the\s+)?user\s+(must|should)\s+(not|never)\s+(know|see|be\s+told)\b"
        ),
    ),
    (
        "prompt_tag",
        ("<", "[", "#"),
        _rx(
            r"<\s*/?\s*(important|system|instructions?|secret|hidden|admin|critical|prompt|assistant)\s*>"
            r"|\[/?(inst|system)\]|<\|\s*(im_start|im_end|system|endoftext)\s*\|>|^\s*#{1,6}\s*system\b"
        ),
    ),
    (
        "new_instructions",
        ("instruction", "you are now", "from now on", "system prompt", "using", "calling", "running"),
        _rx(
            r"\b(new|updated|real|actual|additional)\s+(system\s+)?instructions?\s*:"
            r"|\byou\s+are\s+now\b|\bfrom\s+now\s+on\b|\bsystem\s+prompt\b"
            r"|\b(before|after|instead\s+of)\s+(using|calling|running)\s+(this|any|the)\b.{0,40}"
            r"\b(you\s+must|always|first|read|call|send|pass)\b"
        ),
    ),
    (
        "sensitive_data",
        ("~/.", "id_", "mcp.json", "/etc/", ".env", "credential", "key", "password", "secret"),
        _rx(
            r"~/\.(ssh|aws|cursor|config|gnupg|kube|docker)\b|\bid_(rsa|ed25519|ecdsa)\b|\bmcp\.json\b"
            r"|/etc/(passwd|shadow)\b|\.env\b|\bcredentials?\s+file\b"
            r"|\b(read|send|include|pass|leak|print|output|exfiltrate)\b.{0,40}\b(api[\s_-]?keys?|passwords?"
            r"|private\s+keys?|secrets?|credentials)\b"
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One marker: its kind, where in the definition (`description`, `inputSchema.properties.q.description`),
    and a short excerpt around it (invisible characters shown as `<U+200B>`)."""

    kind: str
    where: str
    excerpt: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "excerpt": self.excerpt}


def scan_tool(tool: dict[str, Any]) -> list[Finding]:
    """The injection markers in one tool definition (its SCANNED fields, every string in them, keys included).
    The phrases are looked for in all strings at once; only a hit is traced back to the strings it is in."""
    strings = [pair for field in SCANNED if field in tool for pair in _strings(tool[field], field)]
    out: list[Finding] = []
    for where, text in strings:
        for kind, chars in _invisible(text).items():
            out.append(Finding(kind, where, _shown(text, text.index(chars[0]))))
    flat = [_flatten(text) for _, text in strings]
    everything = "\n".join(flat).lower()
    for kind, words, pattern in _MARKERS:
        if not any(w in everything for w in words) or pattern.search(everything) is None:
            continue
        for (where, _), text in zip(strings, flat, strict=True):
            m = pattern.search(text.lower())
            if m is not None:
                out.append(Finding(kind, where, _shown(text, m.start())))
    return out


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}"
            if isinstance(key, str):
                yield f"{path} (key)", key
            yield from _strings(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


def _invisible(text: str) -> dict[str, list[str]]:
    if text.isascii():
        return {}
    out: dict[str, list[str]] = {}
    for ch in text:
        if ch in _BIDI:
            out.setdefault("bidi_unicode", []).append(ch)
        elif _unseen(ch):
            out.setdefault("invisible_unicode", []).append(ch)
    return out


def _unseen(ch: str) -> bool:
    if ch in _ZERO_WIDTH or 0xE0000 <= ord(ch) <= 0xE007F:
        return True
    cat = unicodedata.category(ch)
    return cat in ("Cf", "Co") or (cat == "Cc" and ch not in "\n\r\t")


def _flatten(text: str) -> str:
    """The text as a model reads it: compatibility-normalised (full-width letters are letters), invisible
    characters dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cf", "Co", "Mn"))
    return " ".join(text.split())


def _shown(text: str, at: int) -> str:
    start = max(0, at - 10)
    piece = text[start : start + _EXCERPT]
    return "".join(
        ch if ch.isprintable() and ch not in _ZERO_WIDTH and ch not in _BIDI else f"<U+{ord(ch):04X}>"
        for ch in piece
    )
