"""The chart's Grafana dashboard and alerts, proven on a scripted incident: `make dashboard`.

A real Prometheus (Debian's `prometheus`, 1 s scrape and rule evaluation) scrapes two live
consumers (the real CLI, `harness.process`) while this script plays an incident against them:

    backlog → outage (503/429) → poison records → one consumer leaves → recovery

Then every query of every panel of helm/*/dashboards/*.json runs through Prometheus's HTTP
API over the incident, with the dashboard's variables substituted the way Grafana does
(`$datasource`, `$namespace`, `$job` with "All", `$__interval`, `$__rate_interval`, ...).
The run fails (exit 1) naming the panel and the query when one returns no series with a
value. The alert rules (helm/*/rules/*.yaml) are loaded into the same Prometheus with their
`for:` durations and their expressions' range windows shortened 60x by `shorten_for` (a
rewritten copy; the chart's files are not touched): the incident is the alerts' time
compressed. The run prints when each alert went pending and firing against the phases.
With `--png` it draws the panels from the real results in their grid positions.

Pure helpers (variables, intervals, the rule transform, legends) are unit-tested in
tests/test_unit_dashboard.py; the rest is I/O.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "group-enriched-consumer"
SCRAPE_S = 1.0  # scrape and rule evaluation interval; also Grafana's "scrape interval" for $__rate_interval
RANGE_MINIMUM_S = 4 * SCRAPE_S  # a shortened rate() window still holds several samples
DASHBOARD_WIDTH_PX = 1900  # a panel's maxDataPoints is its width in pixels, as in Grafana
NAMESPACE = "incident"
JOB = "group-enriched-consumer"


# --------------------------------------------------------------------------- pure helpers


def parse_duration(text: str) -> float:
    """A Prometheus duration ("1h30m", "10m", "90s", "500ms") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: whole minutes as "5m", whole seconds as "4s", else ms."""
    ms = round(seconds * 1000)
    if ms % 60_000 == 0 and ms:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


# Grafana's rangeutil.roundInterval: (below this many ms, use this interval in ms).
_ROUND = [
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
    (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
    (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
    (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000),
    (32400000, 21600000), (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000),
    (3628800000, 2592000000),
]  # fmt: skip


def grafana_interval(range_s: float, max_data_points: int, min_interval_s: float) -> float:
    """`$__interval`: the time range over the panel's data points, rounded as Grafana rounds it,
    never below the data source's scrape interval (its "min interval")."""
    raw_ms = range_s * 1000 / max(max_data_points, 1)
    rounded = next((out for below, out in _ROUND if raw_ms < below), 31536000000)
    return max(rounded / 1000, min_interval_s)


def rate_interval(interval_s: float, scrape_s: float) -> float:
    """`$__rate_interval` = max($__interval + scrape interval, 4 x scrape interval) (Grafana's docs)."""
    return max(interval_s + scrape_s, 4 * scrape_s)


def _regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape: a value made safe inside a PromQL regex."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def format_variable(values: list[str], *, multi_or_all: bool, all_selected: bool, all_value: str | None) -> str:
    """A variable's selection as Grafana's Prometheus data source writes it into a query.

    "All" with an `allValue` is that value verbatim (e.g. `.+`); "All" without one is every
    value; several values become `(a|b)`; a multi/All variable's values are regex-escaped.
    """
    if all_selected and all_value is not None:
        return all_value
    if not multi_or_all:
        return values[0].replace("\\", "\\\\").replace("'", "\\'") if values else ""
    escaped = [_regex_escape(v) for v in values]
    if len(escaped) == 1:
        return escaped[0]
    return "(" + "|".join(escaped) + ")"


_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")


def substitute(text: str, variables: dict[str, str]) -> str:
    """Replace `$name`, `${name}`, `${name:format}` and `[[name]]` as Grafana does; an unknown
    name is left as written (Grafana leaves it too, and Prometheus then rejects the query)."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        return variables.get(name, m.group(0))

    # Longest names first is implicit: \w+ is greedy, so `$__rate_interval` never matches `$__rate`.
    return _VAR.sub(one, text)


def builtin_variables(range_s: float, interval_s: float, scrape_s: float) -> dict[str, str]:
    """Grafana's global variables for one panel."""
    return {
        "__interval": format_duration(interval_s),
        "__interval_ms": str(round(interval_s * 1000)),
        "__rate_interval": format_duration(rate_interval(interval_s, scrape_s)),
        "__range": format_duration(round(range_s)),
        "__range_s": str(round(range_s)),
        "__range_ms": str(round(range_s * 1000)),
    }


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)


