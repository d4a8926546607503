"""Per-event cost of the main loop's bookkeeping, next to the way it was done before.

    python -m bench.hotpath

No Kafka, no HTTP: 200,000 ~2 KB events in 500-event batches over 8 partitions, run through
the consumer's own `Batcher`, `body()`, `OffsetTracker.ack_all` and `BatchHistogram`, and
through what they replaced (one-by-one calls, prometheus_client's `Histogram.observe`, a body
concatenated around a join). Prints µs per event, best of 5.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram

from consumer.batcher import Batch, Batcher, Item, body
from consumer.offsets import OffsetTracker
from consumer.telemetry import _LATENCY_BUCKETS, BatchHistogram

N = 200_000
PARTITIONS = 8


def _items() -> list[Item]:
    tracker = OffsetTracker()
    for p in range(PARTITIONS):
        tracker.assign(p)
    event = b'{"user_id":"' + b"x" * 1990 + b'"}'
    return [Item(event, tracker.track(i % PARTITIONS, i // PARTITIONS), i, None, b"") for i in range(N)]


def _batches(items: list[Item]) -> list[Batch]:
    batches = Batcher(500, 1 << 30, 1.0).add(items, 0.0)
    assert sum(len(b.items) for b in batches) == N
    return batches


def _fresh_tracker() -> OffsetTracker:
    tracker = OffsetTracker()
    for p in range(PARTITIONS):
        tracker.assign(p)  # generation p + 1, as in _items()
    return tracker


def best_us(run: Callable[[], object], setup: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(5):
        setup()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times) / N * 1e6


def main() -> None:
    items = _items()
    batches = _batches(items)
    state: dict[str, object] = {}

    def new_tracker() -> None:
        t = _fresh_tracker()
        for i in items:
            t.track(i.ticket.partition, i.ticket.offset)
        state["t"] = t

    def ack_all() -> None:
        t = state["t"]
        assert isinstance(t, OffsetTracker)
        for b in batches:
            t.ack_all([i.ticket for i in b.items])

    def ack_each() -> None:
        t = state["t"]
        assert isinstance(t, OffsetTracker)
        for b in batches:
            for i in b.items:
                t.ack(i.ticket)

    def observe_many() -> None:
        h = BatchHistogram("x_seconds", "x", _LATENCY_BUCKETS, CollectorRegistry())
        now = time.time()
        for b in batches:
            h.observe_many([now - i.timestamp_ms / 1000 for i in b.items])

    def observe_each() -> None:
        h = Histogram("x_seconds", "x", buckets=_LATENCY_BUCKETS, registry=CollectorRegistry())
        now_ms = time.time() * 1000
        for b in batches:
            for i in b.items:
                h.observe(max(now_ms - i.timestamp_ms, 0) / 1000)

    def joined() -> None:
        for b in batches:
            body(b.items)

    def concatenated() -> None:
        for b in batches:
            b"[" + b",".join(i.event for i in b.items) + b"]"

    rows = [
        ("Batcher.add, a consume() call at a time", best_us(lambda: _batches(items)), "", None),
        ("body(): one join", best_us(joined), "b'[' + join + b']'", concatenated),
        ("OffsetTracker.ack_all per batch", best_us(ack_all, new_tracker), "ack() per event", ack_each),
        ("BatchHistogram.observe_many per batch", best_us(observe_many), "Histogram.observe per event", observe_each),
    ]
    print(f"{N:,} events of ~2 KB, 500 per batch; µs per event, best of 5")
    for name, us, before_name, before in rows:
        was = "" if before is None else f"   before: {before_name} {best_us(before, new_tracker):.2f}"
        print(f"  {name:<40} {us:5.2f}{was}")


if __name__ == "__main__":
    main()
