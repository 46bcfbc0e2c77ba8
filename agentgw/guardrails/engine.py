"""The guardrails engine: builds the configured guards, picks the ones a rule applies to a call (plane, direction,
target, role; cached), and applies them to texts: block (GuardBlocked), mask (`<EMAIL_1>`), pseudonymize (mask,
remembering the value so the answer can be given back with it) or warn. What each guard did is tallied by kind
and count, never by value, for the audit record and /metrics."""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentgw.errors import GatewayError
from agentgw.guardrails.config import GuardrailSettings, GuardSpec, SystemPrompt, guard_type
from agentgw.guardrails.findings import Detector, Finding

if TYPE_CHECKING:
    from agentgw.guardrails.external import HttpGuard

CODES = {
    "sensitive_data": "sensitive_data",
    "secrets": "sensitive_data",
    "prompt_injection": "prompt_injection",
    "content": "content_blocked",
    "http": "content_blocked",
}
_WHAT = {
    "sensitive_data": "sensitive data",
    "secrets": "a secret",
    "prompt_injection": "a prompt injection",
    "content": "content the gateway's rules do not allow",
    "http": "content the gateway's classifier does not allow",
}
_PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")
PLACEHOLDER_MAX = 48  # longest placeholder a stream may hold back while waiting for its end


class GuardBlocked(GatewayError):
    """A guard refused the content: 400 with a stable code (`sensitive_data`, `prompt_injection`,
    `content_blocked`). A denial on the record (not an error): the caller sent, or was sent, what the rules
    forbid."""

    status, code, type = 400, "content_blocked", "invalid_request_error"
    denial = True

    def __init__(self, guard: str, kind: str, direction: str, kinds: Iterable[str] = ()) -> None:
        found = sorted(set(kinds))
        where = "request" if direction == "request" else "response"
        msg = (
            f"The gateway's guardrails blocked this {where}: it carries {_WHAT.get(kind, 'blocked content')}"
        )
        msg += f" ({', '.join(found)})." if found else "."
        super().__init__(msg, code=CODES.get(kind, "content_blocked"))
        self.guard, self.kind, self.direction, self.kinds = guard, kind, direction, tuple(found)


@dataclass(slots=True)
class Guard:
    """One configured guard: a pattern detector (synchronous) or an external classifier (`http`)."""

    name: str
    kind: str
    action: str
    detector: Detector | None = None
    http: HttpGuard | None = None

    def find(self, text: str) -> list[Finding]:
        return self.detector.find(text) if self.detector is not None else []


@dataclass(frozen=True, slots=True)
class Plan:
    """The guards a call meets in one direction, pattern guards first (in configuration order), then classifiers."""

    patterns: tuple[Guard, ...]
    classifiers: tuple[Guard, ...]


class Vault:
    """One call's placeholders: the same value gets the same placeholder (`<EMAIL_1>` twice for one address);
    values of pseudonymized kinds are kept (in memory, for this call only) to restore them in the answer."""

    __slots__ = ("_by_value", "_counts", "_values")

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: Counter[str] = Counter()
        self._values: dict[str, str] = {}

    def placeholder(self, kind: str, value: str, keep: bool) -> str:
        label = re.sub(r"[^A-Z0-9]+", "_", kind.upper()).strip("_") or "VALUE"
        if not label[0].isalpha():
            label = "V_" + label
        key = (label, value)
        ph = self._by_value.get(key)
        if ph is None:
            self._counts[label] += 1
            ph = f"<{label}_{self._counts[label]}>"
            self._by_value[key] = ph
        if keep:
            self._values[ph] = value
        return ph

    @property
    def keeps(self) -> bool:
        return bool(self._values)

    def restore(self, text: str) -> str:
        """`text` with every kept placeholder replaced by its value (others left as they are)."""
        if not self._values or "<" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: self._values.get(m.group(0), m.group(0)), text)


@dataclass(slots=True)
class Tally:
    """What the guards did during one call: (direction, guard, action) → kind → count; and classifier errors."""

    hits: dict[tuple[str, str, str], Counter[str]] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (direction, guard, error)

    def add(self, direction: str, guard: Guard, findings: Sequence[Finding] | Iterable[str]) -> None:
        kinds = [f.kind if isinstance(f, Finding) else f for f in findings]
        self.hits.setdefault((direction, guard.name, guard.action), Counter()).update(kinds)