def parse_label_values(query: str) -> tuple[str | None, str]:
    """`label_values(metric{sel}, label)` → (series selector or None, label)."""
    m = _LABEL_VALUES.match(query)
    if not m:
        raise ValueError(f"unsupported variable query (only label_values): {query!r}")
    return (m.group(1).strip() if m.group(1) else None), m.group(2)


def resolve_variables(
    templating: list[dict[str, Any]], label_values: Callable[[str | None, str], list[str]], datasource_uid: str
) -> dict[str, str]:
    """The dashboard's template variables as Grafana fills them on first load: the data source,
    each query variable from its label_values() (earlier variables substituted), "All" where a
    variable includes it, else the first value in sort order."""
    out: dict[str, str] = {}
    for var in templating:
        name, kind = var["name"], var.get("type")
        if kind == "datasource":
            out[name] = datasource_uid
        elif kind == "query":
            raw = var.get("query")
            query = raw.get("query", "") if isinstance(raw, dict) else str(raw or var.get("definition", ""))
            selector, label = parse_label_values(substitute(query, out))
            values = sorted(set(label_values(selector, label)))
            if var.get("regex"):
                values = [v for v in values if re.search(var["regex"], v)]
            multi_or_all = bool(var.get("multi") or var.get("includeAll"))
            if var.get("includeAll"):
                out[name] = format_variable(
                    values, multi_or_all=True, all_selected=True, all_value=var.get("allValue") or None
                )
            else:
                out[name] = format_variable(values[:1], multi_or_all=multi_or_all, all_selected=False, all_value=None)
        elif kind in ("custom", "constant", "textbox", "interval"):
            current = (var.get("current") or {}).get("value")
            if isinstance(current, list):
                current = current[0] if current else ""
            out[name] = str(current if current is not None else str(var.get("query", "")).split(",")[0])
    return out


@dataclass
class Query:
    panel: str
    panel_type: str
    ref: str
    expr: str  # as written in the dashboard
    legend: str
    instant: bool
    fmt: str


@dataclass
class Panel:
    title: str
    type: str
    grid: dict[str, int]
    unit: str
    queries: list[Query] = field(default_factory=list)


def dashboard_panels(dashboard: dict[str, Any]) -> list[Panel]:
    """Every panel (rows included, as layout; collapsed rows' panels too) with its visible
    Prometheus queries."""
    out: list[Panel] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            unit = ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit") or (
                ((p.get("options") or {}).get("yAxis") or {}).get("unit") or ""
            )
            panel = Panel(p.get("title", ""), p.get("type", ""), p.get("gridPos", {}), unit)
            for t in p.get("targets", []):
                ds = t.get("datasource") or p.get("datasource") or {}
                if (
                    t.get("hide")
                    or not t.get("expr")
                    or (isinstance(ds, dict) and ds.get("type") not in (None, "prometheus"))
                ):
                    continue
                panel.queries.append(
                    Query(
                        panel.title,
                        panel.type,
                        t.get("refId", ""),
                        t["expr"],
                        t.get("legendFormat", ""),
                        bool(t.get("instant")) and not t.get("range"),
                        t.get("format", "time_series"),
                    )
                )
            out.append(panel)
            walk(p.get("panels", []))  # a collapsed row carries its panels

    walk(dashboard.get("panels", []))
    return out


def legend_name(legend_format: str, labels: dict[str, str]) -> str:
    """Grafana's legend: `{{label}}` replaced by the series' label value; no format → the labels."""
    if legend_format and legend_format != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend_format)
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest else (name or "value")


def shorten_for(
    rules_text: str, factor: float, minimum_s: float = 1.0, range_minimum_s: float | None = None
) -> tuple[str, list[tuple[str, str, str]]]:
    """A rule file with every alert's `for:` divided by `factor` (at least `minimum_s`).

    Returns the new file and (alert, old for, new for). Labels and annotations are kept as
    written. With `range_minimum_s`, every range window, subquery step and offset in the
    expressions is divided by `factor` too (at least that long): the incident is the alert's
    time compressed, so an outage alert that looks back 5m can fire in a 20 s outage. Without
    it, expressions are kept as written.
    """
    doc = yaml.safe_load(rules_text)
    changed: list[tuple[str, str, str]] = []
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule and range_minimum_s is not None:
                rule["expr"] = shorten_ranges(str(rule["expr"]), factor, range_minimum_s)
            if "alert" in rule and "for" in rule:
                old = str(rule["for"])
                new = format_duration(max(math.ceil(parse_duration(old) / factor), minimum_s))
                rule["for"] = new
                changed.append((rule["alert"], old, new))
    return yaml.safe_dump(doc, sort_keys=False, width=1000), changed


