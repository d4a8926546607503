"""The pure parts of `make dashboard`: Grafana's variables and intervals, the rule transform, legends."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import yaml

from harness.dashboard import (
    Phase,
    Query,
    Result,
    alert_timeline,
    builtin_variables,
    dashboard_panels,
    failures,
    format_duration,
    format_variable,
    grafana_interval,
    has_value,
    legend_name,
    look_back,
    parse_duration,
    parse_label_values,
    phase_at,
    rate_interval,
    resolve_variables,
    shorten_for,
    shorten_ranges,
    substitute,
    true_quantile,
)

CHART = Path(__file__).resolve().parents[1] / "helm" / "group-enriched-consumer"


def test_durations_round_trip() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert format_duration(600) == "10m"
    assert format_duration(4) == "4s"
    assert format_duration(0.25) == "250ms"
    with pytest.raises(ValueError):
        parse_duration("10 minutes")


def test_interval_is_rounded_like_grafana_and_never_below_the_scrape_interval() -> None:
    assert grafana_interval(6 * 3600, 1000, 15) == 20  # 21.6 s → 20 s
    assert grafana_interval(3600, 900, 15) == 15  # 4 s → 5 s, then the 15 s floor
    assert grafana_interval(60, 950, 1) == 1
    assert grafana_interval(24 * 3600, 500, 1) == 120  # 172.8 s → 2m


def test_rate_interval_is_four_scrapes_at_least() -> None:
    assert rate_interval(1, 1) == 4
    assert rate_interval(20, 15) == 60
    assert rate_interval(120, 15) == 135
    assert builtin_variables(3600, 20, 15)["__rate_interval"] == "1m"
    assert builtin_variables(60, 1, 1)["__rate_interval"] == "4s"


def test_substitute_every_syntax_and_leaves_unknown_names() -> None:
    v = {"namespace": "prod", "job": ".+", "__rate_interval": "4s", "__rate": "WRONG"}
    expr = 'rate(x{namespace="$namespace", job=~"${job}", a="[[namespace]]", b="${namespace:raw}"}[$__rate_interval])'
    assert substitute(expr, v) == 'rate(x{namespace="prod", job=~".+", a="prod", b="prod"}[4s])'
    assert substitute("$unknown", v) == "$unknown"


def test_variable_formatting_as_the_prometheus_data_source_does() -> None:
    assert format_variable(["a", "b"], multi_or_all=True, all_selected=True, all_value=".+") == ".+"
    assert format_variable(["a", "b.c"], multi_or_all=True, all_selected=True, all_value=None) == "(a|b\\\\.c)"
    assert format_variable(["only"], multi_or_all=True, all_selected=False, all_value=None) == "only"
    assert format_variable(["x.y"], multi_or_all=False, all_selected=False, all_value=None) == "x.y"


def test_label_values_queries() -> None:
    assert parse_label_values('label_values(up{namespace="n"}, job)') == ('up{namespace="n"}', "job")
    assert parse_label_values("label_values(namespace)") == (None, "namespace")
    with pytest.raises(ValueError):
        parse_label_values("query_result(up)")


def test_the_chart_dashboard_variables_resolve_in_order() -> None:
    dashboard = json.loads((CHART / "dashboards" / "group-enriched-consumer.json").read_text())
    asked: list[tuple[str | None, str]] = []

    def label_values(selector: str | None, label: str) -> list[str]:
        asked.append((selector, label))
        return {"namespace": ["prod", "dev"], "job": ["b", "a"]}[label]

    variables = resolve_variables(dashboard["templating"]["list"], label_values, "prom-uid")
    assert variables["datasource"] == "prom-uid"
    assert variables["namespace"] == "dev"  # first in sort order, as Grafana picks with nothing saved
    assert ('group_enriched_ready{namespace="dev"}', "job") in asked  # $namespace substituted first
    assert variables["job"] in (".+", "(a|b)")  # "All": its allValue, or every value


def test_dashboard_panels_take_every_visible_prometheus_query() -> None:
    dashboard = {
        "panels": [
            {"type": "stat", "title": "S", "targets": [{"expr": "up", "refId": "A", "instant": True}]},
            {
                "type": "row",
                "title": "R",
                "collapsed": True,
                "panels": [{"type": "timeseries", "title": "T", "targets": [{"expr": "x", "refId": "A"}]}],
            },
            {"type": "timeseries", "title": "H", "targets": [{"expr": "y", "refId": "A", "hide": True}]},
        ]
    }
    panels = {p.title: p for p in dashboard_panels(dashboard)}
    assert [q.expr for q in panels["S"].queries] == ["up"] and panels["S"].queries[0].instant
    assert [q.expr for q in panels["T"].queries] == ["x"]
    assert panels["H"].queries == [] and panels["R"].queries == []


def test_the_chart_dashboard_has_its_queries() -> None:
    panels = dashboard_panels(json.loads((CHART / "dashboards" / "group-enriched-consumer.json").read_text()))
    with_queries = [p for p in panels if p.queries]
    assert len(with_queries) >= 17
    assert sum(len(p.queries) for p in panels) >= 24


def test_shorten_for_rewrites_only_for() -> None:
    original = (CHART / "rules" / "alerts.yaml").read_text()
    text, changed = shorten_for(original, factor=60)
    before, after = yaml.safe_load(original), yaml.safe_load(text)
    assert ("ConsumerLagHigh", "10m", "10s") in changed
    for g0, g1 in zip(before["groups"], after["groups"], strict=True):
        for r0, r1 in zip(g0["rules"], g1["rules"], strict=True):
            assert {k: v for k, v in r0.items() if k != "for"} == {k: v for k, v in r1.items() if k != "for"}
            if "for" in r0:
                assert parse_duration(r1["for"]) == max(math.ceil(parse_duration(r0["for"]) / 60), 1)
    assert yaml.safe_load((CHART / "rules" / "alerts.yaml").read_text()) == before  # the chart's file untouched


def test_shorten_for_keeps_a_floor() -> None:
    text, changed = shorten_for("groups: [{name: g, rules: [{alert: A, expr: up == 0, for: 30s}]}]", factor=60)
    assert changed == [("A", "30s", "1s")]
    assert yaml.safe_load(text)["groups"][0]["rules"][0]["for"] == "1s"


def test_shorten_ranges_divides_windows_steps_and_offsets() -> None:
    expr = "rate(x[5m]) > 0 unless deriv(sum(y)[10m:1m]) > 0 and z offset 15m and w[30s] and v[1h:]"
    assert (
        shorten_ranges(expr, 60, 4)
        == "rate(x[5s]) > 0 unless deriv(sum(y)[10s:4s]) > 0 and z offset 15s and w[4s] and v[1m:]"
    )


def test_shorten_for_with_ranges_shortens_the_chart_alerts_expressions() -> None:
    original = (CHART / "rules" / "alerts.yaml").read_text()
    text, _ = shorten_for(original, factor=60, range_minimum_s=4)
    rules = {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r}
    assert "[5s]" in rules["DeliveryFailing"]["expr"] and "[5m]" not in rules["DeliveryFailing"]["expr"]
    assert rules["DeliveryFailing"]["for"] == "10s"


def test_legend_names() -> None:
    assert legend_name("{{topic}}/{{partition}}", {"topic": "t", "partition": "3"}) == "t/3"
    assert legend_name("p99", {}) == "p99"
    assert legend_name("", {"__name__": "up", "job": "j"}) == 'up{job="j"}'


def test_has_value_ignores_nan() -> None:
    assert not has_value([])
    assert not has_value([{"metric": {}, "values": [[1, "NaN"], [2, "NaN"]]}])
    assert has_value([{"metric": {}, "values": [[1, "NaN"], [2, "0"]]}])
    assert has_value([{"metric": {}, "value": [1, "3"]}])


def test_alert_timeline_and_phases() -> None:
    series = [
        {"metric": {"alertname": "A", "alertstate": "pending"}, "values": [[10, "1"], [11, "1"]]},
        {"metric": {"alertname": "A", "alertstate": "firing"}, "values": [[12, "1"], [20, "1"]]},
    ]
    assert alert_timeline(series) == {"A": {"pending": (10, 11), "firing": (12, 20)}}
    phases = [Phase("one", 0, 10), Phase("two", 10, 20)]
    assert [phase_at(phases, t) for t in (-1, 0, 10, 19.9, 20)] == ["before", "one", "two", "two", "after"]


def _histogram_quantile(q: float, bounds: tuple[float, ...], values: list[float]) -> float:
    """Prometheus's histogram_quantile over one histogram: linear within the bucket the rank falls in."""
    counts = [sum(v <= b for v in values) for b in bounds]
    rank = q * len(values)
    lower, below = 0.0, 0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            return lower + (bound - lower) * (rank - below) / max(count - below, 1)
        lower, below = bound, count
    return bounds[-1]


