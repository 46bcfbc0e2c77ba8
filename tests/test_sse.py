"""The shared SSE decoder against a line-by-line transcription of the WHATWG rules, on generated streams: any
field order, CRLF/CR/LF line endings, comments, `id` without data, multi-line data, a BOM, retry, any chunking."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgw.sse import SSEDecoder, SSEError


@dataclass(frozen=True)
class Seen:
    data: str
    type: str
    last_id: str | None


def whatwg(stream: str) -> tuple[list[Seen], int | None]:
    """The HTML standard's "interpreting an event stream", followed literally (on text, character by character)."""
    if stream.startswith("\ufeff"):
        stream = stream[1:]
    lines: list[str] = []
    line: list[str] = []
    i = 0
    while i < len(stream):
        c = stream[i]
        if c in "\r\n":
            lines.append("".join(line))
            line = []
            if c == "\r" and stream[i + 1 : i + 2] == "\n":
                i += 1
        else:
            line.append(c)
        i += 1
    # a line the stream ends in the middle of (and the event it belongs to) is discarded
    seen: list[Seen] = []
    data, kind, last_id, retry = "", "", None, None
    for ln in lines:
        if ln == "":
            if data == "":
                kind = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            seen.append(Seen(data, kind or "message", last_id))
            data, kind = "", ""
            continue
        if ln.startswith(":"):
            continue
        if ":" in ln:
            name, value = ln.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = ln, ""
        if name == "event":
            kind = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry" and value and all(ch in "0123456789" for ch in value):
            retry = int(value)
    return seen, retry


def decode(chunks: list[bytes]) -> tuple[list[Seen], int | None]:
    decoder = SSEDecoder()
    seen: list[Seen] = []
    for chunk in chunks:
        for ev in decoder.feed(chunk):
            if ev.data is not None:
                seen.append(
                    Seen(
                        ev.data.decode(),
                        ev.event.decode() or "message",
                        None if ev.id is None else ev.id.decode(),
                    )
                )
    decoder.close()
    return seen, decoder.retry


# Values without line breaks; colons, spaces, NUL and non-ASCII included.
VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)
NAME = st.sampled_from(["data", "event", "id", "retry", "other", "dat", "data ", ""])
EOL = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["field", "field", "field", "bare", "comment", "retry", "blank"]))
    if kind == "comment":
        return ":" + draw(VALUE)
    if kind == "bare":  # a field name without a colon: its value is empty
        return draw(NAME)
    if kind == "retry":
        return (
            "retry:" + draw(st.sampled_from(["", " "])) + draw(st.from_regex(r"[0-9]{1,5}x?", fullmatch=True))
        )
    if kind == "blank":
        return ""
    return draw(NAME) + ":" + draw(st.sampled_from(["", " ", "  "])) + draw(VALUE)


@st.composite
def streams(draw: st.DrawFn) -> str:
    out = "\ufeff" if draw(st.booleans()) else ""
    for ln in draw(st.lists(lines(), max_size=20)):
        out += ln + draw(EOL)
    if draw(st.booleans()):
        out += draw(st.sampled_from(["data: tail", "id: 9", ""]))  # an unfinished last line
    return out


def chunked(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts})
    parts, last = [], 0
    for p in points:
        parts.append(raw[last:p])
        last = p
    parts.append(raw[last:])
    return parts


@settings(max_examples=400, deadline=None)
@given(streams(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_the_decoder_dispatches_exactly_what_the_whatwg_rules_dispatch_however_the_bytes_are_cut(
    stream: str, cuts: list[int]
) -> None:
    assert decode(chunked(stream.encode(), cuts)) == whatwg(stream)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_arbitrary_bytes_never_break_the_decoder(chunks: list[bytes]) -> None:
    decoder = SSEDecoder()
    for chunk in chunks:
        for ev in decoder.feed(chunk):
            assert ev.raw.endswith(b"\n\n")


@pytest.mark.parametrize(
    ("stream", "messages"),
    [
        (b"id: 1\ndata:\n\ndata: {}\n\n", [b"", b"{}"]),  # a priming event, then the answer
        (b"id: 1\r\ndata: \r\nretry: 10\r\n\r\nevent: message\r\ndata: {}\r\n\r\n", [b"", b"{}"]),
        (b"id: only\n\n: comment\n\nretry: 5\n\n", []),  # blocks without data dispatch nothing
        (b"\xef\xbb\xbfdata: a\ndata: b\n\n", [b"a\nb"]),
        (b"data: unfinished", []),
    ],
)
def test_priming_events_comments_and_bare_ids_carry_no_message(stream: bytes, messages: list[bytes]) -> None:
    decoder = SSEDecoder()
    got = [ev.data for ev in decoder.feed(stream) if ev.data is not None]
    assert got == messages
    assert not any(ev.is_message for ev in SSEDecoder().feed(b"id: 1\ndata:\n\n"))


def test_an_event_larger_than_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=16)
    with pytest.raises(SSEError):
        decoder.feed(b"data: " + b"x" * 32)
