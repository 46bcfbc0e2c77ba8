"""Authorization policy: the only module that imports casbin. Loads `model.conf` + `policy.csv`, decides
(subject, object, action) with the subject's roles, explains which policy line decided, caches decisions,
and reloads atomically when the files change (a broken file keeps the last good policy).

Subjects and roles never share a name space: the Casbin request names the caller `user:<subject>` and each
of its roles `role:<name>`; every policy line must say which it means (a bare name is refused, see
`policy_problems`), so a subject called `admins` can never match `p, role:admins, …`.

Objects: `llm:<model>`, `mcp:<server>/<tool>`, `mcp:<server>/resource/<uri>`, `mcp:<server>/prompt/<name>`,
`a2a:<agent>`. In policy lines `*` matches any run of characters (`/` included) and `?` one character;
`tag:<name>` matches every object carrying that registry tag. Default deny.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import casbin

from agentgw.names import ROLE, USER, ambiguous, request_names

log = logging.getLogger("agentgw.policy")


class PolicyError(ValueError):
    """The policy file has lines that do not load (one problem per line, `line N: …`)."""


def _typed(name: str) -> str | None:
    """The problem with a policy-side name (`user:<subject>` or `role:<name>`), or None."""
    if not name.startswith((USER, ROLE)):
        return f"{name!r} names neither a subject nor a role: write {USER}{name} or {ROLE}{name}"
    rest = name.partition(":")[2]
    if not rest:
        return f"{name!r} has an empty name"
    return ambiguous(rest, repr(name))


def policy_problems(path: Path) -> list[str]:
    """Lines whose subject or role is not typed: `p` lines name `user:<subject>` or `role:<name>`; `g` lines
    grant a role (`role:<name>`) to a subject or to another role. A bare name is refused rather than guessed:
    read as a role, a subject of that name would inherit it; read as a subject, a role's rules would vanish."""
    problems: list[str] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        values = [v.strip() for v in text.strip().split(",")]
        kind = values[0]
        if kind.startswith("#") or kind not in ("p", "g") or len(values) < 2:
            continue
        names = values[1:3] if kind == "g" else values[1:2]
        found = [why for why in map(_typed, names) if why]
        if kind == "g" and len(names) == 2 and not found and not names[1].startswith(ROLE):
            found.append(f"{names[1]!r} is a subject: only a role can be granted ({ROLE}<name>)")
        problems.extend(f"line {number}: {why}" for why in found)
    return problems


def policy_roles(path: Path) -> set[str]:
    """Every role name the policy file mentions (without its prefix), to refuse subjects that share one."""
    roles: set[str] = set()
    for text in path.read_text(encoding="utf-8").splitlines():
        values = [v.strip() for v in text.strip().split(",")]
        if values[0] in ("p", "g"):
            names = values[1:3] if values[0] == "g" else values[1:2]
            roles.update(n[len(ROLE) :] for n in names if n.startswith(ROLE) and len(n) > len(ROLE))
    return roles


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    allowed: bool
    rule: str | None  # the deciding policy line, as written (None: no rule matched, default deny)
    line: int | None  # its line number in the policy file


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


def _csv_rows(path: Path) -> dict[tuple[str, ...], tuple[int, str]]:
    """policy values → (line number, line text), to name the line that decided."""
    rows: dict[tuple[str, ...], tuple[int, str]] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        values = tuple(v.strip() for v in stripped.split(","))
        if values[0].startswith("p"):
            rows.setdefault(values[1:], (number, stripped))
    return rows


class PolicyEngine:
    """One loaded policy. Immutable once built; a reload builds a new engine and swaps it in."""

    def __init__(
        self, model_path: Path, policy_path: Path, tags: Mapping[str, frozenset[str]] | None = None
    ) -> None:
        self.model_path = model_path
        self.policy_path = policy_path
        self.tags: Mapping[str, frozenset[str]] = tags or {}
        problems = policy_problems(policy_path)
        if problems:
            raise PolicyError("; ".join(problems))
        self.enforcer = casbin.Enforcer(str(model_path), str(policy_path))
        self.enforcer.logger.setLevel(logging.ERROR)  # casbin logs every decision at INFO/WARNING otherwise
        self.enforcer.add_function("objMatch", lambda obj, pat: object_match(obj, pat, self.tags))
        self.rows = _csv_rows(policy_path)
        self._cache: dict[tuple[str | None, tuple[str, ...], str, str], PolicyDecision] = {}
        self.lines = sum(1 for _ in self.rows)
        # casbin scans every `p` line per decision; index them by subject so a decision only evaluates the
        # lines of the subject and the roles it inherits through `g` (the same set g(r.sub, p.sub) selects).
        self._assertion = self.enforcer.model.model["p"]["p"]
        self._all = list(self._assertion.policy)
        self._by_sub: dict[str, list[list[str]]] = {}
        for row in self._all:
            self._by_sub.setdefault(row[0], []).append(row)

    def _enforce(self, who: str, obj: str, act: str) -> tuple[bool, list[str]]:
        names = [who, *self.enforcer.get_implicit_roles_for_user(who)]
        rows = [row for name in dict.fromkeys(names) for row in self._by_sub.get(name, ())]
        self._assertion.policy = rows
        try:
            ok, rule = self.enforcer.enforce_ex(who, obj, act)
        finally:
            self._assertion.policy = self._all
        return bool(ok), list(rule)

    def _explain(self, allowed: bool, rule: list[str]) -> PolicyDecision:
        if not rule:
            return PolicyDecision(allowed, None, None)
        number, text = self.rows.get(tuple(rule), (None, "p, " + ", ".join(rule)))
        return PolicyDecision(allowed, text, number)

    def decide(self, subject: str | None, roles: tuple[str, ...], obj: str, act: str) -> PolicyDecision:
        """Allowed iff the subject or one of its roles is allowed and none is explicitly denied. `subject`
        None decides for the roles alone (`agentgw policy check role:<name> …`)."""
        key = (subject, roles, obj, act)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        allow: PolicyDecision | None = None
        decision = PolicyDecision(False, None, None)
        for who in request_names(subject, roles):
            ok, rule = self._enforce(who, obj, act)
            if not ok and rule and rule[-1] == "deny":
                decision = self._explain(False, rule)
                break
            if ok and allow is None:
                allow = self._explain(True, rule)
        else:
            if allow is not None:
                decision = allow
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = decision
        return decision


@dataclass
class PolicyStore:
    """Holds the current engine; reloads on file change or SIGHUP; keeps the last good engine on errors."""

    model_path: Path
    policy_path: Path
    tags: Mapping[str, frozenset[str]] = field(default_factory=dict)
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
            engine.decide("__probe__", (), "llm:__probe__", "call")  # a broken matcher fails here, not later
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("policy not reloaded, keeping the last good policy: %s", self.error)
            with contextlib.suppress(OSError):
                self._mtimes = self._stat()
            return False
        self.engine, self.error, self._mtimes = engine, None, mtimes
        log.info("policy loaded: %d rules from %s", engine.lines, self.policy_path)
        return True

    def changed(self) -> bool:
        try:
            return self._stat() != self._mtimes
        except OSError:
            return False

    def decide(self, subject: str | None, roles: tuple[str, ...], obj: str, act: str) -> PolicyDecision:
        if self.engine is None:
            return PolicyDecision(False, None, None)
        return self.engine.decide(subject, roles, obj, act)

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