def test_latency_buckets_read_an_outage_p99_close_to_the_truth() -> None:
    from consumer.telemetry import _LATENCY_BUCKETS as new

    old = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
    # A backlog that built up for `seconds` (latencies spread evenly up to it): the p99 read
    # stays within 1.5x of the truth from 0.2 s to 3,000 s.
    worst = (1.0, 0.0)
    for seconds in [0.2 * 1.05**k for k in range(198)]:
        waited = [seconds * i / 1000 for i in range(1, 1001)]
        truth = 0.99 * seconds
        read = _histogram_quantile(0.99, new, waited)
        assert read >= truth * 0.999, seconds
        worst = max(worst, (read / truth, seconds))
    assert worst[0] <= 1.5, f"p99 read {worst[0]:.2f}x the truth for a {worst[1]:.1f} s backlog"
    twenty = [20 * i / 1000 for i in range(1, 1001)]
    assert _histogram_quantile(0.99, old, twenty) > 29  # what the issue saw: 19.8 s read as ~30 s
    assert abs(_histogram_quantile(0.99, new, twenty) - 19.8) < 0.1
    assert set(old) <= set(new)  # old le values keep working across a rolling upgrade
    assert len(new) <= 30 and new[-1] >= 3600
    assert max(b / a for a, b in itertools.pairwise(new) if a >= 0.1) <= 1.7


