"""API keys: only hashes are stored; the key store follows the keys file as it changes (new keys at once,
removed keys within the check interval, a broken file keeps the last good keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgw.keys import KeyStore, append_key, fingerprint, generate_key, hash_key
from agentgw.settings import load_settings
from tests.support import MOCK_REGISTRY, TEST_KEY, sha, write_config


def store(tmp: Path, interval: float = 0.0) -> tuple[KeyStore, Path]:
    settings = load_settings(write_config(tmp, MOCK_REGISTRY))
    return KeyStore(settings, check_interval_s=interval), settings.keys_path()


def subject(keys: KeyStore, key: str) -> str | None:
    hit = keys.lookup(key)
    return hit[0].subject if hit else None


def test_generated_keys_are_unique_and_only_their_hash_identifies_them() -> None:
    a, b = generate_key(), generate_key()
    assert a != b and a.startswith("agw-") and len(a) > 40
    assert hash_key(a) == sha(a)
    assert fingerprint(hash_key(a)) == hash_key(a)[:12]


def test_a_key_appended_to_the_file_is_accepted_with_its_subject_roles_and_fingerprint(
    tmp_path: Path,
) -> None:
    keys, path = store(tmp_path)
    key = append_key(path, "ci", ["agents", "ops"], name="ci key")
    hit = keys.lookup(key)
    assert hit is not None
    principal, loopback_only = hit
    assert (principal.subject, principal.roles, principal.key_id) == (
        "ci",
        ("agents", "ops"),
        hash_key(key)[:12],
    )
    assert loopback_only is False


def test_a_key_removed_from_the_file_stops_working(tmp_path: Path) -> None:
    keys, path = store(tmp_path)
    kept, removed = append_key(path, "kept", []), append_key(path, "removed", [])
    assert (subject(keys, kept), subject(keys, removed)) == ("kept", "removed")
    path.write_text(f"- {{subject: kept, sha256: {hash_key(kept)}}}\n")
    assert (subject(keys, kept), subject(keys, removed)) == ("kept", None)
    assert subject(keys, TEST_KEY) == "tester"  # keys in agentgw.yaml are not affected


def test_a_known_key_does_not_recheck_the_file_within_the_interval(tmp_path: Path) -> None:
    keys, path = store(tmp_path, interval=3600)
    key = append_key(path, "a", [])
    assert subject(keys, key) == "a"  # unknown → checked at once
    path.write_text("[]\n")
    assert subject(keys, key) == "a"  # known → the file is re-checked at most once an interval


@pytest.mark.parametrize("broken", ["- {subject: x}\n", "[unclosed\n", "just text\n"])
def test_a_broken_keys_file_keeps_the_last_good_keys(tmp_path: Path, broken: str) -> None:
    keys, path = store(tmp_path)
    key = append_key(path, "a", [])
    assert subject(keys, key) == "a"
    path.write_text(broken)
    assert subject(keys, key) == "a"
    assert subject(keys, "agw-unknown") is None


def test_deleting_the_keys_file_leaves_only_the_keys_in_the_config(tmp_path: Path) -> None:
    keys, path = store(tmp_path)
    key = append_key(path, "a", [])
    assert subject(keys, key) == "a"
    path.unlink()
    assert subject(keys, key) is None
    assert subject(keys, TEST_KEY) == "tester"


def test_keys_present_at_load_time_work_before_any_reload(tmp_path: Path) -> None:
    write_config(tmp_path, MOCK_REGISTRY)
    key = append_key(tmp_path / "keys.yaml", "early", [])
    keys = KeyStore(load_settings(tmp_path / "agentgw.yaml"), check_interval_s=3600)
    assert subject(keys, key) == "early"
