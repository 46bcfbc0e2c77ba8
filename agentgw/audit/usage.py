"""Usage and spend over the audit records: the rollup both stores keep beside the chain (calls, tokens, cost,
denials and errors per dimension and time bucket, written in the same transaction as the records it counts),
the `/admin/usage` query's parameters, the SQL that reads the rollup, and the answer built from its rows.

Dimensions, all derived from the stored record (`kind: call` only; checkpoint and drop records are not calls):
`principal` (the record's subject), `plane`, `status` (ok, error, denied, cancelled), and one of `model` (an
`llm` record's target `llm:<model>`: the model name the caller asked for; `*` for the model listing and for
aggregated unauthenticated refusals), `tool` (an `mcp` record's target `mcp:<server>/<name>`, as
`<server>/<name>`: tools, and prompts and resources as `<server>/prompt/<name>`, `<server>/resource/<uri>`; `*`
for session-level operations) or `agent` (an `a2a` record's target `a2a:<agent>`). A missing value (an
unauthenticated call's principal, a request refused before its model was read) is the key null.

Buckets: every record counts in one minute, one hour and one day bucket (UTC, aligned to the epoch); a query reads
the coarsest buckets that tile its range, so a week by hour reads 168 buckets per key, not 10,080.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

GROUPS = ("principal", "model", "tool", "agent", "plane", "status")
GRAINS = (60, 3600, 86400)  # minute, hour, day
METRICS = ("calls", "input_tokens", "output_tokens", "total_tokens", "cost_nanos", "denied", "errors")
COLUMNS = ("grain", "dim", "bucket", "key", *METRICS)  # the rollup table's columns
MAX_BUCKETS = 5000
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
DEFAULT_RANGE = 86400  # without `since`: the last 24 hours
PAGE = 10_000  # records read per round when the rollup is built or pruned

_PLANE_DIM = {"llm": ("model", "llm:"), "mcp": ("tool", "mcp:"), "a2a": ("agent", "a2a:")}
_SPAN = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

RollupRow = tuple[int, str, int, str, int, int, int, int, int, int, int]  # in COLUMNS order


class BadUsageQuery(ValueError):
    pass


# -- writing: the rollup of a batch of records ------------------------------------------------------------------


def derived_dimension(plane: str, target: str) -> tuple[str, str] | None:
    """(model, tool or agent; its key) a record of `plane` with `target` counts under (None: neither)."""
    dim = _PLANE_DIM.get(plane)
    return (dim[0], target[len(dim[1]) :]) if dim is not None and target.startswith(dim[1]) else None


def rollup(records: Iterable[bytes | str], sign: int = 1) -> list[RollupRow]:
    """The rollup rows that count these records (stored record bytes; non-call records are skipped), each
    metric times `sign` (-1: the rows that take pruned records back out). Records are summed per minute and
    combination of dimensions first, then per dimension, and each grain is summed from the one below it, so a
    batch costs one parse and one dict update per record plus a few per distinct combination."""
    loads, bad = orjson.loads, orjson.JSONDecodeError
    combos: dict[tuple[int, str, str, str, str], list[int]] = {}
    for data in records:
        try:
            rec = loads(data)
        except bad:
            continue  # not a record this gateway wrote (verification names it); nothing to count
        if type(rec) is not dict or rec.get("kind") != "call":
            continue
        ts = rec.get("ts")
        if not isinstance(ts, int | float):
            continue
        usage = rec.get("usage") or {}
        cost = (rec.get("cost") or {}).get("usd")
        status = rec.get("status") or ""
        key = (
            int(ts // 60) * 60,
            rec.get("principal") or "",
            rec.get("plane") or "",
            status,
            rec.get("target") or "",
        )
        i, o, t = (
            usage.get("input_tokens") or 0,
            usage.get("output_tokens") or 0,
            usage.get("total_tokens") or 0,
        )
        c = round(cost * 1e9) if isinstance(cost, int | float) else 0
        m = combos.get(key)
        if m is None:
            combos[key] = [1, i, o, t, c, status == "denied", status == "error"]
        else:
            m[0] += 1
            m[1] += i
            m[2] += o
            m[3] += t
            m[4] += c
            m[5] += status == "denied"
            m[6] += status == "error"
    level: dict[tuple[str, int, str], list[int]] = {}
    for (minute, principal, plane, status, target), m in combos.items():
        _fold(level, ("principal", minute, principal), m)
        _fold(level, ("plane", minute, plane), m)
        _fold(level, ("status", minute, status), m)
        derived = derived_dimension(plane, target)
        if derived is not None:
            _fold(level, (derived[0], minute, derived[1]), m)
    out: list[RollupRow] = []
    for grain in GRAINS:
        if grain != GRAINS[0]:  # this grain's rows from the finer one's
            finer, level = level, {}
            for (dim, bucket, value), m in finer.items():
                _fold(level, (dim, bucket - bucket % grain, value), m)
        s = sign
        out.extend(
            (grain, d, b, k, s * m[0], s * m[1], s * m[2], s * m[3], s * m[4], s * int(m[5]), s * int(m[6]))
            for (d, b, k), m in level.items()
        )
    return out


def _fold(rows: dict[tuple[str, int, str], list[int]], key: tuple[str, int, str], m: list[int]) -> None:
    have = rows.get(key)
    if have is None:
        rows[key] = m[:]
    else:
        have[0] += m[0]
        have[1] += m[1]
        have[2] += m[2]
        have[3] += m[3]
        have[4] += m[4]
        have[5] += m[5]
        have[6] += m[6]


# -- reading: the query, its SQL, the answer ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageQuery:
    group_by: str
    since: int  # epoch seconds, a whole step (or minute) before which nothing counts
    until: int  # exclusive
    step: int | None  # seconds; None: one bucket for the whole range
    limit: int = DEFAULT_LIMIT  # groups shown; the rest are summed as `other`

    def buckets(self) -> list[int]:
        return list(range(self.since, self.until, self.step)) if self.step else [self.since]


def span(text: str, name: str) -> int:
    """`90s`, `5m`, `1h`, `7d`, `2w` → seconds."""
    m = _SPAN.match(text.strip())
    if m is None:
        raise BadUsageQuery(f"{name} must be like 5m, 1h, 1d or 1w, not {text!r}")
    return int(m.group(1)) * _UNIT[m.group(2)]


def moment(text: str, name: str, now: float) -> float:
    """`now`, a relative `24h` / `7d` (ago), or an ISO 8601 time (UTC unless it says otherwise) → epoch seconds."""
    text = text.strip()
    if text == "now":
        return now
    if _SPAN.match(text):
        return now - span(text, name)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadUsageQuery(f"{name} must be like 24h, 7d, now or an ISO 8601 time, not {text!r}") from None
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()


def usage_query(params: Mapping[str, str], now: float | None = None) -> UsageQuery:
    """The query from `/admin/usage` parameters. The range is widened to whole steps (without a step, whole
    minutes): `since` rounded down, `until` up, and the answer says which range it counted."""
    now = time.time() if now is None else now
    group_by = params.get("group_by") or "principal"
    if group_by not in GROUPS:
        raise BadUsageQuery(f"group_by must be one of {', '.join(GROUPS)}, not {group_by!r}")
    until = moment(params["until"], "until", now) if params.get("until") else now
    since = moment(params["since"], "since", now) if params.get("since") else until - DEFAULT_RANGE
    step = span(params["step"], "step") if params.get("step") else None
    if step is not None and (step <= 0 or step % 60):
        raise BadUsageQuery("step must be a whole number of minutes (at least 1m)")
    try:
        limit = int(params.get("limit") or DEFAULT_LIMIT)
    except ValueError:
        raise BadUsageQuery("limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadUsageQuery(f"limit must be between 1 and {MAX_LIMIT}")
    if since >= until:
        raise BadUsageQuery("since must be before until")
    unit = step or 60
    lo, hi = int(since // unit) * unit, -int(-until // unit) * unit
    if step is not None and (hi - lo) // step > MAX_BUCKETS:
        raise BadUsageQuery(f"the range holds more than {MAX_BUCKETS} steps: use a longer step")
    return UsageQuery(group_by, lo, hi, step, limit)


def segments(lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(grain, from, to) that tile [lo, hi) (whole minutes) with the coarsest buckets that fit."""
    for grain in reversed(GRAINS):
        a, b = -(-lo // grain) * grain, hi // grain * grain
        if a < b:
            return [*segments(lo, a), (grain, a, b), *segments(b, hi)]
    return []


class _Args:
    """Query arguments, each rendered as the next placeholder."""

    def __init__(self, ph: Callable[[int], str]) -> None:
        self.ph = ph
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return self.ph(len(self.values))


class UsagePlan:
    """The query's SQL (standard for both stores; `ph(n)` renders the n-th placeholder) and its answer, in two
    reads the store runs in one snapshot: the totals per key over the range (read from the coarsest grains that
    tile it), then, with a step, the series of the top `limit` keys and of the rest as one (NULL) key, read from
    the one grain that divides the step (the range is whole steps). Python sees `limit + 1` series, however many
    keys there are."""

    def __init__(self, q: UsageQuery, ph: Callable[[int], str], table: str) -> None:
        self.q, self.ph, self.table = q, ph, table
        self.totals: dict[str, list[int]] = {}
        self.order: list[str] = []

    def _sql(
        self, a: _Args, select: str, parts: list[tuple[int, int, int]], group: str
    ) -> tuple[str, list[Any]]:
        dim = a(self.q.group_by)
        ranges = " OR ".join(
            f"(grain = {a(g)} AND bucket >= {a(lo)} AND bucket < {a(hi)})" for g, lo, hi in parts
        )
        sums = ", ".join(f"CAST(sum({m}) AS BIGINT)" for m in METRICS)
        sql = f"SELECT {select}, {sums} FROM {self.table} WHERE dim = {dim} AND ({ranges}) GROUP BY {group}"
        return sql, a.values

    def first(self) -> tuple[str, list[Any]]:
        """Rows (key, *METRICS): every key's totals over the range."""
        return self._sql(_Args(self.ph), "key", segments(self.q.since, self.q.until), "key")

    def then(self, totals: Iterable[Any]) -> tuple[str, list[Any]] | None:
        """Given the first read's rows: rows (key or NULL for the rest, bucket start, *METRICS), or None (no
        step, or nothing in the range)."""
        self.totals = {str(r[0]): [int(v) for v in r[1:]] for r in totals}
        self.order = sorted(self.totals, key=lambda k: (-self.totals[k][3], -self.totals[k][0], k))
        step = self.q.step
        if step is None or not self.order:
            return None
        part = [(max(g for g in GRAINS if step % g == 0), self.q.since, self.q.until)]
        t = f"bucket - bucket % {int(step)}"  # an integer we parsed: safe to inline
        a = _Args(self.ph)
        if len(self.order) <= self.q.limit:
            return self._sql(a, f"key, {t} AS t", part, "key, t")
        top = ", ".join(a(k) for k in self.order[: self.q.limit])
        return self._sql(a, f"CASE WHEN key IN ({top}) THEN key END AS k, {t} AS t", part, "k, t")

    def answer(self, rows: Iterable[Any]) -> dict[str, Any]:
        """The answer, given the second read's rows: groups by total tokens, then calls (the top `limit`; the
        rest summed as `other`), each with a series over every bucket of the range (empty buckets as zeros)."""
        q, n = self.q, len(METRICS)
        series: dict[str | None, dict[int, list[int]]] = {}
        for r in rows:
            series.setdefault(None if r[0] is None else str(r[0]), {})[int(r[1])] = [int(v) for v in r[2:]]
        if q.step is None:  # one bucket: the totals are the series
            series = {k: {q.since: m} for k, m in self.totals.items()}
        zero, labels = [0] * n, [(t, iso(t)) for t in q.buckets()]

        def group(key: str | None, total: list[int]) -> dict[str, Any]:
            points = series.get(key, {})
            return {
                **_metrics(total),
                "series": [{"t": label, **_metrics(points.get(t, zero))} for t, label in labels],
            }

        rest = self.order[q.limit :]
        other: dict[str, Any] | None = None
        if rest:
            total = [sum(self.totals[k][i] for k in rest) for i in range(n)]
            if q.step is None:
                series[None] = {q.since: total}
            other = {"groups": len(rest), **group(None, total)}
        return {
            "group_by": q.group_by,
            "since": iso(q.since),
            "until": iso(q.until),
            "step": q.step,
            "totals": _metrics([sum(m[i] for m in self.totals.values()) for i in range(n)]),
            "groups": [{"key": k or None, **group(k, self.totals[k])} for k in self.order[: q.limit]],
            "other": other,
        }


def iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _metrics(m: list[int]) -> dict[str, Any]:
    return {
        "calls": m[0],
        "input_tokens": m[1],
        "output_tokens": m[2],
        "total_tokens": m[3],
        "cost": round(m[4] / 1e9, 9),
        "denied": m[5],
        "errors": m[6],
    }
