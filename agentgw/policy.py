"""Authorization policy: the only module that imports casbin. Loads `model.conf` + `policy.csv`, decides
(subject, object, action) with the subject's roles, explains which policy line decided, caches decisions,
and reloads atomically when the files change (a broken file keeps the last good policy).

Subjects and roles never share a name space: the Casbin request names the caller `user:<subject>` and each
of its roles `role:<name>`. Policy lines write `user:<subject>` or `role:<name>`, and a bare name is a role
(`names.policy_name`), so a subject called `admins` can never match `p, admins, …` nor `p, role:admins, …`.

Objects: `llm:<model>`, `mcp:<server>/<tool>`, `mcp:<server>/resource/<uri>`, `mcp:<server>/prompt/<name>`,
`a2a:<agent>`. In policy lines `*` matches any run of characters (`/` included) and `?` one character;
`tag:<name>` matches every object carrying that registry tag. Default deny.

Lines are `p, <subject or role>, <object>, <action>, <effect>[, <condition>]`: casbin's matcher selects the lines
that match; the strictest applying one decides (deny > approve > confirm > allow). A condition (CEL, see
agentgw.conditions) makes its line apply only when it holds, and fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import casbin
from casbin.persist.adapters import FileAdapter

from agentgw.conditions import Condition, ConditionError, compile_condition, evaluate
from agentgw.names import ROLE, USER, ambiguous, policy_name, request_names

log = logging.getLogger("agentgw.policy")


class PolicyError(ValueError):
    """The policy file has lines that do not load (one problem per line, `line N: …`)."""


def _names(path: Path) -> Iterator[tuple[int, str, int, str]]:
    """(line number, `p` or `g`, position, name as written) of every subject or role name in the policy file:
    a `p` line's first value, a `g` line's first two (the member, then the role it is granted)."""
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        values = [v.strip() for v in text.strip().split(",")]
        kind = values[0]
        if kind in ("p", "g") and len(values) >= 2:
            for position, name in enumerate(values[1:3] if kind == "g" else values[1:2]):
                yield number, kind, position, name


def _malformed(name: str, granted: bool) -> str | None:
    """The problem with a policy-side name (`user:<subject>`, `role:<name>` or a bare role name), or None."""
    if not name.startswith((USER, ROLE)):
        return "a subject or role name is empty" if not name else None
    rest = name.partition(":")[2]
    if not rest:
        return f"{name!r} has an empty name"
    if granted and name.startswith(USER):
        return f"{name!r} is a subject: only a role can be granted ({ROLE}<name> or a bare name)"
    return ambiguous(rest, repr(name))


def policy_problems(path: Path) -> list[str]:
    """Lines that do not load, in line order: an empty name, a doubled prefix (`user:role:x`), a subject granted
    as a role (`g, user:a, user:b`), a `p` line without an effect, an effect that is not allow, deny, approve or
    confirm, a condition that does not compile. A bare name is a role, as in every policy written before the
    prefixes."""
    names = [
        f"line {number}: {why}"
        for number, kind, position, name in _names(path)
        if (why := _malformed(name, kind == "g" and position == 1))
    ]
    return sorted(names + _parse(path)[2], key=_line_number)


def bare_subjects(path: Path, subjects: Collection[str]) -> list[str]:
    """Bare names that are also the subject of a configured key: a bare name is a role, so the line does not apply
    to that subject (a policy written for it before the prefixes silently stops granting it anything).
    `check-config` reports them (exit 3); `serve` loads the policy and logs them."""
    found = []
    for number, kind, position, name in _names(path):
        if name in subjects:  # a bare name: a typed one is never a key subject (keys refuse the prefixes)
            if kind == "g" and position == 1:
                found.append(f"{name!r} in line {number} is a role, and a key subject too: rename one")
            else:
                found.append(
                    f"{name!r} in line {number} is read as a role; the key subject {name} is not in it: "
                    f"write {USER}{name}"
                )
    return found


def policy_roles(path: Path, *, bare: bool = True) -> set[str]:
    """Every role name the policy file mentions (without its prefix), to refuse subjects that share one;
    `bare=False`: only those written `role:<name>`."""
    roles: set[str] = set()
    for _, _, _, name in _names(path):
        if name.startswith(ROLE) and len(name) > len(ROLE):
            roles.add(name[len(ROLE) :])
        elif bare and name and not name.startswith(USER):
            roles.add(name)
    return roles


# In order of strictness: among the applying lines the strictest wins.
EFFECTS = ("allow", "confirm", "approve", "deny")
_RANK = {effect: rank for rank, effect in enumerate(EFFECTS)}


@dataclass(frozen=True, slots=True)
class Rule:
    """One `p` line as written: `p, <subject or role>, <object>, <action>, <effect>[, <condition>]`."""

    line: int
    text: str
    sub: str  # in the request's name space (user:… / role:…)
    obj: str
    act: str
    effect: str
    condition: str | None = None
    compiled: Condition | None = field(default=None, compare=False, repr=False)


def _parse(path: Path) -> tuple[list[Rule], list[list[str]], list[str]]:
    """The `p` lines as Rules, every other policy line as casbin tokens, and the problems (`line N: …`).

    `p` lines are split here, not by casbin: the condition (the rest of the line after the fifth comma) may hold
    commas, also inside string literals, which casbin's tokenizer (top-level commas outside ()[]) would split."""
    rules: list[Rule] = []
    others: list[list[str]] = []
    problems: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        kind = text.split(",", 1)[0].strip()
        if kind != "p":
            others.append([v.strip() for v in text.split(",")])
            continue
        values = [v.strip() for v in text.split(",", 5)]
        if len(values) < 5:
            problems.append(
                f"line {number}: a p line is `p, <subject or role>, <object>, <action>, <effect>`"
            )
            continue
        effect = values[4]
        if effect not in _RANK:
            problems.append(f"line {number}: effect {effect!r} is not one of {', '.join(sorted(_RANK))}")
            continue
        condition = values[5] if len(values) > 5 and values[5] else None
        compiled = None
        if condition is not None:
            try:
                compiled = compile_condition(condition)
            except ConditionError as exc:
                problems.append(f"line {number}: {exc}")
                continue
        rules.append(
            Rule(number, text, policy_name(values[1]), values[2], values[3], effect, condition, compiled)
        )
    return rules, others, problems


