"""Personal data in free text: e-mail addresses, phone numbers, payment cards, IBANs, US SSNs, UK National
Insurance numbers and IP addresses, each found by a precompiled regex and confirmed by its checksum or validator,
plus operator-defined patterns. Also the overlap rule and custom-pattern compiler the secrets detector shares."""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import phonenumbers
import re2  # type: ignore[import-untyped]
from stdnum import iban as _iban
from stdnum import luhn as _luhn

from agentgw.guardrails.findings import Finding

KINDS = ("email", "phone", "card", "iban", "ssn", "nino", "ip")

# ASCII-only local part and domain: with Unicode \w an address glued to CJK text ("連絡先はtaro@example.jpです")
# would swallow the neighbouring words. A dot in the domain is required, so `user@host` (ssh, git, docker) is
# not an address. The TLD is letters only, so `lodash@4.17.21` is not one either.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
# `icon@2x.png` and friends: asset names, not mailboxes.
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "ts", "css", "py", "json"})

# Runs of digit groups separated by one space or dash; the windows inside a run are tried by _windows, so
# "ref 12 4111 1111 1111 1111" still finds the card that starts at the second group.
_CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,40}(?!\d)", re.ASCII)
# Issuer lengths by first two digits: Visa 4x (13/16/19), Mastercard 51-55 and 22-27 (16), Amex 34/37 (15),
# Diners 30/36/38/39 and JCB 35 (14-19), Discover/UnionPay/Maestro 5x/6x (12-19).
_CARD_LENGTHS: dict[str, frozenset[int]] = {
    **{f"4{d}": frozenset({13, 16, 19}) for d in range(10)},
    **{str(p): frozenset({16}) for p in (*range(22, 28), *range(51, 56))},
    **{p: frozenset({15}) for p in ("34", "37")},
    **{p: frozenset(range(14, 20)) for p in ("30", "35", "36", "38", "39")},
    **{str(p): frozenset(range(13, 20)) for p in (50, *range(56, 70))},
}
_SSN = re.compile(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-])")
# HMRC: first letter not D F I Q U V, second not D F I O Q U V; suffix A-D. Banned pairs checked below.
_NINO = re.compile(
    r"(?<![A-Za-z0-9])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?(\d{2}) ?(\d{2}) ?(\d{2}) ?([A-D])(?![A-Za-z0-9])"
)
_NINO_BANNED = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
# Country code, check digits, then 11-30 alphanumerics in groups; _windows trims trailing groups until the
# checksum holds, so a following upper-case word does not spoil the match.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)", re.ASCII)
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|:(?=:))(?:[0-9A-Fa-f]{0,4}:){1,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?![\w:])",
    re.ASCII,
)
# Phone candidates: an optional + or (, then digits with single separators (space, dot, dash, slash, parens).
# re.ASCII: \w must not include CJK or Arabic letters, which sit right against numbers ("電話番号は03-…です").
_PHONE = re.compile(r"(?<![\w+./-])(?:\+|\()?\d(?:[ .\-/]?\(?\d\)?){5,20}(?![\w]|[.-]\d)", re.ASCII)
_DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4}")
_NANP = re.compile(r"\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}")
# National numbers (no +) are tried against these regions: trunk-0 numbers in Europe and Japan, NANP in the US.
_TRUNK_REGIONS = ("GB", "DE", "FR", "IT", "NL", "BE", "CH", "AT", "JP", "AU")
_SEP = re.compile(r"[ .\-/]")
# One RE2 pass finds where a closer look is worth it: 6+ digit-ish characters in a row (every digit-based kind
# has such a core) or two colons among hex (IPv6). RE2 scans clean text at ~2 µs/KB where each `re` pattern with
# a lookbehind costs 10-50 µs/KB, so the precise `re` patterns only run on small windows around these cores.
_PREFILTER = re2.compile(r"(\d[\d .()/+-]{4,}\d)|([0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f:.]*)")
_MAX_WINDOWS = 24
_VALUE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-./()@_%:")


def resolve_overlaps(found: Iterable[tuple[int, int, int, str, float]]) -> list[Finding]:
    """(start, end, priority, kind, score) candidates to non-overlapping Findings in order: the longest span wins,
    ties go to the lower priority number (the more specific kind), so a generic pattern never hides a checksum."""
    kept_starts: list[int] = []
    kept: list[tuple[int, int, str, float]] = []
    for start, end, _prio, kind, score in sorted(found, key=lambda f: (f[0] - f[1], f[2], f[0])):
        i = bisect.bisect_left(kept_starts, start)
        if i > 0 and kept[i - 1][1] > start:
            continue
        if i < len(kept) and kept[i][0] < end:
            continue
        kept_starts.insert(i, start)
        kept.insert(i, (start, end, kind, score))
    return [Finding(kind, s, e, score) for s, e, kind, score in kept]