class Guardrails:
    """The configured guards and rules. Building a guard validates its patterns (a config error, not a 500)."""

    def __init__(self, cfg: GuardrailSettings, session: Callable[[], Any] | None = None) -> None:
        """`session`: where classifier guards get their aiohttp session (the gateway's upstream pool)."""
        self.cfg = cfg
        self.window = cfg.window
        self.guards = {name: build_guard(name, spec, session) for name, spec in cfg.guards.items()}
        self.prompts = tuple(cfg.prompts)
        self._plans: dict[tuple[str, str, str, tuple[str, ...]], Plan | None] = {}

    @property
    def active(self) -> bool:
        return bool(self.cfg.rules) or bool(self.prompts)

    def plan(self, plane: str, direction: str, target: str, roles: Sequence[str]) -> Plan | None:
        """The guards that apply, or None when none do (the common case costs one dict lookup)."""
        key = (plane, direction, target, tuple(roles))
        try:
            return self._plans[key]
        except KeyError:
            pass
        names: list[str] = []
        for rule in self.cfg.rules:
            if plane not in rule.planes or rule.direction not in (direction, "both"):
                continue
            if rule.roles and not set(rule.roles) & set(roles):
                continue
            if not any(fnmatch.fnmatchcase(target, pat) for pat in rule.targets):
                continue
            names += [n for n in rule.guards if n not in names]
        guards = [self.guards[n] for n in names]
        plan = (
            Plan(
                tuple(g for g in guards if g.http is None),
                tuple(g for g in guards if g.http is not None),
            )
            if guards
            else None
        )
        if len(self._plans) > 10_000:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def scan(self, plan: Plan, text: str, direction: str, vault: Vault, tally: Tally) -> str:
        """`text` after the pattern guards: masked where a guard masks; GuardBlocked where one blocks."""
        for guard in plan.patterns:
            findings = guard.find(text)
            if findings:
                text = apply(guard, text, findings, direction, vault, tally)
        return text

    async def classify(self, plan: Plan, texts: Sequence[str], direction: str, tally: Tally) -> None:
        """Ask the external classifiers about `texts` (one request per guard); GuardBlocked when one flags them
        and blocks. A classifier that failed is on the tally; its `fail` setting decided whether it flagged."""
        if not texts:
            return
        for guard in plan.classifiers:
            assert guard.http is not None
            verdict = await guard.http.check(texts)
            if verdict.error is not None:
                tally.errors.append((direction, guard.name, verdict.error))
            if verdict.flagged:
                kinds = verdict.kinds or ((verdict.error,) if verdict.error else ("flagged",))
                tally.add(direction, guard, kinds)
                if guard.action == "block":
                    raise GuardBlocked(guard.name, guard.kind, direction, kinds)

    def prompts_for(self, model: str, roles: Sequence[str]) -> list[SystemPrompt]:
        return [
            p
            for p in self.prompts
            if any(fnmatch.fnmatchcase(model, m) for m in p.models)
            and (not p.roles or bool(set(p.roles) & set(roles)))
        ]

    async def aclose(self) -> None:
        for guard in self.guards.values():
            if guard.http is not None:
                await guard.http.aclose()


def apply(
    guard: Guard, text: str, findings: Sequence[Finding], direction: str, vault: Vault, tally: Tally
) -> str:
    """`text` after `guard` acted on `findings` (spans of `text`): tallied, then blocked, masked or left."""
    tally.add(direction, guard, findings)
    if guard.action == "block":
        raise GuardBlocked(guard.name, guard.kind, direction, (f.kind for f in findings))
    if guard.action == "warn":
        return text
    keep = guard.action == "pseudonymize"
    out, last = [], 0
    for f in findings:
        if f.start < last:
            continue  # overlapping spans: the first one masks the value
        out.append(text[last : f.start])
        out.append(vault.placeholder(f.kind, text[f.start : f.end], keep))
        last = f.end
    out.append(text[last:])
    return "".join(out)


def build_guard(name: str, spec: GuardSpec, session: Callable[[], Any] | None = None) -> Guard:
    """The guard `spec` describes; ValueError naming the guard for a bad pattern or kind."""
    kind = guard_type(name, spec)
    try:
        if kind == "sensitive_data":
            from agentgw.guardrails.detectors.sensitive import SensitiveData

            return Guard(name, kind, spec.action, SensitiveData(spec.entities, spec.patterns))
        if kind == "secrets":
            from agentgw.guardrails.detectors.secrets import Secrets

            return Guard(name, kind, spec.action, Secrets(spec.kinds, spec.entropy, spec.patterns))
        if kind == "prompt_injection":
            from agentgw.guardrails.detectors.injection import PromptInjection

            return Guard(name, kind, spec.action, PromptInjection(spec.threshold, spec.allow_hosts))
        if kind == "content":
            from agentgw.guardrails.detectors.content import ContentRules

            return Guard(name, kind, spec.action, ContentRules(spec.deny, spec.regex, spec.leetspeak))
        from agentgw.guardrails.external import HttpGuard

        assert spec.url is not None
        http = HttpGuard(
            name,
            spec.url,
            kind=spec.api,
            timeout_s=spec.timeout_s,
            fail=spec.fail,
            headers=spec.headers,
            categories=spec.categories,
            threshold=spec.score,
            model=spec.model,
            session_factory=session,
        )
        return Guard(name, kind, spec.action, http=http)
    except (ValueError, re.error) as exc:
        raise ValueError(f"guardrails.guards.{name}: {exc}") from None


def summary(counts: Mapping[str, int]) -> str:
    """`email×2, phone×1`: kinds and counts, the only trace of what a guard found."""
    return ", ".join(f"{k}×{n}" for k, n in sorted(counts.items()))
