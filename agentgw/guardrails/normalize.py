"""Text folding for pattern guards: compatibility and case folding, invisible characters dropped, look-alike
letters mapped to ASCII, plus the leetspeak and spelled-out folds for deny words, each keeping a map from the
folded text back to offsets in the original."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]

__all__ = ["Normalized", "fold_evasions", "leet_skeleton", "normalize"]


@dataclass(frozen=True, slots=True, eq=False)
class Normalized:
    """A folded text for matching only (never shown, never forwarded) and the way back: `span(s, e)` is the
    span of the original text that `text[s:e]` came from, widened over any invisible characters inside it."""

    text: str
    _starts: list[int] | None  # original start of each folded character; None when folding kept every offset
    _ends: list[int] | None
    _length: int

    def span(self, start: int, end: int) -> tuple[int, int]:
        if self._starts is None or self._ends is None:
            return start, end
        if start >= end:
            pos = self._starts[start] if start < len(self._starts) else self._length
            return pos, pos
        return self._starts[start], self._ends[end - 1]


# Look-alikes NFKC leaves alone (it already folds fullwidth, mathematical, circled and small-capital-free
# compatibility forms). Applied before case folding where the capital and the small letter look like different
# ASCII letters (Greek Η is H, η is n). A short table of the letters seen in real mixed-script evasion, in the
# spirit of the UTS #39 confusables list, not the whole of it: the full list also maps many letters onto each
# other within one script, which would make legitimate Cyrillic or Greek text collide with English words.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic capitals, then small letters
        "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t",
        "У": "y", "Х": "x", "Ѕ": "s", "І": "i", "Ј": "j", "Ԁ": "d", "Ү": "y", "Ԛ": "q", "Ԝ": "w", "Һ": "h",
        "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
        "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y", "ɡ": "g", "ѡ": "w",
        # Greek capitals, then small letters
        "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n", "Ο": "o",
        "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
        "α": "a", "ο": "o", "ν": "v", "ι": "i", "κ": "k", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ε": "e",
        "η": "n", "μ": "u", "ω": "w", "γ": "y", "ϲ": "c", "ϳ": "j",
        # Armenian
        "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n", "զ": "q",
        # Latin letters outside ASCII that read as ASCII ones
        "ı": "i", "ȷ": "j", "ɑ": "a", "ɩ": "i", "ɪ": "i", "ʟ": "l", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d",
        "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ᴊ": "j", "ᴋ": "k", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r",
        "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "ł": "l", "ø": "o", "đ": "d",
        "ħ": "h", "ŧ": "t", "ƀ": "b", "ƒ": "f",
        # typographic quotes and dashes, so "don’t" and "ci–dessus" meet patterns written with ' and -
        "‘": "'", "’": "'", "ʼ": "'", "′": "'", "“": '"', "”": '"', "″": '"',
        "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-",
    }
)  # fmt: skip

# Combining marks folded away as accents: Latin/Greek/Cyrillic diacritics and the blocks Zalgo text is built
# from. Other scripts' marks (Devanagari vowel signs, kana voicing) carry meaning and stay.
_DIACRITICS = re.compile("[\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
# Invisible characters with no category Cf of their own: variation selectors, fillers, Khmer inherent vowels.
_INVISIBLE_OTHER = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef\u115f\u1160\u3164\uffa0\u17b4\u17b5]")

_CACHE_LIMIT = 1 << 16
_folded: dict[str, str] = {}


def _strip(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    s = _DIACRITICS.sub("", s)
    s = _INVISIBLE_OTHER.sub("", s)
    return "".join(ch for ch in s if unicodedata.category(ch) != "Cf")


def _fold(cluster: str) -> str:
    got = _folded.get(cluster)
    if got is not None:
        return got
    s = unicodedata.normalize("NFKC", _strip(cluster)).translate(_CONFUSABLES)
    # Case folding can produce decomposed forms and new look-alikes (capitals absent from the table), so the
    # accent strip and the table run once more on its result.
    s = unicodedata.normalize("NFKC", _strip(s.casefold())).translate(_CONFUSABLES)
    if len(_folded) < _CACHE_LIMIT:  # bounded: a text using every code point must not grow it without limit
        _folded[cluster] = s
    return s


def _attached(ch: str) -> bool:
    # Combining marks, and Hangul medial/final jamo (combining class 0, yet composed with what precedes them).
    return unicodedata.combining(ch) != 0 or "\u1160" <= ch <= "\u11ff"


# Per character: its fold (the translate table) and its class. Most characters fold alone to exactly one
# character (_ONE); some to none or several (_RESIZED: invisible ones, accents that follow their letter, "ß",
# ligatures); a few combining marks that must compose with the letter before them (kana voicing, Hangul jamo)
# send the whole text down the per-cluster path (_CLUSTER).
_ONE, _RESIZED, _CLUSTER = 0, 1, 2
_TABLE: dict[int, str] = {c: chr(c).lower() for c in range(ord("A"), ord("Z") + 1)}
_CLASS: dict[str, int] = {}


def _classify(ch: str) -> int:
    folded = _fold(ch)
    attached = _attached(ch)
    how = _CLUSTER if attached and folded else _RESIZED if len(folded) != 1 or attached else _ONE
    if len(_CLASS) < _CACHE_LIMIT:
        _CLASS[ch] = how
        _TABLE[ord(ch)] = folded
    return how


def normalize(text: str) -> Normalized:
    """The folded text of `text`: NFKC compatibility forms, case folding, Latin/Greek/Cyrillic accents and
    Zalgo marks removed, invisible and format characters (zero-width, soft hyphen, BOM, bidi controls, tag
    characters, variation selectors) removed, common Cyrillic/Greek/Armenian look-alikes mapped to ASCII.

    Each folded character maps back to one span of the original (an accent or mark removed after a letter
    widens that letter's span). Plain ASCII only lowercases and keeps every offset; other text folds with one
    str.translate and fixes up offsets only around the characters that changed length."""
    if text.isascii():
        return Normalized(text.lower(), None, None, len(text))
    resized: list[str] = []
    for ch in set(text):
        if ch < "\x80":
            continue
        how = _CLASS.get(ch)
        if how is None:
            how = _classify(ch)
            if ord(ch) not in _TABLE:  # the cache is full: fold this text the slow way
                how = _CLUSTER
        if how == _CLUSTER:
            return _by_cluster(text)
        if how == _RESIZED:
            resized.append(ch)
    folded = text.translate(_TABLE)
    if not resized:
        return Normalized(folded, None, None, len(text))
    positions: list[int] = []
    for ch in resized:
        i = text.find(ch)
        while i >= 0:
            positions.append(i)
            i = text.find(ch, i + 1)
    positions.sort()
    starts: list[int] = []
    ends: list[int] = []
    last = 0
    for i in positions:
        starts.extend(range(last, i))
        ends.extend(range(last + 1, i + 1))
        ch = text[i]
        piece = _TABLE[ord(ch)]
        if piece:
            starts.extend([i] * len(piece))
            ends.extend([i + 1] * len(piece))
        elif ends and ends[-1] == i and _attached(ch):
            ends[-1] = i + 1  # an accent dropped after a letter belongs to the letter's span
        last = i + 1
    starts.extend(range(last, len(text)))
    ends.extend(range(last + 1, len(text) + 1))
    return Normalized(folded, starts, ends, len(text))


def _by_cluster(text: str) -> Normalized:
    """The slow, exact path: each base character is folded together with the combining marks after it."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    n = len(text)
    while pos < n:
        end = pos + 1
        while end < n and _attached(text[end]):
            end += 1
        piece = _fold(text[pos:end])
        if piece:
            out.append(piece)
            starts.extend([pos] * len(piece))
            ends.extend([end] * len(piece))
        pos = end
    return Normalized("".join(out), starts, ends, n)


# Leetspeak. A token is a run of letters, digits, @ and $ (plus ! or | when another token character follows,
# so a closing "!" stays punctuation). Only tokens holding at least one letter AND one digit or symbol are
# folded: "w0rd", "b@d", "$ecret", "h4x0r" fold, while "2024", "10:30", "v1.2" numbers and plain words do not.
# Every fold is one character for one, so offsets are kept. "1" may stand for i or l, so the skeleton writes
# 1, !, | and l all as "i" and the deny words are folded the same way (UTS #39 skeleton style): "fa1con",
# "fal!con" and "faIcon" (capital I) all meet "falcon" as "faicon".
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "|": "i"})  # fmt: skip
# ASCII classes: look-alikes are ASCII by now, and Unicode classes multiply the RE2 automaton's size.
_TOK = r"(?:[a-z0-9@$]|[!|][a-z0-9@$])"
_LEETISH = r"(?:[0-9@$]|[!|][a-z0-9@$])"
_MIXED = rf"{_TOK}*(?:[a-z]{_TOK}*{_LEETISH}|{_LEETISH}{_TOK}*[a-z]){_TOK}*"
_MIXED_RE = re2.compile(_MIXED)
# Spelled-out words: three or more single characters split by the same separator ("b.a.d", "b a d",
# "f-o-r-b-i-d"). The RE2 form (no backreferences) only says whether any may be present; _SPELLED decides.
_SEP = r"[ \t.\-_*·•~+/\\,:;|]"
_L = r"[a-z0-9@$]"
_MAY_BE_SPELLED = re2.compile(rf"(?:^|[^a-z0-9@$]){_L}(?:{_SEP}{{1,3}}{_L}){{2,}}(?:[^a-z0-9@$]|$)")
_SPELLED = re.compile(r"(?<![^\W_])(?<![@$])(?:[^\W_]|[@$])(\s?[.\-_*·•~+/\\,:;|]\s?|[ \t])(?:(?:[^\W_]|[@$])\1)+(?:[^\W_]|[@$])(?![^\W_])(?![@$])")  # fmt: skip


