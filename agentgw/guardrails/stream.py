"""Guards over a stream: each channel's text (an LLM choice, an A2A artifact) passes a sliding window, so a value
is masked whole and a blocked one is never sent. A plane's relay feeds deltas and sends back what comes out."""

from __future__ import annotations

from collections.abc import Hashable

from agentgw.guardrails.engine import PLACEHOLDER_MAX, Guard, Guardrails, Plan, Tally, Vault


class StreamGuard:
    """One streamed answer. `feed(channel, delta)` returns the text that may be sent now (masked, pseudonyms
    restored), holding back the last `window` characters and any value that reaches into them; `close(channel)`
    returns what was held. Both raise GuardBlocked when a blocking guard fires: the relay ends the stream the way
    its protocol ends a filtered one, and nothing of the blocked value was sent."""

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
                self._check(buf)  # block as soon as the value is there, even before it is due to be sent
            return ""
        return self._drain(channel, buf, len(buf) - self.window)

    def close(self, channel: Hashable) -> str:
        buf = self._bufs.pop(channel, "")
        return self._drain(channel, buf, len(buf), final=True) if buf else ""

    def channels(self) -> list[Hashable]:
        """The channels still holding text (to flush when a stream ends without closing them)."""
        return [c for c, b in self._bufs.items() if b]

    def _check(self, buf: str) -> None:
        assert self.plan is not None
        for guard in self.plan.patterns:
            if guard.action == "block":
                self.engine.scan(_only(guard), buf, "response", self.vault, Tally())

    def _drain(self, channel: Hashable, buf: str, cut: int, final: bool = False) -> str:
        plan = self.plan
        if not final and plan is not None:
            for guard in plan.patterns:  # never cut through a value: hold back all of it
                for f in guard.find(buf):
                    if f.start < cut < f.end:
                        cut = f.start
        if not final and self.vault.keeps:  # nor through a placeholder still to be restored
            lt = buf.rfind("<", max(0, cut - PLACEHOLDER_MAX), cut)
            if lt != -1 and ">" not in buf[lt:cut]:
                cut = lt
        head, self._bufs[channel] = buf[:cut], buf[cut:]
        if final:
            self._bufs.pop(channel, None)
        if plan is not None and plan.patterns:
            # the held-back rest is checked too: a blocked value is refused before any of it is sent
            if not final and self._bufs[channel]:
                self._check(buf)
            head = self.engine.scan(plan, head, "response", self.vault, self.tally)
        return self.vault.restore(head)


def _only(guard: Guard) -> Plan:
    return Plan((guard,), ())
