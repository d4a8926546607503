"""Per-event cost of the main loop's bookkeeping, next to the way it was done before.

    python -m bench.hotpath

No Kafka, no HTTP: 200,000 ~2 KB events in 500-event batches over 8 partitions, run through
the consumer's own `Batcher` (which builds each body as it closes a batch),
`OffsetTracker.ack_all` and `BatchHistogram`, and
through what they replaced (one-by-one calls, prometheus_client's `Histogram.observe`, a body
concatenated around a join). Prints µs per event, best of 5.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram

from consumer.batcher import Batch, Batcher, Item, close
from consumer.offsets import OffsetTracker
from consumer.telemetry import _LATENCY_BUCKETS, BatchHistogram

N = 200_000
PARTITIONS = 8


def _entries() -> list[tuple[bytes, Item]]:
    tracker = OffsetTracker()
    for p in range(PARTITIONS):
        tracker.assign(p)
    event = b'{"user_id":"' + b"x" * 1990 + b'"}'
    return [(event, (tracker.track(i % PARTITIONS, i // PARTITIONS), i, None, b"")) for i in range(N)]


def _batches(entries: list[tuple[bytes, Item]]) -> list[Batch]:
    batches = Batcher(500, 1 << 30, 1.0).add(entries, 0.0)
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
    entries = _entries()
    items = [item for _, item in entries]
    batches = _batches(entries)
    events = [b.events() for b in batches]
    state: dict[str, object] = {}

    def new_tracker() -> None:
        t = _fresh_tracker()
        for (partition, _, offset), _, _, _ in items:
            t.track(partition, offset)
        state["t"] = t

    def ack_all() -> None:
        t = state["t"]
        assert isinstance(t, OffsetTracker)
        for b in batches:
            t.ack_all([ticket for ticket, _, _, _ in b.items])

    def ack_each() -> None:
        t = state["t"]
        assert isinstance(t, OffsetTracker)
        for b in batches:
            for ticket, _, _, _ in b.items:
                t.ack(ticket)

    def observe_many() -> None:
        h = BatchHistogram("x_seconds", "x", _LATENCY_BUCKETS, CollectorRegistry())
        now = time.time()
        for b in batches:
            h.observe_many([now - timestamp_ms / 1000 for _, timestamp_ms, _, _ in b.items])

    def observe_each() -> None:
        h = Histogram("x_seconds", "x", buckets=_LATENCY_BUCKETS, registry=CollectorRegistry())
        now_ms = time.time() * 1000
        for b in batches:
            for _, timestamp_ms, _, _ in b.items:
                h.observe(max(now_ms - timestamp_ms, 0) / 1000)

    def joined() -> None:
        for e in events:
            close(list(e), [], 0.0)

    def concatenated() -> None:
        for e in events:
            b"[" + b",".join(x for x in e) + b"]"

    rows = [
        ("Batcher.add, a consume() call at a time", best_us(lambda: _batches(entries)), "", None),
        ("the body at close: one join", best_us(joined), "b'[' + join + b']'", concatenated),
        ("OffsetTracker.ack_all per batch", best_us(ack_all, new_tracker), "ack() per event", ack_each),
        ("BatchHistogram.observe_many per batch", best_us(observe_many), "Histogram.observe per event", observe_each),
    ]
    print(f"{N:,} events of ~2 KB, 500 per batch; µs per event, best of 5")
    for name, us, before_name, before in rows:
        was = "" if before is None else f"   before: {before_name} {best_us(before, new_tracker):.2f}"
        print(f"  {name:<40} {us:5.2f}{was}")


if __name__ == "__main__":
    main()