_DURATION = r"\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*"
_RANGES = re.compile(rf"\[({_DURATION})(?::({_DURATION})?)?\]|(offset\s+)({_DURATION})")


def shorten_ranges(expr: str, factor: float, minimum_s: float) -> str:
    """Every `[range]`, `[range:step]` and `offset d` of a PromQL expression divided by `factor`."""

    def short(d: str) -> str:
        return format_duration(max(math.ceil(parse_duration(d) / factor), minimum_s))

    def one(m: re.Match[str]) -> str:
        if m.group(4):
            return m.group(3) + short(m.group(4))
        step = m.group(2)
        inner = short(m.group(1)) + (":" + short(step) if step else (":" if ":" in m.group(0) else ""))
        return f"[{inner}]"

    return _RANGES.sub(one, expr)


def alert_names(rules_text: str) -> list[str]:
    doc = yaml.safe_load(rules_text) or {}
    return [r["alert"] for g in doc.get("groups", []) for r in g.get("rules", []) if "alert" in r]


def look_back(expr: str) -> float:
    """The longest range, subquery range or offset in a PromQL expression, in seconds: an alert
    cannot fire before the incident is at least this old (or the metric this much older)."""
    found = re.findall(
        r"\[(\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)(?::[^\]]*)?\]|offset\s+(\d+(?:ms|[smhdwy]))", expr
    )
    return max((parse_duration(a or b) for a, b in found), default=0.0)


def alert_look_backs(rules_text: str) -> dict[str, float]:
    doc = yaml.safe_load(rules_text) or {}
    return {
        r["alert"]: look_back(str(r["expr"])) for g in doc.get("groups", []) for r in g.get("rules", []) if "alert" in r
    }


@dataclass
class Phase:
    name: str
    start: float  # unix time
    end: float


def phase_at(phases: list[Phase], t: float) -> str:
    for p in phases:
        if p.start <= t < p.end:
            return p.name
    return "before" if phases and t < phases[0].start else "after"


