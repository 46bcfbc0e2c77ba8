"""Secrets: every labelled credential in the corpus found with its kind and span, every look-alike clean, and
the constructor's contract (kinds, entropy switch, custom patterns), PEM spans, offsets, neighbouring values."""

from __future__ import annotations

import itertools

import pytest

from agentgw.guardrails.detectors.secrets import KINDS, Secrets
from tests.guardrails.corpus import (
    KNOWN_FALSE_POSITIVES,
    KNOWN_MISSES,
    SECRET_NEGATIVES,
    SECRET_POSITIVES,
    SPANS,
    rates,
)

DETECTOR = Secrets()
POSITIVES = [p for p in SECRET_POSITIVES if p not in KNOWN_MISSES]
NEGATIVES = [n for n in SECRET_NEGATIVES if n not in KNOWN_FALSE_POSITIVES]
GITHUB = "ghp_FAKEexample0123456789abcdefABCDEF0123"


def spans(text: str, detector: Secrets = DETECTOR) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in detector.find(text)]


@pytest.mark.parametrize(("text", "kind"), POSITIVES, ids=[f"{k}-{i}" for i, (_, k) in enumerate(POSITIVES)])
def test_every_labelled_credential_is_found_with_its_kind_covering_the_value(text: str, kind: str) -> None:
    start, end = SPANS[text]
    found = DETECTOR.find(text)
    assert any(f.kind == kind and f.start <= start and f.end >= end for f in found), spans(text)


@pytest.mark.parametrize("text", NEGATIVES, ids=[f"neg-{i}" for i in range(len(NEGATIVES))])
def test_a_benign_look_alike_is_not_reported(text: str) -> None:
    assert DETECTOR.find(text) == [], spans(text)


def test_the_corpus_detection_rate_is_at_least_95_percent_and_false_positives_at_most_5() -> None:
    assert len(SECRET_POSITIVES) >= 40 and len(SECRET_NEGATIVES) >= 40
    scores = rates(DETECTOR, SECRET_POSITIVES, SECRET_NEGATIVES)
    assert scores["detection"] >= 0.95
    assert scores["false_positive"] <= 0.05


def test_a_private_key_block_is_spanned_from_begin_to_end() -> None:
    text = "cfg:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAKCAQEA\n-----END RSA PRIVATE KEY-----\nnext line"
    assert spans(text) == [("private_key", text[5 : text.index("\nnext")])]


def test_a_private_key_header_without_its_end_is_masked_to_the_end_of_its_line() -> None:
    text = "-----BEGIN PRIVATE KEY-----MIIEow\nrest of the message"
    assert spans(text) == [("private_key", "-----BEGIN PRIVATE KEY-----MIIEow")]


def test_a_service_account_json_is_one_finding_covering_its_private_key() -> None:
    text = 'creds = {"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n"} ok'
    assert spans(text) == [("gcp_service_account", text[8 : text.index("} ok") + 1])]


def test_a_password_assignment_masks_the_value_and_keeps_the_key() -> None:
    assert spans('password="Tr0ub4dor&3"') == [("password_assignment", "Tr0ub4dor&3")]
    assert spans("Password: hunter2.") == [("password_assignment", "hunter2")]


def test_high_entropy_tokens_are_not_reported_when_entropy_is_off() -> None:
    text = "api secret Zx8Qp2Lm9Rt4Vw7Yb3Nc6Kd1Hf5Gj0 and " + GITHUB
    assert [k for k, _ in spans(text)] == ["high_entropy", "github_token"]
    assert spans(text, Secrets(entropy=False)) == [("github_token", GITHUB)]


def test_a_specific_kind_wins_over_high_entropy_on_the_same_span() -> None:
    assert spans("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") == [
        ("aws_secret_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    ]


def test_only_the_requested_kinds_are_looked_for() -> None:
    text = "AKIAIOSFODNN7EXAMPLE " + GITHUB
    assert spans(text, Secrets(["github_token"])) == [("github_token", GITHUB)]


def test_an_unknown_kind_is_refused_with_the_valid_ones_listed() -> None:
    with pytest.raises(ValueError, match="ssh_key") as err:
        Secrets(["jwt", "ssh_key"])
    for kind in KINDS:
        assert kind in str(err.value)


def test_a_custom_pattern_is_reported_under_its_own_name() -> None:
    detector = Secrets([], patterns={"internal_token": r"itk_[a-z0-9]{12}"})
    assert spans("use itk_abc123def456 here", detector) == [("internal_token", "itk_abc123def456")]


def test_a_custom_pattern_that_does_not_compile_is_refused() -> None:
    with pytest.raises(ValueError, match="bad"):
        Secrets(patterns={"bad": "[z-a]"})


def test_offsets_are_python_string_indices_in_unicode_text() -> None:
    text = "🔑 鍵は" + GITHUB + "です。パスワード password: Tokyo2024pass"
    assert spans(text) == [("github_token", GITHUB), ("password_assignment", "Tokyo2024pass")]


def test_adjacent_credentials_are_reported_separately_in_order() -> None:
    text = "AKIAIOSFODNN7EXAMPLE," + GITHUB + ";sk_live_FAKE51HxYzExample0123456789"
    assert [k for k, _ in spans(text)] == ["aws_access_key", "github_token", "stripe_key"]
    found = DETECTOR.find(text)
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))


def test_a_long_token_blob_reports_each_token_once_and_not_the_run_of_one_letter() -> None:
    text = ("Zx8Qp2Lm9Rt4Vw7Yb3Nc6Kd1Hf5Gj0 " * 300) + "a" * 100_000
    found = DETECTOR.find(text)
    assert len(found) == 300
    assert {f.kind for f in found} == {"high_entropy"}
    assert found[-1].end < len(text) - 100_000
