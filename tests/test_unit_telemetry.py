"""consumer.telemetry.BatchHistogram: exposed exactly like prometheus_client's Histogram."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from consumer.telemetry import BatchHistogram

BUCKETS = (0.05, 0.1, 0.25, 1, 2.5, 60)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """(sample name, le) → value, without the `_created` series only prometheus_client has."""
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, s.labels.get("le", ""))] = s.value
    return out


@given(st.lists(st.lists(st.floats(-5, 5000, allow_nan=False)), max_size=6))
def test_batch_histogram_matches_prometheus_histogram(batches: list[list[float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch_h = BatchHistogram("lat_seconds", "help", BUCKETS, ours)
    plain_h = Histogram("lat_seconds", "help", buckets=BUCKETS, registry=theirs)
    for values in batches:
        batch_h.observe_many(iter(values))
        for v in values:
            plain_h.observe(max(v, 0.0))
    got, want = _samples(ours), _samples(theirs)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_values_on_a_bound_count_in_that_bucket_and_text_format_is_a_histogram() -> None:
    registry = CollectorRegistry()
    BatchHistogram("lat_seconds", "Latency.", BUCKETS, registry).observe_many([0.05, 0.0501, 60, 61, -1])
    text = generate_latest(registry).decode()
    assert "# TYPE lat_seconds histogram" in text
    assert 'lat_seconds_bucket{le="0.05"} 2.0' in text  # 0.05 itself and the negative one (as 0)
    assert 'lat_seconds_bucket{le="0.1"} 3.0' in text
    assert 'lat_seconds_bucket{le="60.0"} 4.0' in text
    assert 'lat_seconds_bucket{le="+Inf"} 5.0' in text
    assert "lat_seconds_count 5.0" in text
