"""Subject and role names: the typed name space of the Casbin request. A principal is decided as `user:<subject>`
and each of its roles as `role:<name>`, so a subject can never be mistaken for a role of the same name. Keys and
tokens carry names without prefix; a name that starts with one of the prefixes is refused where it is written.
Policy lines write `user:<subject>`, `role:<name>`, or a bare name, which is a role (`policy_name`)."""

from __future__ import annotations

USER = "user:"
ROLE = "role:"


def ambiguous(name: str, shown: str | None = None) -> str | None:
    """Why a subject or role name (as keys and tokens carry it, without prefix) could be read as the other kind."""
    for prefix in (USER, ROLE):
        if name.startswith(prefix):
            return f"{shown or repr(name)} is ambiguous: a name may not start with {prefix}"
    return None


def clash(subject: str, roles: set[str]) -> str | None:
    """Why a subject may not take this name: it is also a role's (harmless to the policy, which keeps them apart,
    but a reader of a policy line, an audit record or `policy check` could take one for the other)."""
    if subject in roles:
        return f"{subject!r} is also a role name: subjects and roles must not share a name"
    return None


def request_names(subject: str | None, roles: tuple[str, ...]) -> list[str]:
    """The Casbin subjects a principal is decided as: itself (typed `user:`) and each of its roles (`role:`)."""
    names = [USER + subject] if subject is not None else []
    names.extend(ROLE + r for r in roles)
    return names


def policy_name(name: str) -> str:
    """A subject or role name as a policy line writes it, in the request's name space: `user:<s>` and `role:<r>`
    stay as written and a bare name is a role (`p, admins, …` is `p, role:admins, …`), so role-based policies
    written before the prefixes keep their meaning, and a subject (always requested as `user:<s>`) never matches
    a bare name."""
    return name if name.startswith((USER, ROLE)) else ROLE + name


def parse_who(name: str) -> tuple[str | None, tuple[str, ...]]:
    """A name given on the command line or the admin API: `role:<r>` is the role alone, `user:<s>` or a bare
    name is the subject `s` (bare names always mean a subject, as in keys and tokens)."""
    if name.startswith(ROLE):
        return None, (name[len(ROLE) :],)
    return (name[len(USER) :] if name.startswith(USER) else name), ()
