"""The egress rule for URLs the gateway (or an agent on its behalf) will call that a client or an operator wrote:
A2A push-notification callbacks and the approvals webhook. Only a URL whose host is (or resolves only to) globally
routable addresses passes, unless the allow list names the host or a network holding the address.

What is checked: scheme http(s), no userinfo, a host; IP literals in every spelling a client or a socket layer
could read (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`, full-width digits, `%31`, zone ids) are refused unless
canonical (dotted quad, bracketed IPv6); a name is normalised as IDNA clients do (UTS 46) and refused if two IDNA
readings disagree; then EVERY address it resolves to must be public (loopback, private, link-local, shared
100.64/10, multicast, reserved, documentation, unspecified, and IPv6 forms embedding those: IPv4-mapped,
-compatible, -translated, 6to4, NAT64, Teredo).

Limit (DNS rebinding): the check resolves the name when it runs; whoever dials the URL later resolves it again. A
name whose owner changes its DNS answer in between can still lead inward; the boundary that holds against
rebinding is the caller's own egress (a network policy, or an egress proxy that checks the address it dials).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import idna

from agentgw.errors import BadRequest, GatewayError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOLVE_TIMEOUT_S = 2.0
MAX_URL = 2048

# Not reachable on the public Internet, or not meant to be dialled: checked besides `ipaddress`'s properties,
# whose tables have changed between Python patch releases.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo among them
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_6TO4 = ipaddress.IPv6Network("2002::/16")

_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*\.?")


class EgressForbidden(BadRequest):
    """A URL the egress rule refuses. `reason` (for logs and tests) is more precise than the message."""

    status, code = 400, "egress_forbidden"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class _Refused(Exception):
    """Internal: the rest of the message after the URL's name (" has no host."), and the precise reason."""

    def __init__(self, rest: str, reason: str | None = None) -> None:
        super().__init__(rest)
        self.rest = rest
        self.reason = reason


