"""Console sessions: a signed-in principal behind an opaque cookie (HttpOnly, SameSite=Strict), with the CSRF
token every state-changing request must echo. Held in this process's memory: a restart signs everyone out."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from agentgw.exchange import Principal

COOKIE = "agentgw_console"
CSRF_HEADER = "x-csrf-token"
_MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    principal: Principal
    csrf: str
    created: float
    seen: float = field(default=0.0)


class Sessions:
    """Sessions by id. `idle_s`: signed out after this long unused; `max_s`: after this long whatever happens."""

    def __init__(self, idle_s: float = 1800.0, max_s: float = 8 * 3600.0) -> None:
        self.idle_s, self.max_s = idle_s, max_s
        self._by_id: dict[str, Session] = {}

    def create(self, principal: Principal) -> tuple[str, Session]:
        now = time.monotonic()
        if len(self._by_id) >= _MAX_SESSIONS:
            self._expire(now)
            while len(self._by_id) >= _MAX_SESSIONS:  # still full: the oldest goes
                del self._by_id[next(iter(self._by_id))]
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), now, now)
        self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session `sid` names (its idle clock restarted), or None."""
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > self.idle_s or now - session.created > self.max_s:
            del self._by_id[sid]
            return None
        session.seen = now
        return session

    def end(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def _expire(self, now: float) -> None:
        for sid, s in list(self._by_id.items()):
            if now - s.seen > self.idle_s or now - s.created > self.max_s:
                del self._by_id[sid]


def cookie_value(headers: dict[str, str], name: str = COOKIE) -> str | None:
    """The value of cookie `name` in a request's Cookie header, or None."""
    raw = headers.get("cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip() or None
    return None


def csrf_ok(session: Session, headers: dict[str, str]) -> bool:
    """Whether a state-changing request carries the session's CSRF token (a cross-site form cannot set it)."""
    given = headers.get(CSRF_HEADER, "")
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())
