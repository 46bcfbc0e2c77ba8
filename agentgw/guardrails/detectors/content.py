"""Deny words and custom patterns: whole-word deny lists and named regexes matched on the folded text (so
look-alike letters, invisible characters, leetspeak and spelled-out words do not dodge them), reported as
spans of the original text."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

import re2  # type: ignore[import-untyped]

from agentgw.guardrails.findings import Finding
from agentgw.guardrails.normalize import Normalized, fold_evasions, leet_skeleton, normalize

# Between the words of a deny phrase: up to three non-alphanumerics, or none, so "project falcon",
# "Project-Falcon", "project_falcon", "project. falcon" and "ProjectFalcon" all meet "project falcon".
_GAP = r"[^\pL\pN]{0,3}"
_WORD = re.compile(r"[^\W_]+")
# Scripts written without spaces between words: an entry starting or ending in one of them matches inside a
# run of text, as there is no word edge to require.
_UNSPACED = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # fmt: skip
_OPTIONS = re2.Options()
_OPTIONS.max_mem = 64 << 20  # a 1,000-entry alternation with Unicode word edges outgrows RE2's 8 MiB default


def _entry_pattern(folded: str) -> tuple[str, bool] | None:
    """The RE2 source of one folded deny entry, and whether it needs word edges on both sides."""
    words = _WORD.findall(folded)
    if not words:
        stripped = folded.strip()
        return (re2.escape(stripped), False) if stripped else None
    edged = _UNSPACED.match(words[0][0]) is None and _UNSPACED.match(words[-1][-1]) is None
    return _GAP.join(re2.escape(w) for w in words), edged


def _compile(entries: Iterable[str]) -> re2._Regexp | None:
    edged: list[str] = []
    bare: list[str] = []
    for source, needs_edges in filter(None, map(_entry_pattern, entries)):
        (edged if needs_edges else bare).append(source)
    if not edged and not bare:
        return None
    # Longest first: leftmost-first alternation then prefers "bad word" over "bad" at the same place.
    edged.sort(key=len, reverse=True)
    bare.sort(key=len, reverse=True)
    # RE2 has no look-around, so a word edge is a consumed non-letter (or the text's end); group 1 or 2 is
    # the entry itself, and the scan restarts at its end so a neighbouring entry's edge is not lost.
    parts = []
    if edged:
        parts.append(rf"(?:^|[^\pL\pN])({'|'.join(edged)})(?:[^\pL\pN]|$)")
    if bare:
        parts.append(rf"({'|'.join(bare)})")
    return re2.compile("|".join(parts), _OPTIONS)


def _hits(pattern: re2._Regexp, text: str) -> Iterator[tuple[int, int]]:
    # Matched on UTF-8 bytes encoded once: a str search restarted at each hit would re-encode the whole text
    # per hit. Byte offsets become character offsets by decoding only the stretch since the previous hit.
    data = text.encode()
    same = len(data) == len(text)
    pos = done_bytes = done_chars = 0
    while True:
        m = pattern.search(data, pos)
        if m is None:
            return
        start, end = m.span(1 if m.start(1) >= 0 else 2)
        pos = end
        if same:
            yield start, end
            continue
        first = done_chars + len(data[done_bytes:start].decode())
        done_bytes, done_chars = end, first + len(data[start:end].decode())
        yield first, done_chars


class ContentRules:
    """Deny words and phrases, matched as whole words (an entry never matches inside a longer word: deny
    "forbidden" leaves "forbiddenly" alone; list inflected forms as entries of their own), and regexes, named
    or not, matched case-insensitively on the folded text (write them for lower-case, accent-free text).

    Entries and texts are folded alike: NFKC, case, accents, invisible characters and look-alike letters; with
    `leetspeak`, a second pass also meets "f0rb1dd3n", "B@D", "$ecret" and "fa1con"; spelled-out words
    ("b.a.d", "f o r b i d", "b-a-d") are collapsed on that pass either way. Regexes see the first fold only:
    leet-folding would turn the digits of an ID pattern into letters. Findings are `deny` or the regex's name
    (`regex` when unnamed), score 1, spans of the original text, overlaps merged."""

    def __init__(
        self,
        deny: Iterable[str] = (),
        regex: Mapping[str, str] | Iterable[str] = (),
        leetspeak: bool = True,
    ) -> None:
        folded = [normalize(entry).text for entry in deny]
        self._leetspeak = leetspeak
        self._deny = _compile(folded)
        self._deny_skeleton = _compile(leet_skeleton(f) for f in folded) if leetspeak else self._deny
        named = regex.items() if isinstance(regex, Mapping) else (("regex", r) for r in regex)
        self._regexes: list[tuple[str, re2._Regexp]] = []
        for name, source in named:
            try:
                # RE2: linear in the text whatever the pattern, so a configured regex cannot stall the gateway.
                self._regexes.append((name, re2.compile(f"(?i:{source})", _OPTIONS)))
            except re2.error as exc:
                raise ValueError(f"content rule {name!r}: bad regex {source!r}: {exc}") from None

    def find(self, text: str) -> list[Finding]:
        if not text:
            return []
        norm = normalize(text)
        spans: list[tuple[int, int, str]] = []
        if self._deny is not None:
            spans.extend(_mapped(norm, _hits(self._deny, norm.text), "deny"))
            evasive = fold_evasions(norm, leet=self._leetspeak)
            if evasive is not None and self._deny_skeleton is not None:
                spans.extend(_mapped(evasive, _hits(self._deny_skeleton, evasive.text), "deny"))
        for name, pattern in self._regexes:
            spans.extend(_mapped(norm, ((m.start(), m.end()) for m in pattern.finditer(norm.text)), name))
        return _merge(spans)


def _mapped(norm: Normalized, hits: Iterable[tuple[int, int]], kind: str) -> Iterator[tuple[int, int, str]]:
    for start, end in hits:
        if end > start:
            yield (*norm.span(start, end), kind)


def _merge(spans: list[tuple[int, int, str]]) -> list[Finding]:
    """Sorted, overlaps joined into one finding (the kind of the one that starts first, longest on a tie)."""
    out: list[Finding] = []
    for start, end, kind in sorted(spans, key=lambda s: (s[0], -s[1])):
        if out and start < out[-1].end:
            last = out[-1]
            if end > last.end:
                out[-1] = Finding(last.kind, last.start, end, last.score)
            continue
        out.append(Finding(kind, start, end))
    return out
