"""Reading one YAML config file the gateway's way: strict YAML (no duplicate keys, no arbitrary objects),
`${VAR}` / `${VAR:-default}` interpolation, and every problem reported as `file: key.path: what`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

_ENV = re.compile(r"\$(\$)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def interpolate(node: Any, file: str, problems: list[Problem], loc: tuple[Any, ...] = ()) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string value; `$$` is a literal `$`.

    `${VAR:-default}` uses the default when VAR is unset or empty. An unset `${VAR}` (no default) is a problem
    naming the variable; the reference is left in place so it causes no second, confusing problem.
    """
    if isinstance(node, dict):
        return {k: interpolate(v, file, problems, (*loc, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, file, problems, (*loc, i)) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name, default = m.group(2), m.group(3)
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            problems.append(Problem(file, key_path(loc), f"environment variable {name} is not set"))
            return m.group(0)
        return value

    return _ENV.sub(sub, node)


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges may be overridden; that is their purpose
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, problems: list[Problem]) -> Any:
    try:
        with path.open("rb") as fh:
            return yaml.load(fh, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except FileNotFoundError:
        problems.append(Problem(str(path), "", "file not found"))
    except IsADirectoryError:
        problems.append(Problem(str(path), "", "is a directory, not a file"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problems.append(Problem(str(path), where, f"invalid YAML: {getattr(exc, 'problem', None) or exc}"))
    except OSError as exc:
        problems.append(Problem(str(path), "", f"cannot read: {exc.strerror}"))
    return None


def validation_problems(file: str, err: ValidationError, prefix: tuple[Any, ...] = ()) -> Iterator[Problem]:
    for e in err.errors(include_url=False):
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        loc = tuple(p for p in (*prefix, *e["loc"]) if not (isinstance(p, str) and p.startswith("function-")))
        yield Problem(file, key_path(loc), msg)


def interpolated(
    data: Any, file: str, problems: list[Problem], loc: tuple[Any, ...] = ()
) -> tuple[Any, set[str]]:
    """Interpolate; also return the key paths of unset variables (their validation errors would be noise)."""
    before = len(problems)
    data = interpolate(data, file, problems, loc)
    return data, {p.path for p in problems[before:]}


def add_problems(problems: list[Problem], found: Iterator[Problem], unset: set[str]) -> None:
    """Add the problems that are not at the key path of an unset variable (already reported, by name)."""
    problems.extend(p for p in found if p.path not in unset)
