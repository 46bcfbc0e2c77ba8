"""The guardrails engine: which guards a rule applies, and what block, mask, pseudonymize and warn do to a text;
the sliding window over streamed text."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agentgw.guardrails.config import GuardrailSettings
from agentgw.guardrails.engine import GuardBlocked, Guardrails, Plan, Tally, Vault
from agentgw.guardrails.stream import StreamGuard

MAIL = "Write to bob@example.com today."


def engine(**cfg: Any) -> Guardrails:
    return Guardrails(GuardrailSettings.model_validate(cfg))


def only(e: Guardrails, name: str) -> Plan:
    return Plan((e.guards[name],), ())


def test_a_guard_named_after_its_type_needs_no_type_key() -> None:
    e = engine(guards={"sensitive-data": {"action": "mask"}})
    assert e.guards["sensitive-data"].kind == "sensitive_data"


def test_an_unknown_guard_type_or_an_undefined_guard_in_a_rule_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="unknown guard type"):
        GuardrailSettings.model_validate({"guards": {"pii": {"action": "mask"}}})
    with pytest.raises(ValidationError, match="undefined guards"):
        GuardrailSettings.model_validate({"guards": {"secrets": {}}, "rules": [{"guards": ["nope"]}]})
    with pytest.raises(ValidationError, match="can block or warn"):
        GuardrailSettings.model_validate({"guards": {"prompt-injection": {"action": "mask"}}})


def test_a_custom_pattern_that_does_not_compile_names_its_guard() -> None:
    with pytest.raises(ValueError, match=r"guardrails\.guards\.pii"):
        engine(guards={"pii": {"type": "sensitive_data", "patterns": {"x": "("}}})


def test_rules_pick_guards_by_plane_direction_target_and_role() -> None:
    e = engine(
        guards={"sensitive-data": {"action": "mask"}, "secrets": {}},
        rules=[
            {"guards": ["secrets"], "direction": "request"},
            {"guards": ["sensitive-data"], "planes": ["llm"], "targets": ["llm:gpt-*"], "roles": ["interns"]},
        ],
    )
    names = lambda p: [g.name for g in p.patterns] if p else []  # noqa: E731
    assert names(e.plan("llm", "request", "llm:gpt-4o", ("interns",))) == ["secrets", "sensitive-data"]
    assert names(e.plan("llm", "request", "llm:gpt-4o", ("agents",))) == ["secrets"]
    assert names(e.plan("llm", "request", "llm:claude", ("interns",))) == ["secrets"]
    assert names(e.plan("mcp", "request", "mcp:fs/read", ("interns",))) == ["secrets"]
    assert names(e.plan("llm", "response", "llm:gpt-4o", ("interns",))) == ["sensitive-data"]
    assert e.plan("mcp", "response", "mcp:fs/read", ("interns",)) is None


def test_mask_gives_the_same_value_the_same_placeholder() -> None:
    e = engine(guards={"sensitive-data": {"action": "mask"}})
    vault, tally = Vault(), Tally()
    text = "bob@example.com, ann@example.org and bob@example.com again"
    out = e.scan(only(e, "sensitive-data"), text, "request", vault, tally)
    assert out == "<EMAIL_1>, <EMAIL_2> and <EMAIL_1> again"
    assert dict(tally.hits[("request", "sensitive-data", "mask")]) == {"email": 3}
    assert vault.restore(out) == out  # masked values are not kept


def test_pseudonymize_keeps_the_values_to_give_them_back() -> None:
    e = engine(guards={"sensitive-data": {"action": "pseudonymize"}})
    vault = Vault()
    out = e.scan(only(e, "sensitive-data"), MAIL, "request", vault, Tally())
    assert "bob@example.com" not in out and "<EMAIL_1>" in out
    assert vault.restore("I wrote to <EMAIL_1> and <EMAIL_9>.") == "I wrote to bob@example.com and <EMAIL_9>."


def test_block_raises_with_the_stable_code_and_no_value() -> None:
    e = engine(guards={"sensitive-data": {}, "secrets": {}})
    with pytest.raises(GuardBlocked) as caught:
        e.scan(only(e, "sensitive-data"), MAIL, "request", Vault(), Tally())
    assert caught.value.code == "sensitive_data" and caught.value.status == 400
    assert "bob@" not in caught.value.message and "email" in caught.value.message
    with pytest.raises(GuardBlocked) as caught:
        e.scan(only(e, "secrets"), "key AKIAIOSFODNN7EXAMPLE here", "request", Vault(), Tally())
    assert caught.value.code == "sensitive_data" and caught.value.kinds == ("aws_access_key",)


def test_warn_leaves_the_text_as_it_is_and_counts() -> None:
    e = engine(guards={"sensitive-data": {"action": "warn"}})
    tally = Tally()
    assert e.scan(only(e, "sensitive-data"), MAIL, "request", Vault(), tally) == MAIL
    assert dict(tally.hits[("request", "sensitive-data", "warn")]) == {"email": 1}


def stream(sg: StreamGuard, pieces: list[str]) -> str:
    return "".join(sg.feed(0, p) for p in pieces) + sg.close(0)


def test_a_value_split_across_tiny_chunks_is_masked_whole() -> None:
    e = engine(guards={"sensitive-data": {"action": "mask"}}, window=32)
    text = "Hello there, my friend. " * 3 + "Mail bob@example.com and ann@example.org. " + "Bye now. " * 5
    sg = StreamGuard(e, only(e, "sensitive-data"), Vault(), Tally())
    out = stream(sg, [text[i : i + 2] for i in range(0, len(text), 2)])
    assert out == text.replace("bob@example.com", "<EMAIL_1>").replace("ann@example.org", "<EMAIL_2>")


def test_a_blocked_value_in_a_stream_is_refused_before_any_of_it_is_sent() -> None:
    e = engine(guards={"secrets": {}}, window=64)
    text = "Here is the key you asked for: AKIAIOSFODNN7EXAMPLE and more words after it."
    sg = StreamGuard(e, only(e, "secrets"), Vault(), Tally())
    sent: list[str] = []

    def feed_all() -> None:
        for i in range(0, len(text), 3):
            sent.append(sg.feed(0, text[i : i + 3]))

    with pytest.raises(GuardBlocked):
        feed_all()  # decided once a few characters follow the key, before the stream ends
    assert "AKIA" not in "".join(sent)


def test_a_blocked_value_at_the_end_of_a_stream_is_refused_when_it_closes() -> None:
    e = engine(guards={"secrets": {}}, window=64)
    sg = StreamGuard(e, only(e, "secrets"), Vault(), Tally())
    sent = [sg.feed(0, piece) for piece in ("The key: AKIAIOSF", "ODNN7EXAMPLE")]
    with pytest.raises(GuardBlocked):
        sg.close(0)
    assert sent == ["", ""]


def test_a_benign_text_whose_prefix_looks_like_a_value_passes_a_stream_whole() -> None:
    e = engine(guards={"sensitive-data": {}}, window=16)
    text = "See the picture image icon@2x.png in the folder assets/img for the high resolution version."
    sg = StreamGuard(e, only(e, "sensitive-data"), Vault(), Tally())
    out = "".join(sg.feed(0, text[i : i + 1]) for i in range(len(text))) + sg.close(0)
    assert out == text


def test_placeholders_split_across_chunks_are_restored_in_a_stream() -> None:
    e = engine(guards={"sensitive-data": {"action": "pseudonymize"}}, window=16)
    vault = Vault()
    e.scan(only(e, "sensitive-data"), MAIL, "request", vault, Tally())
    answer = "Sure, I will write to <EMAIL_1> right away, as you asked me to."
    sg = StreamGuard(e, None, vault, Tally())
    out = stream(sg, [answer[i : i + 1] for i in range(len(answer))])
    assert out == answer.replace("<EMAIL_1>", "bob@example.com")


def test_channels_are_held_apart() -> None:
    e = engine(guards={"sensitive-data": {"action": "mask"}}, window=16)
    sg = StreamGuard(e, only(e, "sensitive-data"), Vault(), Tally())
    a = "first bob@example.com one two three four"
    b = "second choice without anything in it at all"
    outs = {0: "", 1: ""}
    for i in range(0, 44, 4):
        outs[0] += sg.feed(0, a[i : i + 4])
        outs[1] += sg.feed(1, b[i : i + 4])
    assert sorted(map(str, sg.channels())) == ["0", "1"]
    outs[0] += sg.close(0)
    outs[1] += sg.close(1)
    assert outs == {0: a.replace("bob@example.com", "<EMAIL_1>"), 1: b}
