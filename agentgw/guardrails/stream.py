"""Guards over a stream: each channel's text (an LLM choice, an A2A artifact) passes a sliding window, so a value
is masked whole and a blocked one is never sent. A plane's relay feeds deltas and sends back what comes out."""

from __future__ import annotations

from collections.abc import Hashable

from agentgw.guardrails.engine import PLACEHOLDER_MAX, Guard, Guardrails, Plan, Tally, Vault, apply
from agentgw.guardrails.findings import Finding


class StreamGuard:
    """One streamed answer. `feed(channel, delta)` returns the text that may be sent now (masked, pseudonyms
    restored), holding back the last `window` characters and any value that reaches into them; `close(channel)`
    returns what was held. Both raise GuardBlocked when a blocking guard fires: the relay ends the stream the way
    its protocol ends a filtered one, and nothing of the blocked value was sent.

    A finding is acted on only once LOOKAHEAD characters follow it (or the channel closes): a prefix of a benign
    text can look like a value (`icon@2x.pn` before the `g`, `ignore the above` before ` error`), and the
    characters after it are what tell them apart, as they do when the whole text is scanned at once. A block
    is decided then, without waiting for the window to move past the value; a mask when its text is sent."""

    LOOKAHEAD = 16

    __slots__ = ("_bufs", "engine", "plan", "tally", "vault", "window")

    def __init__(
        self, engine: Guardrails, plan: Plan | None, vault: Vault, tally: Tally, window: int | None = None
    ) -> None:
        self.engine, self.plan, self.vault, self.tally = engine, plan, vault, tally
        self.window = window if window is not None else engine.window
        self._bufs: dict[Hashable, str] = {}

    def feed(self, channel: Hashable, delta: str) -> str:
        buf = self._bufs.get(channel, "") + delta
        if len(buf) <= self.window:
            self._bufs[channel] = buf
            if self.plan is not None and self.plan.patterns:
                self._block([(g, g.find(buf)) for g in self.plan.patterns], len(buf) - self.LOOKAHEAD)
            return ""
        return self._drain(channel, buf, len(buf) - self.window)

    def close(self, channel: Hashable) -> str:
        buf = self._bufs.pop(channel, "")
        return self._drain(channel, buf, len(buf), final=True) if buf else ""

    def channels(self) -> list[Hashable]:
        """The channels still holding text (to flush when a stream ends without closing them)."""
        return [c for c, b in self._bufs.items() if b]

    def _drain(self, channel: Hashable, buf: str, cut: int, final: bool = False) -> str:
        plan = self.plan
        found = [(g, g.find(buf)) for g in plan.patterns] if plan is not None else []
        self._block(found, len(buf) if final else len(buf) - self.LOOKAHEAD)
        if not final:
            moved = True
            while moved:  # never cut through a value: hold back all of it (and whatever it then overlaps)
                moved = False
                for _, findings in found:
                    for f in findings:
                        if f.start < cut < f.end:
                            cut, moved = f.start, True
            if self.vault.keeps:  # nor through a placeholder still to be restored
                lt = buf.rfind("<", max(0, cut - PLACEHOLDER_MAX), cut)
                if lt != -1 and ">" not in buf[lt:cut]:
                    cut = lt
        if final:
            self._bufs.pop(channel, None)
        else:
            self._bufs[channel] = buf[cut:]
        # each guard acts, in configuration order as on a whole text, on what it finds with the held-back rest as
        # context, for the spans that end in what is sent now
        text, end = buf, cut
        for guard, findings in found:
            if text is not buf:
                findings = guard.find(text)  # an earlier guard masked: find again in what it left
            settled = [f for f in findings if f.end <= end] if not final else findings
            if settled:
                head = apply(guard, text[:end], settled, "response", self.vault, self.tally)
                if head != text[:end]:
                    text, end = head + text[end:], len(head)
        return self.vault.restore(text[:end])

    def _block(self, found: list[tuple[Guard, list[Finding]]], upto: int) -> None:
        """GuardBlocked when a blocking guard found a value that ends by `upto` (enough text follows it)."""
        for guard, findings in found:
            if guard.action == "block" and (decided := [f for f in findings if f.end <= upto]):
                apply(guard, "", decided, "response", self.vault, self.tally)