def alert_timeline(alerts_series: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """ALERTS range-query result → alert → state → (first, last) unix time seen."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for s in alerts_series:
        name, state = s["metric"].get("alertname", "?"), s["metric"].get("alertstate", "?")
        times = [float(t) for t, _ in s.get("values", [])]
        if not times:
            continue
        first, last = out.setdefault(name, {}).get(state, (math.inf, -math.inf))
        out[name][state] = (min(first, min(times)), max(last, max(times)))
    return out


def true_quantile(latencies: list[tuple[float, float]], at: float, window_s: float, q: float) -> float | None:
    """The q-quantile of the latencies of events accepted in (at - window_s, at]: what a panel's
    histogram_quantile over rate(...[window]) estimates (nearest rank; None without events)."""
    values = sorted(v for t, v in latencies if at - window_s < t <= at)
    if not values:
        return None
    return values[min(len(values) - 1, max(math.ceil(q * len(values)) - 1, 0))]


def has_value(series: list[dict[str, Any]]) -> bool:
    """At least one series with at least one finite sample (NaN from histogram_quantile over
    nothing is no data)."""
    for s in series:
        samples = s.get("values") or ([s["value"]] if "value" in s else [])
        if any(math.isfinite(float(v)) for _, v in samples):
            return True
    return False


def failures(results: list[Result]) -> list[str]:
    """One message per query without a series with a value, naming the panel and the query."""
    return [
        f"FAILED     panel {r.query.panel!r} query {r.query.ref}: {r.error or 'no series with a value'}\n"
        f"           {r.promql}"
        for r in results
        if not has_value(r.series)
    ]


# --------------------------------------------------------------------------- Prometheus (I/O)


class Prometheus:
    """Debian's `prometheus` on loopback, scraping `targets` (port → extra labels) every second."""

    def __init__(self, workdir: Path, targets: dict[int, dict[str, str]], rules: list[Path]) -> None:
        binary = shutil.which("prometheus")
        if not binary:
            raise SystemExit("prometheus not installed (scripts/setup.sh installs Debian's prometheus package)")
        from harness.kafka import free_port

        self.port = free_port()
        self.rules = rules
        static = [{"targets": [f"127.0.0.1:{port}"], "labels": labels} for port, labels in targets.items()]
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": f"{SCRAPE_S:g}s"},
            "rule_files": [str(r) for r in rules],
            "scrape_configs": [{"job_name": JOB, "static_configs": static}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = workdir / "prometheus.log"

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
            raise RuntimeError(body.get("error") or f"HTTP {e.code}") from None
        if body.get("status") != "success":
            raise RuntimeError(body.get("error", "query failed"))
        return body["data"]

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                if self.api("status/runtimeinfo"):
                    return
            time.sleep(0.2)
        raise TimeoutError("prometheus not ready")

    def label_values(self, selector: str | None, label: str) -> list[str]:
        params = {"match[]": selector} if selector else {}
        return list(self.api(f"label/{label}/values", **params))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# --------------------------------------------------------------------------- the incident (I/O)


def say(msg: str) -> None:
    print(msg, flush=True)


class Outage:
    """The Track API stand-in's script: healthy, or refusing every request with 503 or 429."""

    def __init__(self) -> None:
        self.down = False
        self._rng = random.Random(17)

    def __call__(self, _events: list[dict[str, Any]], _headers: dict[str, str]) -> tuple[int, dict[str, str]] | None:
        if not self.down:
            return None
        if self._rng.random() < 0.5:
            return 429, {"Retry-After": "1"}
        return 503, {}


class SteadyProducer(threading.Thread):
    """Produces `rate` records a second until stopped, so every phase has traffic."""

    def __init__(self, bootstrap: str, topic: str, encode: Callable[[int, float], bytes], rate: float) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        self.topic, self.encode, self.rate = topic, encode, rate
        self.halt = threading.Event()
        self.sent = 0

    def run(self) -> None:
        tick = 0.1
        while not self.halt.wait(tick):
            for _ in range(round(self.rate * tick)):
                self.producer.produce(self.topic, self.encode(self.sent, time.time()))
                self.sent += 1
            self.producer.poll(0)
        self.producer.flush(10)


@dataclass
class Incident:
    phases: list[Phase]
    start: float
    end: float
    delivered: int
    produced: int
    latencies: list[tuple[float, float]]  # (accepted at, seconds since the record was produced), per event


def play_incident(
    bootstrap: str, workdir: Path, stack: ExitStack
) -> tuple[Incident, Prometheus, list[tuple[str, str, str]], list[str]]:
    """Start the API, two consumers and Prometheus; play the phases; returns what happened."""
    from harness import kafkautil
    from harness.kafka import free_port
    from harness.process import ConsumerProcess
    from harness.records import encode_raw, sample_record
    from harness.trackapi import TrackApi

    outage = Outage()
    api = stack.enter_context(TrackApi(respond=outage))
    topic = f"dashboard-{uuid.uuid4().hex[:6]}"
    partitions = 4
    kafkautil.create_topic(bootstrap, topic, partitions)

    pods = {"consumer-a": free_port(), "consumer-b": free_port()}
    rules_files = sorted((CHART / "rules").glob("*.y*ml"))
    changed: list[tuple[str, str, str]] = []
    names: list[str] = []
    rule_paths: list[Path] = []
    for i, path in enumerate(rules_files):
        text, ch = shorten_for(path.read_text(), factor=60, range_minimum_s=RANGE_MINIMUM_S)
        out = workdir / f"rules-{i}.yaml"
        out.write_text(text)
        rule_paths.append(out)
        changed += ch
        names += alert_names(path.read_text())
    targets = {port: {"namespace": NAMESPACE, "pod": pod} for pod, port in pods.items()}
    prom = Prometheus(workdir, targets, rule_paths)
    stack.callback(prom.stop)
    prom.wait_ready()
    loaded = [r["name"] for g in prom.api("rules")["groups"] for r in g["rules"] if r.get("type") == "alerting"]
    if sorted(loaded) != sorted(names):
        raise RuntimeError(f"Prometheus loaded alerts {sorted(loaded)}, the chart has {sorted(names)}")
    say(
        f"prometheus {prom.port}: {len(loaded)} alerts loaded, `for:` and range windows shortened 60x: "
        + ", ".join(f"{a} {o}→{n}" for a, o, n in changed)
    )

    def stamped(i: int, at: float) -> bytes:
        """A record whose `enriched_at` (the event's `timestamp`) is when it was produced: the
        stand-in's receipt time minus it is each event's true end-to-end latency."""
        record = sample_record(i % 500, "dash")
        record["enriched_at"] = int(at * 1000)
        return encode_raw(record)

    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": f"{topic}-group",
        "TRACK_API_URL": api.url,
        "TRACK_API_TOKEN": api.token,
        "BATCH_LINGER_MS": "50",
        "COMMIT_INTERVAL_MS": "250",
        "RETRY_BACKOFF_MAX_S": "2",
        "KAFKA_CFG_STATISTICS_INTERVAL_MS": "500",
        "LOG_LEVEL": "WARNING",
    }
    procs = {
        pod: stack.enter_context(ConsumerProcess({**env, "METRICS_PORT": str(port)}, workdir / f"{pod}.log"))
        for pod, port in pods.items()
    }
    for proc in procs.values():
        proc.wait_ready()
    # Both scraped before anything happens, so counters have a sample from before the backlog.
    deadline = time.monotonic() + 30
    while len(prom.api("query", query=f'group_enriched_ready{{job="{JOB}"}} == 1')["result"]) < len(pods):
        if time.monotonic() > deadline:
            raise TimeoutError("Prometheus has not scraped both consumers ready within 30 s")
        time.sleep(0.2)

    phases: list[Phase] = []
    steady = SteadyProducer(bootstrap, topic, stamped, rate=150)
    started = time.time()
    steady.start()
    # The backlog lands at once and drains at the pace of a loaded API (one request at a time,
    # 150 ms each): long enough to be seen at a 1 s scrape.
    api.serialize, api.delay_s = True, 0.15
    backlog = 30_000
    values = [stamped(i, time.time()) for i in range(500)]
    kafkautil.produce(bootstrap, topic, [(None, values[i % len(values)]) for i in range(backlog)], partitions)

    def phase(name: str, seconds: float, until: Callable[[], bool] | None = None, max_s: float = 0) -> None:
        start = phases[-1].end if phases else started  # phases follow each other without a gap
        deadline = time.monotonic() + seconds - (time.time() - start)
        hard = deadline + max(max_s - seconds, 0)
        while time.monotonic() < deadline or (until is not None and not until() and time.monotonic() < hard):
            time.sleep(0.2)
        phases.append(Phase(name, start, time.time()))
        say(f"phase      {name:<22} {phases[-1].end - phases[-1].start:5.1f} s  (delivered so far {api.count()})")

    phase("backlog", 14, until=lambda: api.count() >= backlog, max_s=25)
    api.serialize, api.delay_s = False, 0.0
    outage.down = True
    phase("outage 503/429", 20)
    outage.down = False
    poison = [(b"poison", b"\x00not avro at all")] * 20 + [(b"deleted-group", None)]
    kafkautil.produce(bootstrap, topic, poison)
    phase("poison records", 8)
    procs["consumer-b"].send_signal(signal.SIGTERM)
    phase("consumer-b leaves", 8)
    steady.halt.set()
    steady.join(15)
    total = backlog + steady.sent
    phase("recovery", 10, until=lambda: api.count() >= total, max_s=25)
    end = time.time()
    code = procs["consumer-b"].stop(timeout_s=30)
    if code != 0:
        say(f"warning    consumer-b exited with {code}")
    latencies = [
        (at, at - datetime.fromisoformat(e["timestamp"]).timestamp())
        for e, at in zip(list(api.events), list(api.received_at), strict=True)
    ]
    return Incident(phases, started, end, api.count(), total, latencies), prom, changed, names


# --------------------------------------------------------------------------- checking (I/O)


@dataclass
class Result:
    query: Query
    promql: str
    series: list[dict[str, Any]]
    error: str | None = None


def run_queries(
    prom: Prometheus, dashboard: dict[str, Any], start: float, end: float
) -> tuple[list[Panel], list[Result], dict[str, str]]:
    """Every visible query of every panel over [start, end], variables substituted."""
    variables = resolve_variables(dashboard.get("templating", {}).get("list", []), prom.label_values, "prometheus")
    panels = dashboard_panels(dashboard)
    results: list[Result] = []
    range_s = end - start
    for panel in panels:
        width_px = round(panel.grid.get("w", 24) / 24 * DASHBOARD_WIDTH_PX)
        interval = grafana_interval(range_s, width_px, SCRAPE_S)
        local = {**variables, **builtin_variables(range_s, interval, SCRAPE_S)}
        for q in panel.queries:
            promql = substitute(q.expr, local)
            try:
                if q.instant:
                    data = prom.api("query", query=promql, time=f"{end:.3f}")
                else:
                    data = prom.api(
                        "query_range", query=promql, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{interval:g}"
                    )
                results.append(Result(q, promql, data["result"]))
            except (RuntimeError, OSError) as exc:
                results.append(Result(q, promql, [], str(exc)))
    return panels, results, variables


def report_alerts(
    prom: Prometheus, incident: Incident, names: list[str], changed: list[tuple[str, str, str]]
) -> list[str]:
    """One line per alert: when it went pending and firing (seconds from the incident's start) and in which phase."""
    data = prom.api(
        "query_range", query="ALERTS", start=f"{incident.start:.3f}", end=f"{incident.end + 2:.3f}", step="1"
    )
    timeline = alert_timeline(data["result"])
    fors = {a: n for a, _o, n in changed}
    looks = {k: v for p in prom.rules for k, v in alert_look_backs(p.read_text()).items()}  # as loaded: shortened
    lines = []
    for name in names:
        states = timeline.get(name, {})
        parts = []
        for state in ("pending", "firing"):
            if state in states:
                first, last = states[state]
                parts.append(
                    f"{state} {first - incident.start:5.1f}s to {last - incident.start:5.1f}s"
                    f" ({phase_at(incident.phases, first)})"
                )
        text = "; ".join(parts) if parts else "never pending"
        if not parts and looks.get(name, 0) > incident.end - incident.start:
            text += f" (its expression looks back {format_duration(looks[name])})"
        lines.append(f"  {name:<24} for {fors.get(name, '0s'):<4} {text}")
    return lines


# --------------------------------------------------------------------------- the picture (I/O)

_BG, _PANEL, _TEXT, _GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
_COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a", "#ff9830"]
_PHASE_COLORS = ["#3274d9", "#e02f44", "#b877d9", "#ff9830", "#56a64b"]
_UNIT_LABEL = {"ops": "/s", "reqps": "req/s", "s": "s", "short": "", "percentunit": "%", "bytes": "B"}


def format_value(value: float, unit: str) -> str:
    """A number as Grafana prints it for the panel's unit (roughly: SI prefixes, ms below 1 s)."""
    if not math.isfinite(value):
        return "-"
    if unit == "s":
        if abs(value) >= 3600:
            return f"{value / 3600:.1f} h"
        if abs(value) >= 60:
            return f"{value / 60:.1f} min"
        if abs(value) >= 1 or value == 0:
            return f"{value:.3g} s"
        return f"{value * 1000:.3g} ms"
    suffix = {"ops": " ops/s", "reqps": " req/s", "percentunit": ""}.get(unit, "")
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    for div, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " K")):
        if abs(value) >= div:
            return f"{value / div:.3g}{prefix}{suffix.strip()}"
    return f"{value:.3g}{suffix}"


