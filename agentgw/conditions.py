"""Policy conditions: the CEL expression a policy line may carry as its sixth column, compiled once per text and
evaluated over `args`, `principal`, `task` and `target`, with the helpers rules need and naive string tests get
wrong (`url`, `path`/`within`, `glob`, and `matches` with RE2 semantics as CEL specifies, its compiled pattern
cached). Any error is the caller's to fail closed on.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import sys
import types
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import idna
import re2  # type: ignore[import-untyped]

# The cel package's __init__ imports its command-line REPL (prompt_toolkit, rich, typer, pygments: ~110 ms and
# ~9 MiB at start) that a library caller never uses; an empty stand-in keeps it unloaded. The compiler itself
# (cel.cel, Rust) and cel.stdlib load as usual.
sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
import cel  # noqa: E402  (after the stand-in above)

VARIABLES = frozenset({"args", "principal", "task", "target"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}


class ConditionError(ValueError):
    """A condition that does not compile, names an unknown variable, or did not evaluate to true or false."""


# -- helpers ---------------------------------------------------------------------------------------------------


def _text(value: Any, what: str) -> str:
    # An array or number where a string belongs must not slip through as its repr: type confusion fails.
    if not isinstance(value, str):
        raise TypeError(f"{what} needs a string, not {type(value).__name__}")
    return value


def _ip_host(host: str) -> str | None:
    """The canonical form of an IPv4 literal in any of the forms resolvers accept (decimal `2130706433`, octal
    `0177.0.0.1`, hex `0x7f.1`, short `127.1`), or None when the host is not one."""
    if not host or not re.fullmatch(r"[0-9a-fA-FxX.]+", host) or not host[0].isdigit():
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


def _host(raw: str) -> tuple[str, bool]:
    """(host, is an IP literal): lower-cased, IDNA (UTS 46 mapping, then punycode) for unicode, one trailing dot
    removed; IP literals canonical (IPv4-mapped IPv6 as its IPv4). Percent-encoding, empty labels, punycode that
    does not decode, zone ids: errors."""
    if raw.startswith("["):
        if not raw.endswith("]") or "%" in raw:
            raise ValueError("bad IPv6 literal")
        ip6 = ipaddress.IPv6Address(raw[1:-1])
        mapped = ip6.ipv4_mapped
        return (str(mapped), True) if mapped is not None else (ip6.compressed, True)
    if not raw or "%" in raw:
        raise ValueError("bad host")
    host = raw[:-1] if raw.endswith(".") else raw
    ip4 = _ip_host(host)
    if ip4 is not None:
        return ip4, True
    if host.isascii():
        ascii_host = host.lower()
        if "xn--" in ascii_host:  # punycode must decode, as a client would need it to
            try:
                idna.decode(ascii_host)
            except (idna.IDNAError, UnicodeError):
                raise ValueError("bad host name") from None
    else:
        try:  # UTS 46 as browsers and httpx: fullwidth forms, ideographic dots, case, invisible characters
            ascii_host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise ValueError("bad host name") from None
    labels = ascii_host.split(".")
    if any(not label for label in labels) or not re.fullmatch(r"[a-z0-9.\-_]+", ascii_host):
        raise ValueError("bad host name")
    ip4 = _ip_host(ascii_host)  # fullwidth digits become an IP literal only after the UTS 46 mapping
    return (ip4, True) if ip4 is not None else (ascii_host, False)


def url(value: Any) -> dict[str, Any]:
    """`url(s)`: see `_url`."""
    return _url(_text(value, "url()"))


@functools.lru_cache(maxsize=4096)
def _url(s: str) -> dict[str, Any]:
    """`url(s)`: {scheme, host, port, path, query, userinfo (bool), ip (bool)}. The host is what a client would
    connect to (`http://good.com@evil.com` is evil.com, with userinfo true). Backslashes, whitespace, control
    characters, a missing scheme or host: errors. (Cached by the text: the dict is never mutated.)"""
    if "\\" in s or any(ord(c) <= 0x20 or 0x7F <= ord(c) <= 0x9F for c in s):
        raise ValueError("url() refuses backslashes, whitespace and control characters")
    parts = urlsplit(s)
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc:
        raise ValueError("url() needs an absolute URL")
    _, at, hostport = parts.netloc.rpartition("@")
    if hostport.startswith("["):
        end = hostport.find("]")
        raw_host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("bad authority")
        port_text = rest[1:]
    else:
        raw_host, _, port_text = hostport.partition(":")
        if ":" in port_text:
            raise ValueError("bad authority")
    host, is_ip = _host(raw_host)
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError("bad port")
        port = int(port_text)
    else:
        port = DEFAULT_PORTS.get(scheme, 0)
    return {
        "scheme": scheme,
        "host": host,
        "port": port,
        "path": parts.path or "/",
        "query": parts.query,
        "userinfo": bool(at),
        "ip": is_ip,
    }


def _clean_path(value: Any, what: str) -> str:
    return _clean(_text(value, what), what)


@functools.lru_cache(maxsize=4096)
def _clean(s: str, what: str) -> str:
    """An absolute path with `.` segments and a trailing slash dropped. Refused (an error): `..`, `//`,
    percent-encoding, backslashes, control characters, and text that Unicode compatibility normalisation (NFKC)
    would change (fullwidth `．．`, `‥`, decomposed NFD forms)."""
    if not s.startswith("/"):
        raise ValueError(f"{what}: not an absolute path")
    if unicodedata.normalize("NFKC", s) != s:
        raise ValueError(f"{what}: not in normal form")
    if "%" in s or "\\" in s or "//" in s or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in s):
        raise ValueError(f"{what}: refused characters")
    segments = s.split("/")[1:]
    if ".." in segments:
        raise ValueError(f"{what}: `..` segment")
    return "/" + "/".join(seg for seg in segments if seg not in ("", "."))


def path(value: Any) -> str:
    """`path(s)`: the normalised path (errors as `_clean_path`)."""
    return _clean_path(value, "path()")


def within(value: Any, prefix: Any) -> bool:
    """`path(s).within(prefix)`: is the path the prefix or below it (by whole segments: /a/bc is not within
    /a/b)? Both sides are checked as `path()` checks them, so a tricked prefix fails too."""
    p = _clean_path(value, "within()")
    pre = _clean_path(prefix, "within() prefix")
    return pre == "/" or p == pre or p.startswith(pre + "/")


@functools.lru_cache(maxsize=1024)
def _glob_re(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        ch = pattern[i]
        out.append("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def glob(value: Any, pattern: Any) -> bool:
    """`glob(s, pattern)`: `*` any run without `/`, `**` any run, `?` one character other than `/`; whole string,
    case-sensitive."""
    return _glob_re(_text(pattern, "glob() pattern")).fullmatch(_text(value, "glob()")) is not None


@functools.lru_cache(maxsize=1024)
def _re2(pattern: str) -> Any:
    return re2.compile(pattern)


def re_matches(value: Any, pattern: Any) -> bool:
    """CEL's `matches` (RE2 syntax, a match anywhere unless anchored) with the compiled pattern cached: the CEL
    library compiles the pattern on every evaluation, 30-80 µs for a case-insensitive one. RE2, as the CEL spec
    says, so matching stays linear in the input whatever the pattern."""
    try:
        compiled = _re2(_text(pattern, "matches() pattern"))
    except re2.error as exc:
        raise ConditionError(f"matches(): bad pattern: {exc}") from None
    return compiled.search(_text(value, "matches()")) is not None


FUNCTIONS: dict[str, Any] = {
    "url": url,
    "path": path,
    "within": within,
    "glob": glob,
    "re_matches": re_matches,
}

# CEL string literals (raw or not, triple or single quoted), left alone when `matches(` is rewritten
_LITERAL = re.compile(
    r"[rR](?:'''.*?'''|\"\"\".*?\"\"\"|'[^'\n]*'|\"[^\"\n]*\")"
    r"|[bB]?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\")",
    re.DOTALL,
)
_MATCHES = re.compile(r"\bmatches(\s*\()")


def _with_cached_matches(text: str) -> str:
    """`x.matches(p)` and `matches(x, p)` outside string literals call `re_matches`, the cached version."""
    out, last = [], 0
    for lit in _LITERAL.finditer(text):
        out.append(_MATCHES.sub(r"re_matches\1", text[last : lit.start()]))
        out.append(lit.group(0))
        last = lit.end()
    out.append(_MATCHES.sub(r"re_matches\1", text[last:]))
    return "".join(out)


# -- compile and evaluate ----------------------------------------------------------------------------------------


# A use of a variable: `var.field` (not followed by `(`, which is a method on the whole value) or `var["field"]`;
# anything else (the bare variable, a method, a macro) needs the whole value.
_USE = re.compile(r"\b(args|principal|task)\b(?:\s*\.\s*([A-Za-z_]\w*)(\s*\()?|\s*\[\s*\"([^\"\\]*)\"\s*\])?")


def _needs(text: str) -> dict[str, frozenset[str] | None]:
    """The fields of `args`, `principal` and `task` a condition reads (None: the whole value). Converting a value
    into CEL costs a few µs per container, and an LLM request's body can be large, so only these are passed."""
    fields: dict[str, set[str] | None] = {}
    for m in _USE.finditer(text):
        var, name, call, key = m.group(1), m.group(2), m.group(3), m.group(4)
        known = fields.setdefault(var, set())
        field = name if name is not None and call is None else key
        if field is None or known is None:
            fields[var] = None
        else:
            known.add(field)
    return {var: (frozenset(f) if f is not None else None) for var, f in fields.items()}


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition: the program, the variables (and their fields) it reads, the helpers it calls."""

    text: str
    program: Any
    variables: tuple[str, ...]
    needs: Mapping[str, frozenset[str] | None]
    functions: Mapping[str, Any]

    def bindings(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.functions)
        for var in self.variables:
            if var not in facts:
                continue  # unbound: the evaluation fails, and the caller fails closed
            value = facts[var]
            wanted = self.needs.get(var)
            if wanted is not None and isinstance(value, Mapping):
                value = {k: value[k] for k in wanted if k in value}
            out[var] = value
        return out


@functools.lru_cache(maxsize=4096)
def compile_condition(text: str) -> Condition:
    """The compiled condition (cached by its text), or ConditionError."""
    try:
        program = cel.compile(_with_cached_matches(text))
    except Exception as exc:  # the library raises ValueError or RuntimeError with the parser's message
        raise ConditionError(f"condition does not compile: {str(exc).splitlines()[0]}") from None
    refs = program.references()
    unknown = sorted(set(refs["variables"]) - VARIABLES - set(FUNCTIONS))
    if unknown:
        raise ConditionError(f"condition names unknown variables {unknown}: use {sorted(VARIABLES)}")
    variables = tuple(v for v in refs["variables"] if v in VARIABLES)
    functions = {name: FUNCTIONS[name] for name in refs["functions"] if name in FUNCTIONS}
    return Condition(text, program, variables, _needs(text), functions)


def evaluate(condition: Condition, facts: Mapping[str, Any]) -> bool:
    """True or False; anything else (an error, a missing argument, a non-boolean result) raises ConditionError,
    and the caller fails closed."""
    try:
        result = condition.program.execute(condition.bindings(facts))
    except Exception as exc:
        raise ConditionError(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(result, bool):
        raise ConditionError(f"condition is {type(result).__name__}, not a boolean")
    return result
