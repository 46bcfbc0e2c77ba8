"""The Prometheus registry on its own: the text it renders parses with the reference parser, label values are
escaped, histogram buckets are cumulative, and callers cannot grow a family without bound."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agentgw.metrics import MAX_SERIES, OTHER, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_label_values_with_quotes_backslashes_and_newlines_survive_the_round_trip() -> None:
    m = Metrics()
    c = m.counter("x_total", "Things.", ("name",))
    odd = 'say "hi"\\ to\nall'
    c.inc((odd,), 2)
    c.inc(("plain",))
    got = samples(m)
    assert got[("x_total", frozenset({("name", odd)}))] == 2
    assert got[("x_total", frozenset({("name", "plain")}))] == 1


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    m = Metrics()
    h = m.histogram("lat_seconds", "Latency.", ("op",), buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(("chat",), value)
    got = samples(m)
    op = ("op", "chat")
    assert [got[("lat_seconds_bucket", frozenset({op, ("le", le)}))] for le in ("0.1", "1.0", "+Inf")] == [
        2,
        3,
        4,
    ]
    assert got[("lat_seconds_count", frozenset({op}))] == 4
    assert got[("lat_seconds_sum", frozenset({op}))] == 3.65


def test_callbacks_are_read_at_scrape_time_and_a_failing_one_only_loses_its_own_sample() -> None:
    m = Metrics()
    depth = [3]
    m.gauge("queue_depth", lambda: depth[0], "Queued.")
    m.gauge("info", lambda: 1, "Build.", {"version": "1.2"})
    m.counter_fn("broken_total", lambda: 1 / 0, "Broken.")
    m.gauge("absent", lambda: None, "Nothing to say.")
    depth[0] = 7
    got = samples(m)
    assert got[("queue_depth", frozenset())] == 7
    assert got[("info", frozenset({("version", "1.2")}))] == 1
    assert not any(name in ("broken_total", "absent") for name, _ in got)


def test_a_family_past_its_series_limit_counts_new_label_sets_as_other() -> None:
    m = Metrics()
    c = m.counter("calls_total", "Calls.", ("tool",))
    for i in range(MAX_SERIES + 10):
        c.inc((f"tool-{i}",))
    c.inc(("tool-0",))  # an existing series still counts as itself
    assert len(c.values) == MAX_SERIES + 1
    assert c.get((OTHER,)) == 10 and c.get(("tool-0",)) == 2
