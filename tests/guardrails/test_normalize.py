"""Folding for pattern guards: what normalize removes and maps, that every folded span leads back to the
original characters, the leetspeak and spelled-out folds, and the plain-ASCII fast path."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgw.guardrails.normalize import fold_evasions, leet_skeleton, normalize


def test_plain_ascii_is_lowercased_and_keeps_every_offset() -> None:
    n = normalize("Hello World")
    assert n.text == "hello world"
    assert n.span(6, 11) == (6, 11)


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("ＨＥＬＬＯ", "hello"),  # fullwidth
        ("𝐛𝐚𝐝 𝔟𝔞𝔡", "bad bad"),  # mathematical alphanumerics
        ("ﬁne ①", "fine 1"),  # ligature, circled digit
        ("bаd", "bad"),  # Cyrillic а
        ("ВАD ΗΕΥ", "bad hey"),  # Cyrillic and Greek capitals
        ("рοѕt іѕ ѕаfе", "post is safe"),
        ("fòrbíddén", "forbidden"),
        ("f̶o̶r̶b̶i̶d̶", "forbid"),  # strike-through marks
        ("Straße", "strasse"),
        ("don’t — ok", "don't - ok"),
    ],
)
def test_compatibility_forms_look_alikes_accents_and_case_fold_to_plain_lowercase(
    text: str, folded: str
) -> None:
    assert normalize(text).text == folded


@pytest.mark.parametrize(
    "invisible",
    [
        "\u200b",
        "\u200c",
        "\u200d",
        "\u2060",
        "\u00ad",
        "\ufeff",
        "\u202e",
        "\u2066",
        "\U000e0041",
        "\ufe0f",
        "\U000e0100",
    ],
)
def test_invisible_and_format_characters_are_removed(invisible: str) -> None:
    assert normalize(f"b{invisible}ad").text == "bad"


def test_a_span_over_removed_invisible_characters_covers_them() -> None:
    text = "say b\u200ba\u200bd now"
    n = normalize(text)
    start = n.text.index("bad")
    assert text[slice(*n.span(start, start + 3))] == "b\u200ba\u200bd"


def test_a_span_after_a_resized_character_still_lands_on_the_original_word() -> None:
    text = "Größe ﬁle straße bad"
    n = normalize(text)
    assert n.text == "grosse file strasse bad"
    start = n.text.index("bad")
    assert text[slice(*n.span(start, start + 3))] == "bad"
    start = n.text.index("file")
    assert text[slice(*n.span(start, start + 4))] == "ﬁle"


def test_an_accent_written_as_a_combining_mark_belongs_to_its_letters_span() -> None:
    text = "cafe\u0301 ok"
    n = normalize(text)
    assert n.text == "cafe ok"
    assert n.span(0, 4) == (0, 5)


def test_kana_voicing_marks_compose_like_nfkc() -> None:
    assert normalize("か\u3099").text == normalize("が").text == "が"


def test_an_empty_span_maps_to_a_position() -> None:
    n = normalize("a\u200bb")
    assert n.span(1, 1) == (2, 2)
    assert n.span(2, 2) == (3, 3)


@given(st.text(max_size=40))
def test_every_folded_span_maps_inside_the_original_in_order(text: str) -> None:
    n = normalize(text)
    previous = 0
    for i in range(len(n.text)):
        start, end = n.span(i, i + 1)
        assert 0 <= start < end <= len(text)
        assert start >= previous
        previous = start


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_folding_twice_changes_nothing(text: str) -> None:
    once = normalize(text).text
    assert normalize(once).text == once


@pytest.mark.parametrize(
    ("text", "skeleton"),
    [
        ("w0rd b@d $ecret h4x0r", "word bad secret haxor"),
        ("fa1con fal!con", "faicon faiicon"),  # 1, ! and l all read as i
        ("2024 10:30 v1.2", "2024 10:30 vi.2"),  # numbers stay; "v1" mixes letter and digit
        ("bad! hi|", "bad! hi|"),  # a closing ! or | is punctuation
        ("w0rd bad! hi| h!gh", "word bad! hi| high"),
    ],
)
def test_leetspeak_folds_only_tokens_that_mix_letters_with_digits_or_symbols(
    text: str, skeleton: str
) -> None:
    assert leet_skeleton(text) == skeleton.replace("l", "i")


@pytest.mark.parametrize(
    ("text", "collapsed"),
    [
        ("b.a.d", "bad"),
        ("b a d", "bad"),
        ("b-a-d and f_o_o", "bad and foo"),
        ("b . a . d", "bad"),
        ("p r o j e c t   f a l c o n", "project   faicon"),
    ],
)
def test_spelled_out_words_collapse_on_the_evasion_fold(text: str, collapsed: str) -> None:
    folded = fold_evasions(normalize(text))
    assert folded is not None
    assert folded.text == collapsed
    for m in re.finditer(r"\w+", folded.text):
        start, end = folded.span(m.start(), m.end())
        assert leet_skeleton(re.sub(r"[\W_]", "", text[start:end])) == m.group()
        assert text[start].isalnum() and text[end - 1].isalnum()


@pytest.mark.parametrize("text", ["a, b, and c", "x = a + b", "plain words only", "version 2024"])
def test_ordinary_text_has_no_evasion_fold(text: str) -> None:
    assert fold_evasions(normalize(text)) is None


def test_the_evasion_fold_without_leetspeak_only_collapses() -> None:
    folded = fold_evasions(normalize("b.a.d w0rd"), leet=False)
    assert folded is not None
    assert folded.text == "bad w0rd"
