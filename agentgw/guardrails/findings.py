"""What a detector reports: a Finding per span of a text it objects to, and the Detector protocol every pattern
guard implements (pure, synchronous, no I/O: the engine runs them on the hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detector found in a text: which kind (`email`, `aws_access_key`, `instruction_override`, a
    custom pattern's name, …), where (`text[start:end]`, offsets into the text the detector was given, so a mask
    replaces exactly that span), and how sure or how heavy (`score`, 0..1; pattern hits with a checksum are 1).
    The matched value itself is never stored here: audit records and metrics carry kinds and counts only."""

    kind: str
    start: int
    end: int
    score: float = 1.0


class Detector(Protocol):
    """A pattern guard's core: every finding in `text`, in order of `start`, spans not overlapping."""

    def find(self, text: str) -> list[Finding]: ...
