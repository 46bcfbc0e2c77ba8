"""SensitiveData: every labelled value in the corpus found with its kind and span, every look-alike clean, and
the constructor's contract (entities, custom patterns, errors), offsets in Unicode text, neighbouring values."""

from __future__ import annotations

import itertools

import pytest

from agentgw.guardrails.detectors.sensitive import KINDS, SensitiveData
from agentgw.guardrails.findings import Finding
from tests.guardrails.corpus import (
    KNOWN_FALSE_POSITIVES,
    KNOWN_MISSES,
    SENSITIVE_NEGATIVES,
    SENSITIVE_POSITIVES,
    SPANS,
    rates,
)

DETECTOR = SensitiveData()
POSITIVES = [p for p in SENSITIVE_POSITIVES if p not in KNOWN_MISSES]
NEGATIVES = [n for n in SENSITIVE_NEGATIVES if n not in KNOWN_FALSE_POSITIVES]


def spans(text: str, detector: SensitiveData = DETECTOR) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in detector.find(text)]


@pytest.mark.parametrize(("text", "kind"), POSITIVES, ids=[f"{k}-{i}" for i, (_, k) in enumerate(POSITIVES)])
def test_every_labelled_personal_value_is_found_with_its_kind_covering_the_value(
    text: str, kind: str
) -> None:
    start, end = SPANS[text]
    found = DETECTOR.find(text)
    assert any(f.kind == kind and f.start <= start and f.end >= end for f in found), spans(text)


@pytest.mark.parametrize("text", NEGATIVES, ids=[f"neg-{i}" for i in range(len(NEGATIVES))])
def test_a_benign_look_alike_is_not_reported(text: str) -> None:
    assert DETECTOR.find(text) == [], spans(text)


def test_the_corpus_detection_rate_is_at_least_95_percent_and_false_positives_at_most_5() -> None:
    assert len(SENSITIVE_POSITIVES) >= 60 and len(SENSITIVE_NEGATIVES) >= 60
    scores = rates(DETECTOR, SENSITIVE_POSITIVES, SENSITIVE_NEGATIVES)
    assert scores["detection"] >= 0.95
    assert scores["false_positive"] <= 0.05


def test_a_card_number_that_fails_luhn_is_not_reported() -> None:
    assert spans("card 4111 1111 1111 1111") == [("card", "4111 1111 1111 1111")]
    assert spans("card 4111 1111 1111 1112") == []


def test_a_luhn_valid_number_with_a_length_its_issuer_never_uses_is_not_a_card() -> None:
    # 37… is Amex, always 15 digits; this 18-digit run is the tail of an IBAN with a bad checksum.
    assert spans("3704 0044 0532 0130 01") == []


def test_a_finding_is_a_kind_and_a_span_without_the_value() -> None:
    (finding,) = DETECTOR.find("mail jane@example.com")
    assert finding == Finding("email", 5, 21, 1.0)


def test_only_the_requested_entities_are_looked_for() -> None:
    text = "jane@example.com 4111 1111 1111 1111 +44 20 7946 0958"
    assert [k for k, _ in spans(text, SensitiveData(["card"]))] == ["card"]
    assert [k for k, _ in spans(text, SensitiveData(["email", "phone"]))] == ["email", "phone"]
    assert SensitiveData([]).find(text) == []


def test_an_unknown_entity_name_is_refused_with_the_valid_ones_listed() -> None:
    with pytest.raises(ValueError, match="passport") as err:
        SensitiveData(["email", "passport"])
    for kind in KINDS:
        assert kind in str(err.value)


def test_a_custom_pattern_is_reported_under_its_own_name() -> None:
    detector = SensitiveData(["email"], patterns={"employee_id": r"EMP-\d{6}"})
    assert spans("ticket by EMP-004211 (jane@example.com)", detector) == [
        ("employee_id", "EMP-004211"),
        ("email", "jane@example.com"),
    ]


def test_a_custom_pattern_that_does_not_compile_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="broken"):
        SensitiveData(patterns={"broken": "(unclosed"})


def test_a_custom_pattern_that_matches_empty_text_reports_nothing() -> None:
    assert SensitiveData([], patterns={"maybe": r"x*"}).find("abc") == []


def test_offsets_are_python_string_indices_in_unicode_text() -> None:
    text = "😀 連絡先は📧taro@example.jpです、電話は+81 3-1234-5678、カード4111111111111111。"
    found = DETECTOR.find(text)
    assert [(f.kind, text[f.start : f.end]) for f in found] == [
        ("email", "taro@example.jp"),
        ("phone", "+81 3-1234-5678"),
        ("card", "4111111111111111"),
    ]


def test_a_custom_pattern_keeps_string_offsets_after_astral_characters() -> None:
    text = "🎉🎉 EMP-004211"
    (finding,) = SensitiveData([], patterns={"employee_id": r"EMP-\d{6}"}).find(text)
    assert text[finding.start : finding.end] == "EMP-004211"


def test_adjacent_values_are_reported_separately_in_order() -> None:
    text = "a@example.com,b@example.org;203.0.113.7,198.51.100.23"
    assert spans(text) == [
        ("email", "a@example.com"),
        ("email", "b@example.org"),
        ("ip", "203.0.113.7"),
        ("ip", "198.51.100.23"),
    ]


def test_overlapping_candidates_become_one_finding_the_longest_span_winning() -> None:
    # The custom pattern covers the e-mail's domain; the e-mail is longer, so it alone is reported.
    detector = SensitiveData(patterns={"corp_domain": r"example\.com"})
    assert spans("write to jane@example.com", detector) == [("email", "jane@example.com")]
    found = detector.find("x@example.com example.com")
    assert [f.kind for f in found] == ["email", "corp_domain"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))


def test_a_value_at_the_very_start_or_end_of_the_text_is_found() -> None:
    assert spans("4111111111111111") == [("card", "4111111111111111")]
    assert spans("+49 30 901820") == [("phone", "+49 30 901820")]


def test_a_page_of_spaced_digits_gives_ordered_values_that_never_overlap() -> None:
    text = "1 2 3 4 5 6 7 8 9 0 " * 2000
    found = DETECTOR.find(text)
    assert found
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
