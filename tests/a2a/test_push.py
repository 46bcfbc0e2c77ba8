"""The push-notification callback egress rule against a corpus of ways to name an internal host (IP literals in
every spelling, IPv6 forms embedding IPv4, IDN look-alikes, parser tricks), and the cases it lets through: public
literals, and what `a2a.push.allow` names. Only IP literals and names resolved locally (`localhost`)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgw.a2a.push import PushURLForbidden, check_callback

REFUSED = [
    # loopback, however written
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://127.0.0.1/hook",
    "http://127.0.0.1./hook",
    "http://127.255.255.254:8080/hook",
    "http://2130706433/hook",  # decimal
    "http://0177.0.0.1/hook",  # octal
    "http://0x7f.0.0.1/hook",  # hex
    "http://0x7f000001/hook",
    "http://0x7F.1/hook",
    "http://127.1/hook",  # short forms
    "http://127.0.1/hook",
    "http://127.0.0.01/hook",  # a leading zero is octal to inet_aton
    "http://017700000001/hook",
    "http://[::1]/hook",
    "http://[0:0:0:0:0:0:0:1]/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
    "http://[::ffff:7f00:1]/hook",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/hook",
    "http://[::127.0.0.1]/hook",  # IPv4-compatible
    "http://[::ffff:0:127.0.0.1]/hook",  # IPv4-translated
    "http://[64:ff9b::127.0.0.1]/hook",  # NAT64
    "http://[2002:7f00:1::1]/hook",  # 6to4
    # unspecified, private, shared, link-local (cloud metadata), multicast, reserved, documentation
    "http://0.0.0.0/hook",
    "http://0/hook",
    "http://[::]/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://172.31.255.255/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://[fe80::1%25eth0]/hook",  # zone id
    "http://[fc00::1]/hook",
    "http://[fd12:3456::1]/hook",
    "http://[fec0::1]/hook",  # site-local
    "http://[::ffff:169.254.169.254]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://[64:ff9b::a00:1]/hook",
    "http://[2002:a00:1::]/hook",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
    "http://[64:ff9b:1::1]/hook",  # local-use NAT64
    "http://224.0.0.1/hook",
    "http://[ff02::1]/hook",
    "http://240.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://192.0.2.1/hook",
    "http://198.18.0.1/hook",
    "http://[2001:db8::1]/hook",
    # IDN and encodings that become a loopback host
    "http://ＬＯＣＡＬＨＯＳＴ/hook",  # full-width letters (UTS 46 maps them)
    "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/hook",
    "http://１２７.０.０.１/hook",  # full-width digits
    "http://127。0。0。1/hook",  # ideographic full stops
    "http://%31%32%37.0.0.1/hook",
    "http://127%2e0%2e0%2e1/hook",
    "http://straße.example/hook",  # IDNA 2003 and 2008 disagree
    # parser tricks
    "http://user@93.184.215.14/hook",
    "http://user:pass@93.184.215.14/hook",
    "http://93.184.215.14@127.0.0.1/hook",
    "http://93.184.215.14\\@127.0.0.1/hook",
    "http://93.184.215.14:80\\@127.0.0.1/hook",
    "http:/127.0.0.1/hook",
    "http:127.0.0.1/hook",
    "http:///127.0.0.1/hook",
    "http:// 127.0.0.1/hook",
    " http://127.0.0.1/hook",
    "http://127.0.0.1\t/hook",
    "http://93.184.215.14\n.127.0.0.1/hook",
    "http://93.184.215.14\u3000/hook",
    "http://93.184.215.14:99999/hook",
    "http://93.184.215.14:0/hook",
    "http://93.184.215.14:8o/hook",
    "http://93.184.215.14:１２/hook",
    "http://[::1/hook",
    "http://[127.0.0.1]/hook",
    "http://[v1.abc]/hook",
    "http://1.2.3.4.5/hook",
    "http://foo.123/hook",
    "http://a..b/hook",
    "http://a_b!c/hook",
    "ftp://93.184.215.14/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "//93.184.215.14/hook",
    "http:",
    "http://",
    "",
    "http://" + "a" * 2100 + ".example/hook",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_a_callback_that_could_reach_an_internal_host_is_refused(url: str) -> None:
    with pytest.raises(PushURLForbidden) as err:
        await check_callback(url, [])
    assert (err.value.status, err.value.code) == (400, "push_url_forbidden")


async def test_the_cloud_metadata_name_is_refused_whether_or_not_it_resolves_here() -> None:
    with pytest.raises(PushURLForbidden):
        await check_callback("http://metadata.google.internal/computeMetadata/v1/", [])


async def test_a_name_resolving_to_loopback_is_refused_for_its_address() -> None:
    with pytest.raises(PushURLForbidden) as err:
        await check_callback("http://localhost:8080/hook", [])
    assert "127.0.0.1" in err.value.reason or "::1" in err.value.reason
    assert "127.0.0.1" not in err.value.message  # the caller is not told what a name resolves to


async def test_an_allow_entry_for_another_network_does_not_open_loopback() -> None:
    for url in ("http://127.0.0.1/hook", "http://[::ffff:127.0.0.1]/hook", "http://localhost/hook"):
        with pytest.raises(PushURLForbidden):
            await check_callback(url, ["10.0.0.0/8", "hooks.internal", "192.168.0.1"])


async def test_an_ambiguous_numeric_host_is_refused_even_when_its_address_is_allowed() -> None:
    for url in ("http://2130706433/hook", "http://127.1/hook", "http://0177.0.0.1/hook"):
        with pytest.raises(PushURLForbidden) as err:
            await check_callback(url, ["127.0.0.0/8"])
        assert "dotted-quad" in err.value.message


ALLOWED = [
    ("http://93.184.215.14/hook", []),  # a public literal needs no resolution
    ("https://93.184.215.14:8443/a/b?c=d#e", []),
    ("HTTPS://93.184.215.14/hook", []),
    ("http://[2606:4700:4700::1111]/hook", []),
    ("http://[::ffff:93.184.215.14]/hook", []),
    ("http://[64:ff9b::5db8:d70e]/hook", []),  # NAT64 of a public address
    ("http://[2002:5db8:d70e::1]/hook", []),  # 6to4 of a public address
    ("http://127.0.0.1:9000/hook", ["127.0.0.1"]),
    ("http://[::ffff:127.0.0.1]/hook", ["127.0.0.1"]),
    ("http://[::1]:9000/hook", ["::1"]),
    ("http://[::1]:9000/hook", ["[::1]"]),
    ("http://10.20.30.40/hook", ["10.0.0.0/8"]),
    ("http://[fd00::5]/hook", ["fd00::/8"]),
    ("http://169.254.169.254/hook", ["169.254.0.0/16"]),
    ("http://localhost:9000/hook", ["localhost"]),  # allowed by name: what it resolves to is not checked
    ("http://LocalHost:9000/hook", ["localhost"]),
    ("http://localhost:9000/hook", ["LOCALHOST."]),
    ("http://ＬＯＣＡＬＨＯＳＴ:9000/hook", ["localhost"]),  # IDN normalised before the allow list is read
    ("http://localhost:9000/hook", ["127.0.0.0/8", "::1"]),  # allowed by every address it resolves to
]


@pytest.mark.parametrize(("url", "allow"), ALLOWED)
async def test_a_public_or_allowed_callback_is_accepted(url: str, allow: list[str]) -> None:
    assert await check_callback(url, allow) is None


async def test_an_allowed_name_must_still_resolve_in_time() -> None:
    with pytest.raises(PushURLForbidden) as err:
        await check_callback("http://localhost:9000/hook", ["localhost"], timeout_s=0)
    assert "does not resolve" in err.value.reason


INTERNAL = [
    ipaddress.IPv4Network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16")
]


@st.composite
def spelled_internal_ipv4(draw: st.DrawFn) -> tuple[str, int]:
    """An internal IPv4 address in a spelling inet_aton (what the agent's socket layer uses) reads as it."""
    net = draw(st.sampled_from(INTERNAL))
    value = draw(st.integers(int(net.network_address), int(net.broadcast_address)))
    parts = draw(st.sampled_from([1, 2, 3, 4]))  # a.b.c.d, a.b.c (c: 16 bits), a.b (b: 24 bits), a (32 bits)
    widths = [8] * (parts - 1) + [32 - 8 * (parts - 1)]
    numbers, rest = [], value
    for width in reversed(widths):
        numbers.insert(0, rest & ((1 << width) - 1))
        rest >>= width
    bases = draw(st.lists(st.sampled_from(["dec", "hex", "HEX", "oct"]), min_size=parts, max_size=parts))
    text = ".".join(
        {"dec": str(n), "hex": hex(n), "HEX": f"0X{n:X}", "oct": f"0{n:o}"}[b]
        for n, b in zip(numbers, bases, strict=True)
    )
    return text, value


@given(spelled_internal_ipv4())
async def test_no_spelling_of_an_internal_ipv4_address_gets_through(spelled: tuple[str, int]) -> None:
    text, value = spelled
    assert socket.inet_aton(text) == value.to_bytes(4, "big")  # the spelling is real: a socket would dial it
    with pytest.raises(PushURLForbidden):
        await check_callback(f"http://{text}:8080/hook", [])