class _TypedFileAdapter(FileAdapter):  # type: ignore[misc]  # casbin has no type hints
    """Hands casbin the parsed lines, every subject and role name put in the request's name space. `p` lines go
    in as (sub, obj, act, eft) without their condition: the engine evaluates conditions itself."""

    def __init__(self, path: str, rules: list[Rule], others: list[list[str]]) -> None:
        super().__init__(path)
        self.rules, self.others = rules, others

    def load_policy(self, model: Any) -> None:
        for rule in self.rules:
            model.model["p"]["p"].policy.append([rule.sub, rule.obj, rule.act, rule.effect])
        for tokens in self.others:
            key = tokens[0]
            if key[:1] in model.model and key in model.model[key[:1]]:
                row = tokens[1:]
                if key[:1] == "g":
                    row[:2] = [policy_name(name) for name in row[:2]]
                model.model[key[:1]][key].policy.append(row)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The outcome: `effect` is allow | deny | approve | confirm; `allowed` is `effect != "deny"` (approve and
    confirm are allowed once their hold is passed, so listings show those targets)."""

    allowed: bool
    rule: str | None  # the deciding policy line, as written (None: no rule matched, default deny)
    line: int | None  # its line number in the policy file
    effect: str = ""
    # conditional lines that matched but did not apply (condition false, or an allow whose condition failed), and
    # conditions that failed (`line N: error`), for the refusal's message and the audit record
    unmet: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.effect:
            object.__setattr__(self, "effect", "allow" if self.allowed else "deny")
        elif self.allowed != (self.effect != "deny"):
            raise ValueError(f"allowed={self.allowed} contradicts effect {self.effect!r}")

    @classmethod
    def of(
        cls, rule: Rule | None, unmet: tuple[int, ...] = (), errors: tuple[str, ...] = ()
    ) -> PolicyDecision:
        if rule is None:
            return cls(False, None, None, "deny", unmet, errors)
        return cls(rule.effect != "deny", rule.text, rule.line, rule.effect, unmet, errors)


DENY = PolicyDecision(False, None, None, "deny")


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.DOTALL)


def object_match(obj: str, pattern: str, tags: Mapping[str, frozenset[str]]) -> bool:
    if pattern.startswith("tag:"):
        return pattern[4:] in tags.get(obj, frozenset())
    if "*" not in pattern and "?" not in pattern:
        return obj == pattern
    return _glob(pattern).fullmatch(obj) is not None


def strictest(rules: Iterable[Rule]) -> Rule | None:
    """The strictest rule (deny > approve > confirm > allow; the first written among equals), or None."""
    best: Rule | None = None
    for rule in rules:
        if best is None or _RANK[rule.effect] > _RANK[best.effect]:
            best = rule
    return best


class PolicyEngine:
    """One loaded policy. Immutable once built; a reload builds a new engine and swaps it in.

    casbin decides which lines match (its model's matcher, with the subject's roles through `g`); the engine
    then picks the strictest matching line. The lines that match a (subject, roles, object, action) are cached."""

    def __init__(
        self, model_path: Path, policy_path: Path, tags: Mapping[str, frozenset[str]] | None = None
    ) -> None:
        self.model_path = model_path
        self.policy_path = policy_path
        self.tags: Mapping[str, frozenset[str]] = tags or {}
        problems = policy_problems(policy_path)
        if problems:
            raise PolicyError("; ".join(problems))
        rules, others, _ = _parse(policy_path)
        self.rules = rules
        self.enforcer = casbin.Enforcer(str(model_path), _TypedFileAdapter(str(policy_path), rules, others))
        self.enforcer.logger.setLevel(logging.ERROR)  # casbin logs every decision at INFO/WARNING otherwise
        self.enforcer.add_function("objMatch", lambda obj, pat: object_match(obj, pat, self.tags))
        # casbin parses the matcher into a new evaluator on every enforce (most of its cost); the engine asks one
        # line at a time, so keep one evaluator per matcher text. Safe: an engine's functions (objMatch, and `g`
        # over its role manager) never change, and each evaluation sets its own names.
        self._expressions: dict[str, Any] = {}
        self.enforcer._get_expression = self._expression
        self.lines = len(rules)
        self._cache: dict[tuple[str | None, tuple[str, ...], str, str], tuple[Rule, ...]] = {}
        self._decisions: dict[tuple[str | None, tuple[str, ...], str, str], PolicyDecision] = {}
        # Index the lines by subject so matching only evaluates the lines of the subject and the roles it
        # inherits through `g` (the same set g(r.sub, p.sub) selects).
        self._assertion = self.enforcer.model.model["p"]["p"]
        self._all = list(self._assertion.policy)
        self._by_sub: dict[str, list[Rule]] = {}
        for rule in rules:
            self._by_sub.setdefault(rule.sub, []).append(rule)

    def _expression(self, expr: str, functions: Mapping[str, Any] | None = None) -> Any:
        hit = self._expressions.get(expr)
        if hit is None:
            hit = self._expressions[expr] = casbin.Enforcer._get_expression(expr, functions)
        return hit

    def _matches(self, who: str, rule: Rule, obj: str, act: str) -> bool:
        """Does casbin's matcher select this line for (who, obj, act)? Asked with the line alone, its effect
        read as allow (the effect is the engine's to weigh, not casbin's)."""
        self._assertion.policy = [[rule.sub, rule.obj, rule.act, "allow"]]
        try:
            return bool(self.enforcer.enforce(who, obj, act))
        finally:
            self._assertion.policy = self._all

    def probe(self) -> None:
        """Run the matcher once, so a model whose matcher does not evaluate fails at load, not on a request."""
        self._matches(
            USER + "__probe__", Rule(0, "", USER + "__probe__", "llm:*", "call", "allow"), "llm:x", "call"
        )

    def matching(self, subject: str | None, roles: tuple[str, ...], obj: str, act: str) -> tuple[Rule, ...]:
        """Every line that applies to the subject or one of its roles for (obj, act), conditions not evaluated."""
        key = (subject, roles, obj, act)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found: dict[int, Rule] = {}
        for who in request_names(subject, roles):
            names = [who, *self.enforcer.get_implicit_roles_for_user(who)]
            for name in dict.fromkeys(names):
                for rule in self._by_sub.get(name, ()):
                    if rule.line not in found and self._matches(who, rule, obj, act):
                        found[rule.line] = rule
        rules = tuple(found[n] for n in sorted(found))
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = rules
        return rules

    def decide(
        self,
        subject: str | None,
        roles: tuple[str, ...],
        obj: str,
        act: str,
        facts: Mapping[str, Any] | None = None,
        listing: bool = False,
    ) -> PolicyDecision:
        """The strictest applying line of the subject and its roles decides (deny > approve > confirm > allow); no
        applying line: deny. `subject` None decides for the roles alone (`agentgw policy check role:<name> …`).

        A conditional line applies when its condition holds over `facts` (`args`, `principal`, `task`, `target`;
        without facts, only `principal` and `target` are known). A condition that fails (a missing argument, a
        wrong type) fails closed: a conditional allow does not apply, a conditional deny, approve or confirm does.
        `listing`: would some arguments make it callable? A conditional allow (approve, confirm) applies and a
        conditional deny is ignored. Only decisions that involve no condition are cached."""
        key = (subject, roles, obj, act)
        hit = self._decisions.get(key)  # only decisions that involve no condition are here
        if hit is not None:
            return hit
        rules = self.matching(subject, roles, obj, act)
        if not any(rule.compiled is not None for rule in rules):
            hit = PolicyDecision.of(strictest(rules))
            if len(self._decisions) > 100_000:
                self._decisions.clear()
            self._decisions[key] = hit
            return hit
        if facts is None:
            facts = {"principal": {"sub": subject, "roles": list(roles), "claims": {}}, "target": obj}
        applying: list[Rule] = []
        unmet: list[int] = []
        errors: list[str] = []
        for rule in rules:
            if rule.compiled is None:
                holds = True
            elif listing:
                holds = rule.effect != "deny"
            else:
                try:
                    holds = evaluate(rule.compiled, facts)
                except ConditionError as exc:
                    holds = rule.effect != "allow"  # fail closed: never an allow by mistake
                    errors.append(f"line {rule.line}: {exc}")
            if holds:
                applying.append(rule)
            else:
                unmet.append(rule.line)
        return PolicyDecision.of(strictest(applying), tuple(unmet), tuple(errors))


def _line_number(problem: str) -> int:
    number = problem.removeprefix("line ").partition(":")[0]
    return int(number) if number.isdigit() else 0


@dataclass
class PolicyStore:
    """Holds the current engine; reloads on file change or SIGHUP; keeps the last good engine on errors. Each load
    logs a warning for every bare (role) name that is also one of `subjects`, the configured key subjects."""

    model_path: Path
    policy_path: Path
    tags: Mapping[str, frozenset[str]] = field(default_factory=dict)
    subjects: frozenset[str] = frozenset()
    engine: PolicyEngine | None = None
    error: str | None = None
    _mtimes: tuple[float, float] | None = None
    _task: asyncio.Task[None] | None = None

    def _stat(self) -> tuple[float, float]:
        return (self.model_path.stat().st_mtime, self.policy_path.stat().st_mtime)

    def load(self) -> bool:
        """(Re)build the engine. On failure keep the previous one, log one clear error, remember it for /readyz."""
        try:
            mtimes = self._stat()
            engine = PolicyEngine(self.model_path, self.policy_path, self.tags)
            engine.probe()  # a broken matcher fails here, not later
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("policy not reloaded, keeping the last good policy: %s", self.error)
            with contextlib.suppress(OSError):
                self._mtimes = self._stat()
            return False
        self.engine, self.error, self._mtimes = engine, None, mtimes
        log.info("policy loaded: %d rules from %s", engine.lines, self.policy_path)
        for warning in bare_subjects(self.policy_path, self.subjects):
            log.warning("policy %s: %s", self.policy_path, warning)
        return True

    def changed(self) -> bool:
        try:
            return self._stat() != self._mtimes
        except OSError:
            return False

    def decide(
        self,
        subject: str | None,
        roles: tuple[str, ...],
        obj: str,
        act: str,
        facts: Mapping[str, Any] | None = None,
        listing: bool = False,
    ) -> PolicyDecision:
        if self.engine is None:
            return DENY
        return self.engine.decide(subject, roles, obj, act, facts, listing)

    async def watch(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if self.changed():
                self.load()

    async def start(self, interval_s: float = 1.0) -> None:
        self._task = asyncio.create_task(self.watch(interval_s), name="policy-watch")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def status(self) -> dict[str, Any]:
        return {
            "loaded": self.engine is not None,
            "error": self.error,
            "rules": self.engine.lines if self.engine else 0,
        }
