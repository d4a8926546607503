"""Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints (I/O edge)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from consumer.dlqpolicy import ERROR_KINDS

log = logging.getLogger(__name__)

# End-to-end latency is the lag an operator reads: 0.1-1 s when healthy, seconds to tens of minutes
# in a backlog or an outage. From 0.1 s to 1 h neighbouring bounds are 1.33-1.67x apart, so
# histogram_quantile's reading stays within one narrow bucket of the truth instead of at the next
# coarse bound (every p99 between 10 s and 30 s used to read "30 s"). A superset of the old
# bounds; 30 bounds, 33 series per pod (16 before). docs/operations.md, "End-to-end latency buckets".
_LATENCY_BUCKETS = (
    0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1, 1.5, 2.5, 3.5, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120,
    180, 300, 450, 600, 900, 1200, 1800, 2700, 3600,
)  # fmt: skip
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class Metrics:
    """Every metric of shared/contract/operations.md, plus a few that alerts need."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "group_enriched_"
        self.records_consumed = Counter(p + "records_consumed", "Records read from Kafka.", registry=r)
        self.events_delivered = Counter(p + "events_delivered", "Events the Track API accepted.", registry=r)
        self.dead_lettered = Counter(
            p + "events_dead_lettered", "Records written to the dead-letter topic.", ["reason"], registry=r
        )
        self.http_requests = Counter(p + "http_requests", "Track API requests by status.", ["code"], registry=r)
        self.http_duration = Histogram(p + "http_request_duration_seconds", "Track API request duration.", registry=r)
        self.batch_events = Histogram(p + "batch_events", "Events per request.", buckets=_BATCH_BUCKETS, registry=r)
        self.retries = Counter(p + "retries", "Requests retried, by reason.", ["reason"], registry=r)
        self.retry_after_bounded = Counter(
            p + "retry_after_clamped",
            "Retry-After waits raised to the floor (the backoff) or cut to the cap (RETRY_AFTER_MAX_S).",
            ["bound"],
            registry=r,
        )
        self.http_not_json = Counter(
            p + "http_not_json", "2xx answers with a body neither empty nor JSON: not the Track API.", registry=r
        )
        self.inflight = Gauge(p + "inflight_requests", "Batches being delivered now.", registry=r)
        self.inflight_limit = Gauge(p + "inflight_limit", "Current in-flight request limit.", registry=r)
        self.buffered = Gauge(p + "buffered_events", "Events between Kafka and the API.", registry=r)
        self.paused = Gauge(
            p + "paused_partitions",
            "Owned partitions paused now (flow control, or held for a refused dead letter).",
            registry=r,
        )
        self.lag = Gauge(
            p + "consumer_lag",
            "Last stable offset (high watermark under read_uncommitted) minus committed offset,"
            " for the partitions this pod owns.",
            ["topic", "partition"],
            registry=r,
        )
        self.e2e_latency = BatchHistogram(
            p + "end_to_end_latency_seconds", "Kafka record timestamp to Track API acceptance.", _LATENCY_BUCKETS, r
        )
        self.rebalances = Counter(p + "rebalances", "Rebalance events.", ["event"], registry=r)
        self.skipped = Counter(
            p + "records_skipped", "Records neither delivered nor dead-lettered.", ["reason"], registry=r
        )
        self.auth_failing = Gauge(p + "auth_failing", "1 while the Track API refuses the token.", registry=r)
        self.schema_registry_failing = Gauge(
            p + "schema_registry_failing",
            "1 while records wait on a Schema Registry that cannot answer (down, TLS, 401/403).",
            registry=r,
        )
        self.breaker_open = Gauge(
            p + "breaker_open", "1 while the Track API refuses every event (held, not dead-lettered).", registry=r
        )
        self.breaker_opened = Counter(
            p + "breaker_opened", "Times the breaker opened: a run of refused events taken for an outage.", registry=r
        )
        self.ready = Gauge(p + "ready", "1 when /readyz answers 200.", registry=r)
        self.last_progress = Gauge(
            p + "last_progress_timestamp_seconds", "Unix time of the last delivered or committed record.", registry=r
        )
        self.dead_letter_failures = Counter(
            p + "dead_letter_failures",
            "Dead-letter writes refused by the broker or the producer, by kind.",
            ["error"],
            registry=r,
        )
        self.dead_letters_stuck = Gauge(
            p + "dead_letters_stuck",
            "Dead letters refused and not yet stored; their partitions are paused.",
            registry=r,
        )
        # Series that exist from start-up at 0, so increase() and rate() see their first event.
        for kind in ERROR_KINDS:
            self.dead_letter_failures.labels(kind)
        for reason in ("decode_error", "invalid_record", "rejected"):
            self.dead_lettered.labels(reason)
        for event in ("assigned", "revoked", "lost"):
            self.rebalances.labels(event)
        self.skipped.labels("tombstone")
        for bound in ("floor", "cap"):
            self.retry_after_bounded.labels(bound)
        for reason in ("network", "throttled", "server_error", "auth", "schema_registry", "breaker_open", "not_json"):
            self.retries.labels(reason)

    def update_lag(self, stats_json: str, topic: str, owned: Collection[int], read_committed: bool = True) -> None:
        """librdkafka statistics → per-partition lag against the committed offset.

        Under `read_committed` the consumer can read only up to the last stable offset (an open
        transaction's records are above it), so lag is measured from there. Only partitions in
        `owned` get a series: the statistics keep listing, frozen, partitions revoked since.
        """
        stats = json.loads(stats_json)
        parts = stats.get("topics", {}).get(topic, {}).get("partitions", {})
        end_key = "ls_offset" if read_committed else "hi_offset"
        for name, part in parts.items():
            if name == "-1" or int(name) not in owned:
                continue
            end, committed = part.get(end_key, -1), part.get("committed_offset", -1)
            if end < 0:
                continue
            lag = end - committed if committed >= 0 else end - max(part.get("lo_offset", 0), 0)
            self.lag.labels(topic, name).set(max(lag, 0))

    def forget_partition(self, topic: str, partition: int) -> None:
        with contextlib.suppress(KeyError):
            self.lag.remove(topic, str(partition))