def compile_custom(patterns: Mapping[str, str] | None) -> list[tuple[str, Any]]:
    """Operator patterns compiled with RE2: they come from config, and RE2 keeps matching linear in the text
    whatever the pattern, so a careless regex cannot stall the gateway's hot path."""
    compiled: list[tuple[str, Any]] = []
    for name, pattern in (patterns or {}).items():
        if not name or not name.strip():
            raise ValueError("custom pattern needs a non-empty name")
        try:
            compiled.append((name, re2.compile(pattern)))
        except re2.error as exc:
            raise ValueError(f"custom pattern {name!r}: bad regex: {exc}") from None
    return compiled


def custom_hits(compiled: list[tuple[str, Any]], text: str) -> Iterator[tuple[int, int, int, str, float]]:
    for name, regex in compiled:
        for m in regex.finditer(text):
            if m.end() > m.start():  # an empty match masks nothing
                yield m.start(), m.end(), 50, name, 1.0


def padded_windows(
    text: str, spans: Iterable[tuple[int, int]], before: int, after: int
) -> list[tuple[int, int]]:
    """Merged (pos, endpos) windows around candidate cores, for `pattern.finditer(text, pos, endpos)`. A
    lookbehind still sees the text before pos, but endpos ends the string for a lookahead, so each window's end
    is pushed past the first character that no value contains: a lookahead at a value's end then sees the real
    next character. The pads exceed the longest value's reach beyond its core, so no value is cut short."""
    merged: list[tuple[int, int]] = []
    n = len(text)
    for s, e in sorted(spans):
        a, b = max(0, s - before), min(n, e + after)
        while b < n and text[b - 1] in _VALUE_CHARS:
            b += 1
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _windows(
    text: str, start: int, end: int, lo: int, hi: int, count: Callable[[str], int], anchored: bool = False
) -> list[tuple[int, int]]:
    """Sub-spans of text[start:end] that begin and end on separator boundaries, longest first, whose `count`
    (digits, alphanumerics) lies in [lo, hi]: a run of groups may hold the value plus a neighbour. At most
    _MAX_WINDOWS, so a page of spaced single digits stays linear."""
    seps = list(_SEP.finditer(text, start, end))
    starts = [start] + [m.end() for m in seps]
    ends = [m.start() for m in seps] + [end]
    # cum[i]: count in text[start:starts[i]]; a window starts[i]..ends[j] (j >= i) holds cum[j+1]-cum[i] units.
    cum = [0]
    for a, b in zip(starts, ends, strict=True):
        cum.append(cum[-1] + count(text[a:b]))
    spans: list[tuple[int, int]] = []
    for i in range(1 if anchored else len(starts)):
        spans.extend((starts[i], ends[j]) for j in range(i, len(ends)) if lo <= cum[j + 1] - cum[i] <= hi)
    spans.sort(key=lambda s: s[0] - s[1])
    return spans[:_MAX_WINDOWS]


def _digits(s: str) -> int:
    return sum(map(str.isdigit, s))


def _alnum(s: str) -> int:
    return sum(map(str.isalnum, s))


def _card_ok(value: str) -> bool:
    digits = value.replace(" ", "").replace("-", "")
    # One random number in ten passes Luhn, so the issuer prefix must also fit the length: an order number, a
    # millisecond timestamp (1…) or the tail of an IBAN rarely does.
    lengths = _CARD_LENGTHS.get(digits[:2])
    return lengths is not None and len(digits) in lengths and _luhn.is_valid(digits)