def leet_skeleton(text: str) -> str:
    """`text` (already normalised) with mixed letter/digit tokens leet-folded and 1 ! | l written as i. Same
    length as `text`, so offsets carry over unchanged."""
    out: list[str] = []
    last = 0
    for start, end in spans(
        _MIXED_RE, text
    ):  # RE2 finds the mixed tokens; one Python sub over all text costs 10x
        out += (text[last:start], text[start:end].translate(_LEET))
        last = end
    if out:
        out.append(text[last:])
        text = "".join(out)
    return text.replace("l", "i")


def spans(pattern: Any, text: str) -> Iterator[tuple[int, int]]:
    """The spans of `pattern`'s matches in `text`. An ASCII text is matched as bytes: the RE2 binding then skips
    mapping byte offsets back to characters for every group of every match."""
    if text.isascii():
        for m in pattern.finditer(text.encode()):
            yield m.span()
    else:
        for m in pattern.finditer(text):
            yield m.span()


def _collapse(n: Normalized) -> Normalized:
    kept: list[tuple[int, int]] = []  # ranges of n.text kept, in order
    last = 0
    for m in _SPELLED.finditer(n.text):
        kept.append((last, m.start()))
        sep = len(m.group(1))
        kept.extend((i, i + 1) for i in range(m.start(), m.end(), sep + 1))
        last = m.end()
    if not kept:
        return n
    kept.append((last, len(n.text)))
    text = "".join(n.text[a:b] for a, b in kept)
    starts: list[int] = []
    ends: list[int] = []
    for a, b in kept:
        if n._starts is None or n._ends is None:
            starts.extend(range(a, b))
            ends.extend(range(a + 1, b + 1))
        else:
            starts.extend(n._starts[a:b])
            ends.extend(n._ends[a:b])
    return Normalized(text, starts, ends, n._length)


def fold_evasions(n: Normalized, *, leet: bool = True) -> Normalized | None:
    """The second-chance form of a normalised text, or None when it holds nothing to fold (the usual case,
    decided by RE2 scans): spelled-out words collapsed ("b . a . d" to "bad"), then, with `leet`, the
    leetspeak skeleton of `leet_skeleton`. Match it with patterns put through the same fold."""
    spelled = _MAY_BE_SPELLED.search(n.text) is not None
    if not spelled and (not leet or _MIXED_RE.search(n.text) is None):
        return None
    collapsed = _collapse(n) if spelled else n  # the exact (backtracking) scan only where RE2 saw a chance
    if not leet:
        return collapsed if collapsed is not n else None
    return Normalized(leet_skeleton(collapsed.text), collapsed._starts, collapsed._ends, collapsed._length)
