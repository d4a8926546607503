"""Metrics.update_lag: librdkafka statistics JSON → group_enriched_consumer_lag."""

from __future__ import annotations

import json

from consumer.telemetry import Metrics

TOPIC = "group-enrichment"


def stats(**partitions: dict[str, int]) -> str:
    """A statistics document shaped like librdkafka's, for partitions named p0, p1, ... and the internal -1."""
    parts = {name.removeprefix("p"): {"partition": int(name.removeprefix("p")), **v} for name, v in partitions.items()}
    parts["-1"] = {"partition": -1, "hi_offset": -1, "ls_offset": -1, "committed_offset": -1001}
    return json.dumps({"name": "rdkafka#consumer-1", "topics": {TOPIC: {"topic": TOPIC, "partitions": parts}}})


def series(m: Metrics) -> dict[str, float]:
    out = {}
    for family in m.registry.collect():
        if family.name == "group_enriched_consumer_lag":
            for s in family.samples:
                assert s.labels["topic"] == TOPIC
                out[s.labels["partition"]] = s.value
    return out


OPEN_TXN = {"lo_offset": 0, "hi_offset": 51, "ls_offset": 21, "committed_offset": 21}


def test_read_committed_measures_from_the_last_stable_offset() -> None:
    """30 records of an open transaction lie above the last stable offset: not readable, not lag."""
    m = Metrics()
    m.update_lag(stats(p0=OPEN_TXN), TOPIC, {0})
    assert series(m) == {"0": 0}


def test_read_uncommitted_measures_from_the_high_watermark() -> None:
    m = Metrics()
    m.update_lag(stats(p0=OPEN_TXN), TOPIC, {0}, read_committed=False)
    assert series(m) == {"0": 30}


def test_only_owned_partitions_get_a_series() -> None:
    m = Metrics()
    both = stats(p0=OPEN_TXN, p1={"lo_offset": 0, "hi_offset": 90, "ls_offset": 90, "committed_offset": 40})
    m.update_lag(both, TOPIC, {0, 1})
    assert series(m) == {"0": 0, "1": 50}
    m.forget_partition(TOPIC, 1)  # revoked
    m.update_lag(both, TOPIC, {0})  # the next statistics still list partition 1, frozen
    assert series(m) == {"0": 0}, "a revoked partition's series came back"


def test_nothing_committed_yet_counts_from_the_log_start() -> None:
    m = Metrics()
    m.update_lag(stats(p0={"lo_offset": 10, "hi_offset": 25, "ls_offset": 25, "committed_offset": -1001}), TOPIC, {0})
    assert series(m) == {"0": 15}


def test_unknown_end_offset_gives_no_series() -> None:
    m = Metrics()
    m.update_lag(stats(p0={"lo_offset": -1, "hi_offset": -1, "ls_offset": -1, "committed_offset": -1001}), TOPIC, {0})
    assert series(m) == {}


def test_lag_never_negative_and_other_topics_ignored() -> None:
    m = Metrics()
    m.update_lag(stats(p0={"lo_offset": 0, "hi_offset": 5, "ls_offset": 5, "committed_offset": 7}), TOPIC, {0})
    m.update_lag(stats(p0={"lo_offset": 0, "hi_offset": 9, "ls_offset": 9, "committed_offset": 0}), "other", {0})
    assert series(m) == {"0": 0}


def test_help_text_names_the_last_stable_offset() -> None:
    (family,) = [f for f in Metrics().registry.collect() if f.name == "group_enriched_consumer_lag"]
    assert "last stable offset" in family.documentation.lower()