def test_true_quantile_over_the_window_before_a_time() -> None:
    latencies = [(float(t), float(t)) for t in range(1, 101)]  # accepted at t, waited t seconds
    assert true_quantile(latencies, 100, 4, 0.99) == 100
    assert true_quantile(latencies, 100, 100, 0.5) == 50
    assert true_quantile(latencies, 100, 100, 0.99) == 99
    assert true_quantile(latencies, 200, 4, 0.99) is None


def test_look_back_is_the_longest_window_of_an_expression() -> None:
    assert look_back("increase(x[15m]) > 0") == 900
    assert look_back("deriv(sum(x)[10m:1m]) > 0 and rate(y[5m]) > 0") == 600
    assert look_back("max(x offset 15m)") == 900
    assert look_back("max(x) == 1") == 0


def test_failures_name_the_panel_and_the_query() -> None:
    q = Query("Lag", "timeseries", "B", "max(x)", "", False, "time_series")
    nan = Result(q, 'max(x{job=~".+"})', [{"metric": {}, "values": [[1, "NaN"]]}])
    assert failures([Result(q, "max(x)", [{"metric": {}, "values": [[1, "2"]]}])]) == []
    [message] = failures([nan])
    assert "panel 'Lag' query B: no series with a value" in message and 'max(x{job=~".+"})' in message
    [message] = failures([Result(q, "max(", [], "parse error")])
    assert "parse error" in message


def test_render_draws_every_kind_of_panel(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from harness.dashboard import Incident, render

    dashboard = {
        "title": "T",
        "panels": [
            {"type": "stat", "title": "S", "gridPos": {"x": 0, "y": 0, "w": 6, "h": 4},
             "targets": [{"expr": "a", "refId": "A", "instant": True}]},
            {"type": "row", "title": "R", "gridPos": {"x": 0, "y": 4, "w": 24, "h": 1}},
            {"type": "timeseries", "title": "L", "gridPos": {"x": 0, "y": 5, "w": 12, "h": 8},
             "fieldConfig": {"defaults": {"unit": "s"}},
             "targets": [{"expr": "b", "refId": "A", "legendFormat": "{{x}}"}]},
            {"type": "heatmap", "title": "H", "gridPos": {"x": 12, "y": 5, "w": 12, "h": 8},
             "targets": [{"expr": "c", "refId": "A", "format": "heatmap"}]},
            {"type": "table", "title": "N", "gridPos": {"x": 0, "y": 13, "w": 24, "h": 4},
             "targets": [{"expr": "d", "refId": "A", "instant": True}]},
            {"type": "text", "title": "Text", "gridPos": {"x": 0, "y": 17, "w": 24, "h": 2}},
        ],
    }  # fmt: skip
    panels = dashboard_panels(dashboard)
    q = {p.title: p.queries[0] for p in panels if p.queries}
    ts = [[100 + i, str(i * 0.5)] for i in range(10)]
    results = [
        Result(q["S"], "a", [{"metric": {}, "value": [110, "3"]}]),
        Result(
            q["L"], "b", [{"metric": {"x": "p99"}, "values": ts}, {"metric": {"x": "p50"}, "values": [[100, "NaN"]]}]
        ),
        Result(q["H"], "c", [{"metric": {"le": le}, "values": ts} for le in ("1.0", "5.0", "+Inf")]),
        Result(q["N"], "d", [{"metric": {}, "value": [110, "1"]}]),
    ]
    incident = Incident([Phase("one", 100, 105), Phase("two", 105, 110)], 100, 110, 0, 0, [])
    out = tmp_path / "d.png"
    render(dashboard, panels, results, incident, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