class BatchHistogram:
    """A histogram observed a delivered batch at a time.

    prometheus_client's `Histogram.observe` takes two locks per value: 1.1 µs per event on the
    main thread, against 0.1 µs here (`python -m bench.hotpath`). Exposed like any histogram.
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._cumulative = [0] * (len(self._bounds) + 1)  # values <= each bound, as exposed; the last is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        # Sorted once, each bucket is one bisect: no Python-level work per value.
        ordered = sorted(values)
        cumulative = [*(bisect_right(ordered, bound) for bound in self._bounds), len(ordered)]
        total = sum(ordered[bisect_right(ordered, 0.0) :])  # producer clocks run ahead at times: below 0 is 0
        with self._lock:
            self._cumulative = [a + b for a, b in zip(self._cumulative, cumulative, strict=True)]
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative, total = self._cumulative, self._sum
        bounds = [*self._bounds, float("inf")]
        buckets = [(floatToGoString(bound), count) for bound, count in zip(bounds, cumulative, strict=True)]
        yield HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=total)


class Health:
    """State behind /healthz and /readyz; written by the main loop, read by the HTTP thread."""

    def __init__(self, stall_timeout_s: float, metrics: Metrics) -> None:
        self.stall_timeout_s = stall_timeout_s
        self._metrics = metrics
        self._beat = time.monotonic()
        self.in_group = False
        self.draining = False
        self.auth_failing = False
        self.dead_letters_stuck = False  # a dead letter the broker refuses holds its partition up
        self.breaker_open = False  # the Track API refuses every event: an outage (consumer/breaker.py)
        self.registry_failing = False  # records wait on a Schema Registry that cannot answer

    def beat(self) -> None:
        self._beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._beat < self.stall_timeout_s

    def ready(self) -> bool:
        causes = [  # any of them: 503 (one per line, a cause per line)
            self.draining,
            self.auth_failing,
            self.dead_letters_stuck,
            self.breaker_open,
            self.registry_failing,
        ]
        ok = self.in_group and self.alive() and not any(causes)
        self._metrics.ready.set(1 if ok else 0)
        return ok


def serve(port: int, metrics: Metrics, health: Health) -> ThreadingHTTPServer:
    """Start the endpoints on a daemon thread; returns the server (its port may be 0 → picked)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                health.ready()  # keep the `ready` gauge current for scrapes
                self._reply(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = health.alive()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"stuck\n")
            elif self.path == "/readyz":
                ok = health.ready()
                self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would flood the log

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="telemetry", daemon=True).start()
    return server