_NOT_PUBLIC = " must point to a public host."


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and leads to (mapped, translated, NAT64, 6to4)."""
    if addr in _MAPPED:
        return addr.ipv4_mapped
    if addr in _TRANSLATED or addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _6TO4:
        return addr.sixtofour
    return None


def _not_public(addr: Address) -> str | None:
    """Why `addr` is not a globally routable unicast address, or None if it is."""
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_v4(addr)
        if inner is not None:
            why = _not_public(inner)
            return f"{addr} embeds {inner}: {why}" if why else None
        if any(addr in n for n in _BLOCKED_V6):
            return f"{addr} is a special-purpose IPv6 address"
        if addr.is_site_local:
            return f"{addr} is site-local"
    elif any(addr in n for n in _BLOCKED_V4):
        return f"{addr} is a special-purpose IPv4 address"
    for prop in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(addr, f"is_{prop}"):
            return f"{addr} is {prop.replace('_', '-')}"
    if not addr.is_global:
        return f"{addr} is not globally routable"
    return None


def _in(addr: Address, nets: Sequence[Network]) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return _in(addr.ipv4_mapped, nets) or any(addr in n for n in nets if n.version == 6)
    return any(addr in n for n in nets if n.version == addr.version)


def _allow(allow: Sequence[str]) -> tuple[frozenset[str], list[Network]]:
    """An allow list as host names (lowercase, no trailing dot) and networks (an address is a /32 or /128)."""
    names: set[str] = set()
    nets: list[Network] = []
    for entry in allow:
        text = entry.strip()
        try:
            nets.append(ipaddress.ip_network(text.removeprefix("[").removesuffix("]"), strict=False))
        except ValueError:
            names.add(text.lower().removesuffix("."))
    return frozenset(names), nets


def _check_address(addr: Address, nets: Sequence[Network]) -> None:
    if _in(addr, nets):
        return
    why = _not_public(addr)
    if why is not None:
        raise _Refused(_NOT_PUBLIC, why)


def _ascii_host(host: str) -> str:
    """The host as an IDNA client sends it to DNS, lowercase; refused when IDNA 2008 (UTS 46, what yarl does) and
    IDNA 2003 (Python's codec, what the socket layer does with a str) read it differently."""
    if host.isascii():
        return host.lower()
    try:
        uts46 = idna.encode(host, uts46=True).decode("ascii").lower()
        legacy = host.encode("idna").decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise _Refused(" has an invalid host name.", f"IDNA: {exc}") from exc
    if uts46 != legacy:
        raise _Refused(
            " has an ambiguous host name.",
            f"IDNA 2008 {uts46} != IDNA 2003 {legacy}",
        )
    return uts46


def _split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL every client reads the same way: anything a parser could read otherwise
    (whitespace, control characters, backslashes, userinfo, a missing `//`) is refused."""
    if len(url) > MAX_URL:
        raise _Refused(f" is longer than {MAX_URL} characters.")
    if any(ch == "\\" or unicodedata.category(ch)[0] in "CZ" for ch in url):
        raise _Refused(" must not contain whitespace, control characters or backslashes.")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _Refused(" is not a valid URL.", str(exc)) from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not url[len(scheme) + 1 :].startswith("//"):
        raise _Refused(" must be an http:// or https:// URL.")
    netloc = parts.netloc
    if "@" in netloc:
        raise _Refused(" must not carry credentials (user@host).")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise _Refused(" has an unclosed IPv6 literal.")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
    else:
        host = netloc.partition(":")[0]
        rest = netloc[len(host) :]
    port = 443 if scheme == "https" else 80
    if rest:
        port_text = rest[1:]
        if not rest.startswith(":") or not port_text.isascii() or not port_text.isdigit():
            raise _Refused(" has an invalid port.")
        port = int(port_text)
        if not 0 < port < 65536:
            raise _Refused(" has an invalid port.")
    if not host:
        raise _Refused(" has no host.")
    return scheme, host, port


async def _resolve(host: str, port: int, timeout_s: float) -> list[Address]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), timeout_s
        )
    except (OSError, UnicodeError, TimeoutError) as exc:
        raise _Refused(_NOT_PUBLIC, f"{host} does not resolve: {type(exc).__name__}") from exc
    addrs: list[Address] = []
    for family, *_, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # A scoped IPv6 answer reads `fe80::1%eth0`; the scope does not change what kind of address it is.
        addrs.append(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]))
    if not addrs:
        raise _Refused(_NOT_PUBLIC, f"{host} resolves to no IP address")
    return addrs


async def _check(url: str, allow: Sequence[str], timeout_s: float) -> None:
    """Raise PushURLForbidden unless `url` may be registered as a push-notification callback.

    Every refusal that depends on DNS says the same thing to the caller (`reason` has the detail), so the rule
    does not tell a client which internal names exist."""
    _, host, port = _split(url)
    names, nets = _allow(allow)
    if host.startswith("["):
        inner = host[1:-1]
        if "%" in inner:
            raise _Refused(" must not name an IPv6 zone.")
        try:
            v6 = ipaddress.IPv6Address(inner)
        except ValueError as exc:
            raise _Refused(" has an invalid IPv6 literal.") from exc
        _check_address(v6, nets)
        return
    if "%" in host:
        raise _Refused("'s host must not be percent-encoded.")
    written = _ascii_host(host)
    if len(written) > 254 or not _NAME.fullmatch(written):
        raise _Refused(" has an invalid host name.", f"host {written!r}")
    name = written.removesuffix(".")
    if _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]):
        # WHATWG parsers read a host ending in a number as IPv4 and socket layers (inet_aton) accept decimal,
        # octal, hex and short forms: only the canonical dotted quad means one thing to every client.
        try:
            v4 = ipaddress.IPv4Address(name)
        except ValueError:
            v4 = None
        if v4 is None or str(v4) != name:
            raise _Refused(
                "'s host must be a dotted-quad IPv4 address or a name.",
                f"host {name!r}",
            )
        _check_address(v4, nets)
        return
    if name in names:
        await _resolve(written, port, timeout_s)  # allowed by name: it must still exist
        return
    for addr in await _resolve(written, port, timeout_s):
        _check_address(addr, nets)


ErrorFactory = Callable[[str, str | None], GatewayError]


async def check_url(
    url: str,
    allow: Sequence[str],
    *,
    what: str = "The URL",
    error: ErrorFactory = EgressForbidden,
    timeout_s: float = RESOLVE_TIMEOUT_S,
) -> None:
    """Raise `error(message, reason)` unless the gateway may let `url` be called. `what` names the URL in the
    message ("The push notification URL"). Every refusal that depends on DNS says the same thing (`reason` has
    the detail), so the rule does not tell a client which internal names exist."""
    try:
        await _check(url, allow, timeout_s)
    except _Refused as refused:
        raise error(what + refused.rest, refused.reason) from None