def _ssn_ok(m: re.Match[str]) -> bool:
    area, group, serial = m.group(1), m.group(3), m.group(4)
    return not (area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000")


def _ip_ok(value: str) -> bool:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return False
    # Loopback, 0.0.0.0, multicast and reserved (netmasks like 255.255.255.0, broadcast) identify nobody.
    return not (addr.is_loopback or addr.is_unspecified or addr.is_multicast or addr.is_reserved)


# The validators are pure, and a chat request carries the whole conversation again each turn: the values of one
# turn come back in every later one. A bounded cache of verdicts (per process; strings only, never written out)
# makes those repeats cost a lookup instead of libphonenumber's and the IBAN registry's ~40 µs each.
_VERDICTS = 4096


@functools.lru_cache(maxsize=_VERDICTS)
def _iban_ok(value: str) -> bool:
    return bool(_iban.is_valid(value))


@functools.lru_cache(maxsize=_VERDICTS)
def _phone_ok(value: str) -> bool:
    if _DATE.fullmatch(value):
        return False
    if value.startswith("+"):
        region: tuple[str | None, ...] = (None,)
    elif value.startswith("0"):
        region = _TRUNK_REGIONS
    elif _NANP.fullmatch(value):
        region = ("US",)
    else:
        return False
    # Bare digits with no + and no separators are far more often order numbers or ids than phones.
    if not value.startswith("+") and not _SEP.search(value) and "(" not in value:
        return False
    for r in region:
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(value, r)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


class SensitiveData:
    """Detector for the built-in personal-data kinds (all by default) plus custom `name -> regex` patterns."""

    def __init__(
        self, entities: Iterable[str] | None = None, patterns: Mapping[str, str] | None = None
    ) -> None:
        chosen = set(KINDS) if entities is None else set(entities)
        unknown = sorted(chosen - set(KINDS))
        if unknown:
            raise ValueError(f"unknown sensitive-data entities {unknown}; valid ones are {', '.join(KINDS)}")
        self.entities = frozenset(chosen)
        self._custom = compile_custom(patterns)

    def find(self, text: str) -> list[Finding]:
        hits: list[tuple[int, int, int, str, float]] = []
        want = self.entities
        if "email" in want and "@" in text:
            ats = []
            at = text.find("@")
            while at >= 0:
                ats.append((at, at + 1))
                at = text.find("@", at + 1)
            for a, b in padded_windows(text, ats, 70, 256):
                for m in _EMAIL.finditer(text, a, b):
                    if m.group().rsplit(".", 1)[1].lower() not in _FILE_TLDS:
                        hits.append((m.start(), m.end(), 1, "email", 1.0))
        digit_spans: list[tuple[int, int]] = []
        colon_spans: list[tuple[int, int]] = []
        for m in _PREFILTER.finditer(text):
            (digit_spans if m.group(1) is not None else colon_spans).append(m.span())
        if digit_spans:
            for a, b in padded_windows(text, digit_spans, 48, 48):
                self._numbers(text, a, b, want, hits)
        if "ip" in want and colon_spans:
            for a, b in padded_windows(text, colon_spans, 48, 48):
                for m in _IPV6.finditer(text, a, b):
                    value = m.group()
                    # `a::b`, `x[1::2]`: slices and scope operators parse as IPv6; real addresses carry more hex.
                    if sum(c not in ":." for c in value) >= 4 and _ip_ok(value):
                        hits.append((m.start(), m.end(), 6, "ip", 1.0))
        hits.extend(custom_hits(self._custom, text))
        return resolve_overlaps(hits)

    def _numbers(
        self,
        text: str,
        pos: int,
        endpos: int,
        want: frozenset[str],
        hits: list[tuple[int, int, int, str, float]],
    ) -> None:
        if "card" in want:
            for m in _CARD.finditer(text, pos, endpos):
                for a, b in _windows(text, m.start(), m.end(), 13, 19, _digits):
                    if _card_ok(text[a:b]):
                        hits.append((a, b, 0, "card", 1.0))
                        break
        if "iban" in want:
            for m in _IBAN.finditer(text, pos, endpos):
                for a, b in _windows(text, m.start(), m.end(), 15, 34, _alnum, anchored=True):
                    if _iban_ok(text[a:b]):
                        hits.append((a, b, 0, "iban", 1.0))
                        break
        if "ssn" in want:
            hits.extend(
                (m.start(), m.end(), 2, "ssn", 1.0) for m in _SSN.finditer(text, pos, endpos) if _ssn_ok(m)
            )
        if "nino" in want:
            for m in _NINO.finditer(text, pos, endpos):
                if m.group(1) not in _NINO_BANNED:
                    hits.append((m.start(), m.end(), 2, "nino", 1.0))
        if "ip" in want:
            for m in _IPV4.finditer(text, pos, endpos):
                if _ip_ok(m.group()):
                    hits.append((m.start(), m.end(), 3, "ip", 1.0))
        if "phone" in want:
            # A run already confirmed by a checksum (card, IBAN, SSN, IP) is not also a phone: skipping those
            # saves the phone validator, the costliest step, most of its calls on text full of numbers.
            taken = [(h[0], h[1]) for h in hits if h[1] > pos and h[0] < endpos]
            for m in _PHONE.finditer(text, pos, endpos):
                if not any(a < m.end() and m.start() < b for a, b in taken):
                    self._phone(text, m, hits)

    @staticmethod
    def _phone(text: str, m: re.Match[str], hits: list[tuple[int, int, int, str, float]]) -> None:
        start, end = m.start(), m.end()
        value = m.group()
        if value.startswith("00") and not value.startswith("000"):  # 0049 … is +49 …
            value = "+" + value[2:]
        if 7 <= _digits(value) <= 15 and _phone_ok(value):
            hits.append((start, end, 4, "phone", 1.0))
            return
        # Too long or not valid whole: drop trailing groups (a year, a count) until a valid number remains.
        for a, b in _windows(text, start, end, 7, 15, _digits, anchored=True):
            if _phone_ok(text[a:b]):
                hits.append((a, b, 4, "phone", 1.0))
                return