def render(
    dashboard: dict[str, Any], panels: list[Panel], results: list[Result], incident: Incident, out: Path
) -> None:
    """Draw the panels from the query results in their gridPos places, phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    by_panel: dict[str, list[Result]] = {}
    for r in results:
        by_panel.setdefault(r.query.panel, []).append(r)
    rows = max(p.grid.get("y", 0) + p.grid.get("h", 1) for p in panels)
    header = 2.2  # grid rows for the title and the phase legend
    unit_h = 0.34  # inches per grid row
    fig = plt.figure(figsize=(18, (rows + header) * unit_h), facecolor=_BG)
    total = rows + header
    t0 = incident.start

    def box(g: dict[str, int]) -> tuple[float, float, float, float]:
        x, y, w, h = g.get("x", 0), g.get("y", 0), g.get("w", 24), g.get("h", 8)
        return x / 24, 1 - (header + y + h) / total, w / 24, h / total

    fig.text(0.008, 1 - 0.6 / total, dashboard.get("title", ""), color=_TEXT, fontsize=16, weight="bold", va="center")
    fig.text(
        0.008,
        1 - 1.5 / total,
        "A scripted incident (`make dashboard`): two live consumers, a real Prometheus, every panel's query as Grafana"
        " sends it. Seconds from the incident's start; phases shaded.",
        color="#8e8e9e",
        fontsize=10,
        va="center",
    )
    handles = [
        Patch(
            facecolor=_PHASE_COLORS[i % len(_PHASE_COLORS)],
            alpha=0.35,
            label=f"{p.name} ({p.start - t0:.0f}-{p.end - t0:.0f} s)",
        )
        for i, p in enumerate(incident.phases)
    ]
    fig.legend(
        handles=handles, loc="center right", bbox_to_anchor=(0.995, 1 - 1.05 / total), ncol=len(handles),
        frameon=False, labelcolor=_TEXT, fontsize=9,
    )  # fmt: skip

    pad_x, pad_top, pad_bottom = 0.004, 0.85 / total, 0.5 / total
    for panel in panels:
        x, y, w, h = box(panel.grid)
        if panel.type == "row":
            fig.text(x + pad_x, y + h / 2, panel.title, color=_TEXT, fontsize=12, weight="bold", va="center")
            continue
        frame = fig.add_axes((x + pad_x / 2, y + 0.1 / total, w - pad_x, h - 0.2 / total), facecolor=_PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(_GRID)
        frame.text(0.01, 1 - 0.35 / (h * total), panel.title, transform=frame.transAxes, color=_TEXT, fontsize=10,
                   weight="bold", va="center")  # fmt: skip
        results_here = by_panel.get(panel.title, [])
        if panel.type == "stat":
            _draw_stat(fig, frame, panel, results_here, _COLORS)
            continue
        left = x + (0.045 if w < 0.4 else 0.035)
        ax = fig.add_axes(
            (left, y + pad_bottom + 0.35 / total, x + w - left - pad_x * 2, h - pad_top - pad_bottom - 0.35 / total),
            facecolor=_PANEL,
        )
        for i, ph in enumerate(incident.phases):
            ax.axvspan(ph.start - t0, ph.end - t0, color=_PHASE_COLORS[i % len(_PHASE_COLORS)], alpha=0.12, lw=0)
        if panel.type == "heatmap":
            _draw_heatmap(fig, ax, results_here, t0)
        else:
            color = iter(_COLORS * 4)
            for r in results_here:
                for s in r.series:
                    pts = [(float(t) - t0, float(v)) for t, v in s.get("values", [])]
                    if not pts:
                        continue
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.4, color=next(color),
                            label=legend_name(r.query.legend, s["metric"]))  # fmt: skip
            if ax.lines:
                ax.legend(loc="upper left", fontsize=7, frameon=False, labelcolor=_TEXT, ncol=min(4, len(ax.lines)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p, u=panel.unit: format_value(v, u)))
        ax.set_xlim(incident.phases[0].start - t0 - 2, incident.end - t0)
        ax.tick_params(colors="#8e8e9e", labelsize=7)
        ax.grid(color=_GRID, lw=0.5)
        for spine in ax.spines.values():
            spine.set_visible(False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72, facecolor=_BG)
    plt.close(fig)


def _draw_stat(fig: Any, frame: Any, panel: Panel, results: list[Result], colors: list[str]) -> None:
    """Each query's last value (Grafana's default reduction, lastNotNull) with its legend."""
    shown = []
    for r in results:
        for s in r.series:
            samples = s.get("values") or ([s["value"]] if "value" in s else [])
            values = [float(v) for _, v in samples if math.isfinite(float(v))]
            if values:
                shown.append((legend_name(r.query.legend, s["metric"]), values[-1]))
    for i, (name, value) in enumerate(shown):
        cx = (i + 0.5) / max(len(shown), 1)
        frame.text(cx, 0.45, format_value(value, panel.unit), transform=frame.transAxes, color=colors[i % len(colors)],
                   fontsize=22, weight="bold", ha="center", va="center")  # fmt: skip
        frame.text(cx, 0.12, name, transform=frame.transAxes, color="#8e8e9e", fontsize=8, ha="center")


def _draw_heatmap(fig: Any, ax: Any, results: list[Result], t0: float) -> None:
    """`format: heatmap`: cumulative `le` series, de-accumulated into one row per bucket."""

    series = [s for r in results for s in r.series]

    def bound(s: dict[str, Any]) -> float:
        return float(s["metric"].get("le", "inf").replace("+Inf", "inf"))

    series.sort(key=bound)
    if not series:
        return
    times = sorted({float(t) for s in series for t, _ in s.get("values", [])})
    index = {t: i for i, t in enumerate(times)}
    grid = [[0.0] * len(times) for _ in series]
    for row, s in enumerate(series):
        for t, v in s.get("values", []):
            grid[row][index[float(t)]] = float(v) if math.isfinite(float(v)) else 0.0
    for row in range(len(series) - 1, 0, -1):
        grid[row] = [max(a - b, 0.0) for a, b in zip(grid[row], grid[row - 1], strict=True)]
    xs = [t - t0 for t in times]
    edges = [*xs, xs[-1] + (xs[-1] - xs[-2] if len(xs) > 1 else 1)]
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("grafana-oranges", ["#4a2100", "#c4560b", "#ff9830", "#fff0c0"])
    cmap = cmap.with_extremes(bad=_PANEL)  # an empty cell is the panel's background, as in Grafana
    masked = [[v if v > 0 else math.nan for v in row] for row in grid]
    ax.pcolormesh(edges, range(len(series) + 1), masked, cmap=cmap, shading="flat")
    ax.set_yticks([i + 0.5 for i in range(len(series))])
    ax.set_yticklabels([s["metric"].get("le", "") for s in series], fontsize=6)


def latency_against_truth(results: list[Result], incident: Incident) -> list[str]:
    """The end-to-end latency panel's quantiles beside the true ones (from each event's own
    timestamps, over the same rate window), the highest of each per phase."""
    lines = []
    for r in results:
        m = re.match(
            r"\s*histogram_quantile\(\s*([\d.]+)\s*,.*end_to_end_latency_seconds_bucket.*\[(\w+)\]", r.promql, re.S
        )
        if not m or not r.series:
            continue
        q, window = float(m.group(1)), parse_duration(m.group(2))
        read = [(float(t), float(v)) for s in r.series for t, v in s.get("values", []) if math.isfinite(float(v))]
        parts = []
        for ph in incident.phases:
            here = [(t, v) for t, v in read if ph.start <= t < ph.end]
            truths = [true_quantile(incident.latencies, t, window, q) for t, _ in here]
            known = [x for x in truths if x is not None]
            if here and known:
                parts.append(f"{ph.name} {max(v for _, v in here):.1f} (true {max(known):.1f})")
        lines.append(f"  {r.query.panel} {r.query.legend or r.query.ref}, highest per phase, s: " + "; ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--png", type=Path, help="draw the dashboard from the results into this PNG")
    parser.add_argument("--json", type=Path, help="write the query results and the phases to this JSON file")
    parser.add_argument(
        "--dashboard", type=Path, action="append", help="check this dashboard JSON (default: the chart's, all of them)"
    )
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    dashboards = args.dashboard or sorted((CHART / "dashboards").glob("*.json"))
    workdir = Path(tempfile.mkdtemp(prefix="dashboard-"))
    failed = False
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)  # last out: after the broker and Prometheus stopped
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            say(f"kafka      using {bootstrap}")
        else:
            from harness.kafka import KafkaBroker

            broker = stack.enter_context(KafkaBroker(workdir / "kafka"))
            bootstrap = broker.bootstrap
            say(f"kafka      Apache Kafka (KRaft) on {bootstrap}, up at {time.monotonic() - t0:.1f} s")
        incident, prom, changed, names = play_incident(bootstrap, workdir, stack)
        say(
            f"incident   {incident.end - incident.start:.1f} s: "
            f"{incident.delivered} events delivered of {incident.produced} produced"
        )
        time.sleep(2 * SCRAPE_S)  # the last scrape and rule evaluation land
        all_results: dict[str, Any] = {}
        for path in dashboards:
            dashboard = json.loads(path.read_text())
            panels, results, variables = run_queries(prom, dashboard, incident.start - 2, incident.end)
            shown = [p for p in panels if p.queries]
            ok_panels = [p for p in shown if all(has_value(r.series) for r in results if r.query.panel == p.title)]
            ok_queries = [r for r in results if has_value(r.series)]
            say(f"dashboard  {path.name}: variables " + ", ".join(f"${k}={v}" for k, v in variables.items()))
            for line in failures(results):
                failed = True
                say(line)
            say(
                f"dashboard  {len(ok_panels)}/{len(shown)} panels, {len(ok_queries)}/{len(results)} queries with series"
            )
            all_results[path.name] = (dashboard, panels, results)
        for _d, _p, results in all_results.values():
            for line in latency_against_truth(results, incident):
                say(f"latency   {line}")
        say(
            "alerts     (times from the incident's start; phases: "
            + ", ".join(
                f"{p.name} {p.start - incident.start:.0f}-{p.end - incident.start:.0f}s" for p in incident.phases
            )
            + ")"
        )
        for line in report_alerts(prom, incident, names, changed):
            say(line)
        if args.json:
            doc = _as_json(incident, all_results)
            doc["lag_per_pod"] = prom.api(
                "query_range",
                query="group_enriched_consumer_lag",
                start=f"{incident.start:.3f}",
                end=f"{incident.end:.3f}",
                step="1",
            )["result"]
            args.json.write_text(json.dumps(doc, indent=1))
        if args.png:
            for name, (dashboard, panels, results) in all_results.items():
                target = args.png if len(all_results) == 1 else args.png.with_stem(f"{args.png.stem}-{Path(name).stem}")
                render(dashboard, panels, results, incident, target)
                say(f"png        {target}")
    say(f"dashboard  {'FAILED' if failed else 'OK'} in {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


def _as_json(incident: Incident, all_results: dict[str, Any]) -> dict[str, Any]:
    return {
        "start": incident.start,
        "phases": [p.__dict__ for p in incident.phases],
        "dashboards": {
            name: [
                {"panel": r.query.panel, "ref": r.query.ref, "promql": r.promql, "series": r.series} for r in results
            ]
            for name, (_d, _p, results) in all_results.items()
        },
    }


if __name__ == "__main__":
    sys.exit(main())
