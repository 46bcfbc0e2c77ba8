"""Policy conditions: the helpers (url, path/within, glob, CEL's matches) and the bypass corpus — type confusion,
`..`, `//`, percent-encoding, unicode, URL tricks, missing and extra arguments — against allow-list and deny-list
rules written the way an operator would. Zero bypasses: every attempt is refused."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgw.conditions import ConditionError, compile_condition, evaluate, glob, path, url, within
from agentgw.policy import PolicyEngine
from tests.support import POLICIES


def cel(text: str, **facts: Any) -> bool:
    return evaluate(compile_condition(text), facts)


@pytest.mark.parametrize(
    ("raw", "host", "port", "userinfo", "ip"),
    [
        ("https://Example.COM/a", "example.com", 443, False, False),
        ("http://example.com./", "example.com", 80, False, False),
        ("http://example.com:8080/x?y", "example.com", 8080, False, False),
        ("http://good.com@evil.com/", "evil.com", 80, True, False),
        ("http://good.com:x@evil.com:81/", "evil.com", 81, True, False),
        ("http://evil.com#@good.com", "evil.com", 80, False, False),
        ("http://evil.com?@good.com", "evil.com", 80, False, False),
        ("http://2130706433/", "127.0.0.1", 80, False, True),
        ("http://0177.0.0.1/", "127.0.0.1", 80, False, True),
        ("http://0x7f.1/", "127.0.0.1", 80, False, True),
        ("http://127.1/", "127.0.0.1", 80, False, True),
        ("http://[::1]:8443/", "::1", 8443, False, True),
        ("http://[0:0:0:0:0:ffff:7f00:1]/", "127.0.0.1", 80, False, True),
        ("http://ｅｘａｍｐｌｅ.com/", "example.com", 80, False, False),
        ("http://example。com/", "example.com", 80, False, False),
        ("http://１２７.0.0.1/", "127.0.0.1", 80, False, True),
        ("http://例え.jp/", "xn--r8jz45g.jp", 80, False, False),
        ("http://XN--R8JZ45G.jp/", "xn--r8jz45g.jp", 80, False, False),
    ],
)
def test_url_gives_the_host_a_client_would_connect_to(
    raw: str, host: str, port: int, userinfo: bool, ip: bool
) -> None:
    u = url(raw)
    assert (u["host"], u["port"], u["userinfo"], u["ip"]) == (host, port, userinfo, ip)


@pytest.mark.parametrize(
    "raw",
    [
        "example.com/a",  # no scheme
        "/relative",
        "http:///nohost",
        "http://exa mple.com/",
        "http://example.com\\@evil.com/",
        "http://ex%61mple.com/",
        "http://a..b/",
        "http://[::1%25eth0]/",
        "http://example.com:99999/",
        "http://example.com:8o/",
        "http://a:1:2/",
        "http://example.com\t/",
    ],
)
def test_url_refuses_what_it_cannot_read_unambiguously(raw: str) -> None:
    with pytest.raises(ValueError, match=r"url\(\)|host|port|authority|IPv6|address"):
        url(raw)


@pytest.mark.parametrize("value", [["https://example.com/"], 7, None, {"url": "https://example.com/"}, True])
def test_the_helpers_refuse_what_is_not_a_string(value: Any) -> None:
    for helper in (url, path, lambda v: within(v, "/"), lambda v: glob(v, "*")):
        with pytest.raises(TypeError):
            helper(value)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/workspace/alice/a.txt", "/workspace/alice/a.txt"),
        ("/a/./b/", "/a/b"),
        ("/", "/"),
        ("/café", "/café"),
    ],
)
def test_path_normalises_dot_segments_and_trailing_slashes(raw: str, normal: str) -> None:
    assert path(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "/workspace/alice/../bob/x",
        "/workspace/alice/..",
        "/workspace//alice",
        "/workspace/alice/%2e%2e/bob",
        "/workspace/alice/%2F..",
        "/workspace/alice/\\..\\bob",
        "/workspace/alice/．．/bob",  # fullwidth full stops
        "/workspace/alice/‥/bob",  # two-dot leader
        "/workspace/ａlice/x",  # fullwidth letter
        "/workspace/cafe\u0301/x",  # NFD
        "/workspace/alice/\x00/x",
        "workspace/alice/x",
        "",
    ],
)
def test_path_refuses_traversal_encoding_and_unicode_tricks(raw: str) -> None:
    with pytest.raises(ValueError, match=r"path\(\)"):
        path(raw)


@pytest.mark.parametrize(
    ("value", "prefix", "inside"),
    [
        ("/workspace/alice", "/workspace/alice", True),
        ("/workspace/alice/x/y", "/workspace/alice", True),
        ("/workspace/alice/x", "/workspace/alice/", True),
        ("/workspace/alicex/y", "/workspace/alice", False),
        ("/workspace", "/workspace/alice", False),
        ("/etc", "/", True),
    ],
)
def test_within_compares_whole_segments(value: str, prefix: str, inside: bool) -> None:
    assert within(value, prefix) is inside


@pytest.mark.parametrize(
    ("value", "pattern", "match"),
    [
        ("report.csv", "*.csv", True),
        ("dir/report.csv", "*.csv", False),
        ("dir/report.csv", "**.csv", True),
        ("a.b", "a?b", True),
        ("a/b", "a?b", False),
        ("A.CSV", "*.csv", False),
        ("x.csv.exe", "*.csv", False),
        ("a+b", "a+b", True),
    ],
)
def test_glob_matches_the_whole_string_and_star_stops_at_slashes(
    value: str, pattern: str, match: bool
) -> None:
    assert glob(value, pattern) is match


def test_the_helpers_and_cels_regex_work_inside_conditions() -> None:
    assert cel('url(args.u).host == "example.com"', args={"u": "https://EXAMPLE.com./"})
    assert cel('path(args.p).within("/w/" + principal.sub)', args={"p": "/w/al/x"}, principal={"sub": "al"})
    assert cel('glob(args.f, "*.md")', args={"f": "a.md"})
    assert cel('args.s.matches("^(?i:select)\\\\s")', args={"s": "Select 1"})
    assert cel('target == "mcp:a/b" && task.id == "t1"', target="mcp:a/b", task={"id": "t1"})


def test_matches_is_re2_with_its_pattern_compiled_once() -> None:
    assert cel('args.s.matches("^(?i:select)\\\\s") && matches(args.s, "1$")', args={"s": "Select 1"})
    # RE2, as the CEL spec says: `\s` is ASCII whitespace, so a no-break space does not pass for one
    assert not cel('args.s.matches("^select\\\\s")', args={"s": "select\u00a01"})
    # linear time: a pattern that makes a backtracking engine take forever answers at once here
    assert not cel('args.s.matches("^(a+)+$")', args={"s": "a" * 5000 + "!"})


def test_matches_inside_a_string_literal_is_left_alone() -> None:
    assert cel('args.s == "x.matches(y)" && r"\\d" == "\\\\d"', args={"s": "x.matches(y)"})
    assert cel('"""a "matches(" b""" == args.s', args={"s": 'a "matches(" b'})


def test_matches_with_a_bad_pattern_or_a_number_is_an_error() -> None:
    with pytest.raises(ConditionError, match="bad pattern"):
        cel('args.s.matches("(")', args={"s": "x"})
    with pytest.raises(ConditionError):
        cel('args.n.matches("1")', args={"n": 1})


# -- the bypass corpus -------------------------------------------------------------------------------------------
# Each rule as an operator would write it (allow-lists as conditional allows, deny-lists as conditional denies on
# top of a broad allow); each attempt must be refused.

RULES = """\
p, role:agents, mcp:web/fetch, call, allow, url(args.url).host in ["example.com"] && url(args.url).scheme == "https"
p, role:agents, mcp:web/get, call, allow
p, role:agents, mcp:web/get, call, deny, url(args.url).host == "127.0.0.1" || url(args.url).host == "169.254.169.254"
p, role:agents, mcp:fs/write_file, call, allow, path(args.path).within("/workspace/" + principal.sub)
p, role:agents, mcp:fs/read_file, call, allow
p, role:agents, mcp:fs/read_file, call, deny, path(args.path).within("/secrets")
p, role:agents, mcp:db/query, call, allow, args.sql.matches("^\\\\s*(?i:select)\\\\s[^;]*$")
p, role:agents, llm:*, call, allow
p, role:agents, llm:*, call, deny, !(args.max_tokens <= 1000)
p, role:agents, mcp:shop/buy, call, allow, args.amount <= 100
p, role:agents, mcp:shop/label, call, allow, glob(args.file, "*.txt")
p, role:agents, mcp:shop/tag, call, allow, args.tag in ["red", "blue"]
"""

BYPASSES: list[tuple[str, dict[str, Any]]] = [
    # URL tricks against the allow-list
    ("mcp:web/fetch", {"url": "https://example.com@evil.com/"}),
    ("mcp:web/fetch", {"url": "https://example.com:443@evil.com/"}),
    ("mcp:web/fetch", {"url": "https://evil.com/https://example.com"}),
    ("mcp:web/fetch", {"url": "https://evil.com?example.com"}),
    ("mcp:web/fetch", {"url": "https://evil.com#example.com"}),
    ("mcp:web/fetch", {"url": "https://example.com.evil.com/"}),
    ("mcp:web/fetch", {"url": "https://evilexample.com/"}),
    ("mcp:web/fetch", {"url": "https://example.com\\@evil.com/"}),
    ("mcp:web/fetch", {"url": "http://example.com/"}),  # scheme
    ("mcp:web/fetch", {"url": "https://ex%61mple.com/"}),
    ("mcp:web/fetch", {"url": "https://еxample.com/"}),  # Cyrillic е: punycode, not example.com
    ("mcp:web/fetch", {"url": "//example.com/"}),
    ("mcp:web/fetch", {"url": ["https://example.com/"]}),  # array for a string
    ("mcp:web/fetch", {"url": {"host": "example.com"}}),
    ("mcp:web/fetch", {"url": None}),
    ("mcp:web/fetch", {}),  # missing
    ("mcp:web/fetch", {"uri": "https://example.com/"}),  # the argument under another name
    # IP literal tricks against the deny-list
    ("mcp:web/get", {"url": "http://127.0.0.1/"}),
    ("mcp:web/get", {"url": "http://2130706433/"}),
    ("mcp:web/get", {"url": "http://0177.0.0.1/"}),
    ("mcp:web/get", {"url": "http://0x7f000001/"}),
    ("mcp:web/get", {"url": "http://127.1/"}),
    ("mcp:web/get", {"url": "http://[::ffff:127.0.0.1]/"}),
    ("mcp:web/get", {"url": "http://[::ffff:7f00:1]/"}),
    ("mcp:web/get", {"url": "http://１２７.0.0.1/"}),
    ("mcp:web/get", {"url": "http://127.0.0.1./"}),
    ("mcp:web/get", {"url": "http://user@127.0.0.1:80/"}),
    ("mcp:web/get", {"url": "http://169.254.169.254/latest/meta-data"}),
    ("mcp:web/get", {"url": "http://0251.0376.0251.0376/"}),
    ("mcp:web/get", {"url": "http://x@127.0.0.1/"}),
    ("mcp:web/get", {"url": 2130706433}),  # a number where a string belongs
    ("mcp:web/get", {}),
    # path tricks against the allow-list (bot's own directory)
    ("mcp:fs/write_file", {"path": "/workspace/bot/../alice/x"}),
    ("mcp:fs/write_file", {"path": "/workspace/bot/%2e%2e/alice/x"}),
    ("mcp:fs/write_file", {"path": "/workspace/bot/%2E%2E/alice/x"}),
    ("mcp:fs/write_file", {"path": "/workspace//bot/../../etc/x"}),
    ("mcp:fs/write_file", {"path": "/workspace/botnet/x"}),
    ("mcp:fs/write_file", {"path": "/workspace/bo"}),
    ("mcp:fs/write_file", {"path": "/workspace/ｂｏｔ/x"}),
    ("mcp:fs/write_file", {"path": "/workspace/bot/．．/alice"}),
    ("mcp:fs/write_file", {"path": "/workspace/bot/..\\alice"}),
    ("mcp:fs/write_file", {"path": "workspace/bot/x"}),
    ("mcp:fs/write_file", {"path": ["/workspace/bot/x"]}),
    ("mcp:fs/write_file", {"path": ["/workspace/bot/x", "/etc/passwd"]}),
    ("mcp:fs/write_file", {"file": "/workspace/bot/x"}),
    ("mcp:fs/write_file", {}),
    # path tricks against the deny-list
    ("mcp:fs/read_file", {"path": "/secrets/key"}),
    ("mcp:fs/read_file", {"path": "/secrets"}),
    ("mcp:fs/read_file", {"path": "/tmp/../secrets/key"}),
    ("mcp:fs/read_file", {"path": "//secrets/key"}),
    ("mcp:fs/read_file", {"path": "/./secrets/key"}),
    ("mcp:fs/read_file", {"path": "/secrets/"}),
    ("mcp:fs/read_file", {"path": "/%73ecrets/key"}),
    ("mcp:fs/read_file", {"path": "/ｓecrets/key"}),
    ("mcp:fs/read_file", {"path": "/se\u0301crets/key"}),
    ("mcp:fs/read_file", {"path": ["/secrets/key"]}),
    ("mcp:fs/read_file", {"path": 5}),
    ("mcp:fs/read_file", {}),
    # SQL
    ("mcp:db/query", {"sql": "DROP TABLE t"}),
    ("mcp:db/query", {"sql": "SELECT 1; DROP TABLE t"}),
    ("mcp:db/query", {"sql": "SELECTX FROM t"}),
    ("mcp:db/query", {"sql": ["SELECT 1"]}),
    ("mcp:db/query", {}),
    # numbers: type confusion, missing
    ("llm:mock-fast", {"max_tokens": 5000}),
    ("llm:mock-fast", {"max_tokens": "5"}),
    ("llm:mock-fast", {"max_tokens": [5]}),
    ("llm:mock-fast", {"max_tokens": None}),
    ("llm:mock-fast", {"max_tokens": True}),
    ("llm:mock-fast", {"max_tokens": 1e300}),
    ("llm:mock-fast", {"max_tokens": 2**70}),
    ("llm:mock-fast", {}),
    ("mcp:shop/buy", {"amount": "5"}),
    ("mcp:shop/buy", {"amount": [5]}),
    ("mcp:shop/buy", {"amount": 100.5}),
    ("mcp:shop/buy", {"amount": 2**64}),
    ("mcp:shop/buy", {"price": 5}),
    ("mcp:shop/label", {"file": "a.txt/../../x.sh"}),
    ("mcp:shop/label", {"file": "a.txt.sh"}),
    ("mcp:shop/label", {"file": ["a.txt"]}),
    ("mcp:shop/tag", {"tag": ["red"]}),
    ("mcp:shop/tag", {"tag": "RED"}),
    ("mcp:shop/tag", {"tag": "red "}),
]

ALLOWED: list[tuple[str, dict[str, Any]]] = [
    ("mcp:web/fetch", {"url": "https://example.com/a?b=c"}),
    (
        "mcp:web/fetch",
        {"url": "https://EXAMPLE.com./a", "extra": ["ignored"]},
    ),  # extra arguments are harmless
    ("mcp:web/get", {"url": "http://10.0.0.1/"}),
    ("mcp:fs/write_file", {"path": "/workspace/bot/a/b.txt", "content": "x"}),
    ("mcp:fs/read_file", {"path": "/etc/hosts"}),
    ("mcp:db/query", {"sql": "select a from t"}),
    ("llm:mock-fast", {"max_tokens": 1000}),
    ("llm:mock-fast", {"max_tokens": 999.0}),
    ("mcp:shop/buy", {"amount": 100}),
    ("mcp:shop/label", {"file": "a.txt"}),
    ("mcp:shop/tag", {"tag": "red", "also": "blue"}),
]


@pytest.fixture(scope="module")
def corpus_engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    folder: Path = tmp_path_factory.mktemp("corpus")
    (folder / "policy.csv").write_text(RULES)
    return PolicyEngine(POLICIES / "model.conf", folder / "policy.csv")


def facts_for(args: Any, target: str) -> dict[str, Any]:
    return {
        "args": args,
        "principal": {"sub": "bot", "roles": ["agents"], "claims": {}},
        "task": {},
        "target": target,
    }


@pytest.mark.parametrize(("target", "args"), BYPASSES)
def test_no_attempt_in_the_bypass_corpus_is_allowed(
    corpus_engine: PolicyEngine, target: str, args: dict[str, Any]
) -> None:
    d = corpus_engine.decide("bot", ("agents",), target, "call", facts_for(args, target))
    assert not d.allowed, (target, args, d)


@pytest.mark.parametrize(("target", "args"), ALLOWED)
def test_the_corpus_rules_still_allow_honest_calls(
    corpus_engine: PolicyEngine, target: str, args: dict[str, Any]
) -> None:
    assert corpus_engine.decide("bot", ("agents",), target, "call", facts_for(args, target)).allowed


def test_a_principal_name_with_traversal_cannot_widen_its_own_directory(corpus_engine: PolicyEngine) -> None:
    facts = facts_for({"path": "/etc/passwd"}, "mcp:fs/write_file")
    for sub in ("..", "../..", "bot/../..", ""):
        facts["principal"] = {"sub": sub, "roles": ["agents"], "claims": {}}
        assert not corpus_engine.decide(sub or "x", ("agents",), "mcp:fs/write_file", "call", facts).allowed


def test_a_condition_that_is_not_a_boolean_is_an_error() -> None:
    with pytest.raises(ConditionError, match="not a boolean"):
        cel("args.n", args={"n": 1})


# -- differential: url() against the HTTP client, path() against POSIX normalisation ---------------------------

URL_PIECES = st.sampled_from(
    [
        "good.com",
        "evil.com",
        "@",
        ":",
        "80",
        "#",
        "?",
        "/",
        ";",
        "\\",
        ".",
        "%40",
        "[::1]",
        "127.0.0.1",
        "xn--e1a",
    ]
)


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["http", "https", "HTTP"]), rest=st.lists(URL_PIECES, min_size=1, max_size=8))
def test_url_reads_the_same_host_as_the_http_client_whenever_both_read_one(
    scheme: str, rest: list[str]
) -> None:
    raw = f"{scheme}://{''.join(rest)}"
    try:
        ours = url(raw)
    except ValueError:
        return  # refused: a condition on it fails closed
    try:
        theirs = httpx.URL(raw).host
    except (httpx.InvalidURL, ValueError):
        return  # the client would not connect anywhere
    if not theirs:
        return
    # the same host once both are put in canonical form (url() canonicalises; the client connects to the same)
    assert url(f"http://{'[' + theirs + ']' if ':' in theirs else theirs}/")["host"] == ours["host"], raw


PATH_PIECES = st.sampled_from(["/", ".", "..", "bot", "alice", "workspace", "%2e", "\\", "ｂot", "x"])


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["/", "/workspace/", "/workspace/bot", "/workspace/bot/"]),
    st.lists(PATH_PIECES, max_size=8),
)
def test_a_path_within_a_directory_is_inside_it_for_posix_too(start: str, pieces: list[str]) -> None:
    raw = start + "".join(pieces)
    try:
        inside = within(raw, "/workspace/bot")
    except ValueError:
        return  # refused: fails closed
    normal = posixpath.normpath(raw)
    assert inside == (normal == "/workspace/bot" or normal.startswith("/workspace/bot/")), raw
    assert unquote(raw) == raw


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON.filter(lambda v: not isinstance(v, str)))
def test_no_value_of_another_type_passes_a_string_rule(corpus_engine: PolicyEngine, value: Any) -> None:
    for target, field in (("mcp:web/fetch", "url"), ("mcp:fs/write_file", "path"), ("mcp:db/query", "sql")):
        facts = facts_for({field: value}, target)
        assert not corpus_engine.decide("bot", ("agents",), target, "call", facts).allowed, (target, value)


@settings(max_examples=300, deadline=None)
@given(value=JSON.filter(lambda v: isinstance(v, bool) or not isinstance(v, int | float)))
def test_no_value_of_another_type_passes_a_number_rule(corpus_engine: PolicyEngine, value: Any) -> None:
    assert not corpus_engine.decide(
        "bot", ("agents",), "mcp:shop/buy", "call", facts_for({"amount": value}, "")
    ).allowed
    assert not corpus_engine.decide(
        "bot", ("agents",), "llm:m", "call", facts_for({"max_tokens": value}, "")
    ).allowed
