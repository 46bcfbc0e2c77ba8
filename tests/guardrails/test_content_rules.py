"""Content rules: every deny-word evasion in the corpus caught with the exact original span, every word that
merely contains one left alone, named and unnamed regexes, leetspeak off, merging, and the cost of a
1,000-entry deny list."""

from __future__ import annotations

import itertools

import pytest

from agentgw.guardrails.detectors.content import ContentRules
from agentgw.guardrails.findings import Finding
from tests.guardrails.corpus_injection import CONTENT_DENY, CONTENT_NEGATIVES, CONTENT_POSITIVES, SPANS, rates

RULES = ContentRules(CONTENT_DENY)


def found(text: str, rules: ContentRules = RULES) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in rules.find(text)]


@pytest.mark.parametrize(
    ("text", "kind"), CONTENT_POSITIVES, ids=[f"pos-{i}" for i in range(len(CONTENT_POSITIVES))]
)
def test_a_deny_word_written_to_dodge_the_filter_is_caught_with_its_original_span(
    text: str, kind: str
) -> None:
    assert [(f.kind, f.start, f.end) for f in RULES.find(text)] == [(kind, *SPANS[text])], found(text)


@pytest.mark.parametrize("text", CONTENT_NEGATIVES, ids=[f"neg-{i}" for i in range(len(CONTENT_NEGATIVES))])
def test_a_word_that_only_contains_a_deny_word_is_left_alone(text: str) -> None:
    assert RULES.find(text) == [], found(text)


def test_deny_rules_catch_at_least_90_percent_with_at_most_5_percent_false_positives() -> None:
    scored = rates(RULES, CONTENT_POSITIVES, CONTENT_NEGATIVES)
    assert scored["detection"] >= 0.9
    assert scored["false_positive"] <= 0.05


def test_a_deny_word_spelled_with_a_cyrillic_letter_is_caught() -> None:
    assert found("this is bаd", ContentRules(["bad"])) == [("deny", "bаd")]


def test_entries_are_folded_like_the_texts_they_are_matched_on() -> None:
    rules = ContentRules(["FÓRBIDDEN", "Ｐｒｏｊｅｃｔ  Falcon"])
    assert found("forbidden project falcon", rules) == [("deny", "forbidden"), ("deny", "project falcon")]


def test_neighbouring_deny_words_are_each_reported() -> None:
    assert found("forbidden forbidden,forbidden") == [("deny", "forbidden")] * 3


def test_the_longer_of_two_entries_starting_at_one_place_wins() -> None:
    rules = ContentRules(["bad", "bad word"])
    assert found("a bad word and a bad day", rules) == [("deny", "bad word"), ("deny", "bad")]


def test_an_entry_in_a_script_without_spaces_matches_inside_a_run_of_text() -> None:
    assert found("これは秘密です", ContentRules(["秘密"])) == [("deny", "秘密")]


def test_a_named_regex_reports_its_name_and_the_original_span() -> None:
    rules = ContentRules(regex={"ticket": r"tkt-\d{3,}"})
    text = "see ТКТ-12345 now"  # Cyrillic capitals
    assert found(text, rules) == [("ticket", "ТКТ-12345")]


def test_regexes_are_case_insensitive_and_unnamed_ones_report_regex() -> None:
    assert found("ACCT 123456", ContentRules(regex=[r"acct \d{6}"])) == [("regex", "ACCT 123456")]


def test_regexes_do_not_see_the_leetspeak_fold() -> None:
    rules = ContentRules(regex={"code": r"\bid-\d+\b"})
    assert found("id-1337", rules) == [("code", "id-1337")]


def test_a_bad_regex_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="content rule 'broken'"):
        ContentRules(regex={"broken": "(unclosed"})


def test_without_leetspeak_digits_are_not_letters_but_look_alikes_and_spelling_still_are() -> None:
    rules = ContentRules(["forbidden"], leetspeak=False)
    assert found("f0rbidden", rules) == []
    assert found("fоrbidden f.o.r.b.i.d.d.e.n", rules) == [
        ("deny", "fоrbidden"),
        ("deny", "f.o.r.b.i.d.d.e.n"),
    ]


def test_overlapping_findings_merge_into_one_span() -> None:
    rules = ContentRules(["project falcon"], regex={"bird": r"falcon \w+"})
    assert found("the project falcon launch", rules) == [("deny", "project falcon launch")]


def test_no_rules_and_empty_texts_find_nothing() -> None:
    assert ContentRules().find("anything at all") == []
    assert RULES.find("") == []


def test_findings_are_sorted_and_never_overlap() -> None:
    text = " ".join(t for t, _ in CONTENT_POSITIVES)
    out = RULES.find(text)
    assert len(out) == len(CONTENT_POSITIVES)
    assert all(a.end <= b.start for a, b in itertools.pairwise(out))
    assert all(isinstance(f, Finding) and f.score == 1.0 for f in out)
