"""Rebalances against per-partition state on real parts: flow-control pauses and lag series.

librdkafka keeps an application's pause on a partition across revoke and re-assign, and its
statistics keep listing partitions it no longer fetches. A consumer must set each assigned
partition's pause state itself and report lag only for the partitions it owns now.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration


def partitions_logged(proc: ConsumerProcess, msg: str) -> list[list[int]]:
    return [e["partitions"] for e in proc.log_entries(msg) if e.get("msg") == msg and e.get("partitions")]


def lag_partitions(proc: ConsumerProcess) -> dict[int, float]:
    out = {}
    for key, value in proc.metrics().items():
        if key.startswith("group_enriched_consumer_lag{"):
            out[int(key.split('partition="')[1].split('"')[0])] = value
    return out


class Gate:
    """A Track API answer: 503 while closed (the consumer keeps the events and retries), the default when open."""

    def __init__(self, is_open: bool = True) -> None:
        self.open = threading.Event()
        if is_open:
            self.open.set()

    def __call__(self, events: list[dict[str, Any]], headers: dict[str, str]) -> tuple[int, dict[str, str]] | None:
        return None if self.open.is_set() else (503, {})


def produce_spread(bootstrap: str, topic: str, partitions: int, n: int, tag: str, only: int | None = None) -> set[str]:
    """n records, spread evenly over the partitions or all on partition `only`; returns their user ids."""
    records = [sample_record(i, tag) for i in range(n)]
    if only is None:
        kafkautil.produce(bootstrap, topic, [(None, encode_raw(r)) for r in records], partitions)
    else:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for r in records:
            producer.produce(topic, value=encode_raw(r), partition=only)
        assert producer.flush(30) == 0
    return {r["user_id"] for r in records}


def test_flow_control_pause_does_not_outlive_a_rebalance(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Paused by flow control, A loses 2 of 4 partitions to B, resumes, gets them back when B stops: reads them all."""
    partitions = 4
    topic = new_topic(kafka_bootstrap, partitions, "pause")
    first = produce_spread(kafka_bootstrap, topic, partitions, 1000, "pause1")
    gate = Gate(is_open=False)
    api_a, api_b = TrackApi(respond=gate).start(), TrackApi().start()
    small = {"BUFFER_MAX_EVENTS": "200", "BATCH_MAX_EVENTS": "50", "SHUTDOWN_TIMEOUT_S": "2"}
    env_a = consumer_env(kafka_bootstrap, topic, api_a, **small)
    env_b = consumer_env(kafka_bootstrap, topic, api_b, **small)
    group = env_a["KAFKA_GROUP_ID"]
    a = ConsumerProcess(env_a, tmp_path / "a.log")
    b = ConsumerProcess(env_b, tmp_path / "b.log")
    logs = lambda: a.logs()[-2500:] + "\n--- b ---\n" + b.logs()[-1500:]  # noqa: E731
    try:
        a.start().wait_ready()
        paused = lambda: a.metrics()["group_enriched_paused_partitions"]  # noqa: E731
        wait_until(lambda: paused() == partitions, 60, "A paused by flow control", logs)

        b.start().wait_ready()
        wait_until(lambda: partitions_logged(a, "partitions revoked"), 60, "A loses partitions to B", logs)
        revoked = partitions_logged(a, "partitions revoked")[0]
        assert len(revoked) == 2, revoked
        # The gauge counts the partitions A owns and paused (0 if the revoke freed enough buffer to resume).
        assert paused() in (partitions - len(revoked), 0), paused()

        gate.open.set()  # A delivers what it holds, and resumes the partitions it still owns
        everything = lambda: {e["user_id"] for e in api_a.events + api_b.events}  # noqa: E731
        wait_until(lambda: first <= everything(), 90, "the first 1,000 records delivered by A and B", logs)
        wait_until(lambda: paused() == 0, 30, "A resumed", logs)

        assert b.stop(signal.SIGTERM) == 0, b.logs()[-2000:]
        wait_until(lambda: len(partitions_logged(a, "partitions assigned")) >= 2, 60, "A gets them back", logs)

        # Fewer than BUFFER_MAX_EVENTS: flow control does not pause (and resume every partition) again.
        second = produce_spread(kafka_bootstrap, topic, partitions, 160, "pause2")

        def missing() -> str:
            got = {e["user_id"] for e in api_a.events}
            return f"{logs()}\n{len(second - got)} of {len(second)} new records missing; paused gauge {paused()}"

        wait_until(lambda: second <= {e["user_id"] for e in api_a.events}, 60, "A reads every partition", missing)
        wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, partitions), 30, "offsets at the end", logs)
        assert paused() == 0
        assert a.stop(signal.SIGTERM) == 0, a.logs()[-2000:]
    finally:
        a.kill()
        b.kill()
        api_a.kill()
        api_b.kill()


def test_a_revoked_partitions_lag_series_does_not_come_back(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A owns 2 partitions, B takes one: A's next statistics must not bring the revoked partition's series back."""
    topic = new_topic(kafka_bootstrap, 2, "lagrev")
    first = produce_spread(kafka_bootstrap, topic, 2, 200, "lagrev1")
    gate = Gate()
    api_a, api_b = TrackApi(respond=gate).start(), TrackApi().start()
    env_a = consumer_env(kafka_bootstrap, topic, api_a)
    env_b = consumer_env(kafka_bootstrap, topic, api_b)
    group = env_a["KAFKA_GROUP_ID"]
    a = ConsumerProcess(env_a, tmp_path / "a.log")
    b = ConsumerProcess(env_b, tmp_path / "b.log")
    logs = lambda: a.logs()[-2500:] + "\n--- b ---\n" + b.logs()[-1500:]  # noqa: E731
    try:
        a.start().wait_ready()
        assert api_a.wait_for(len(first), 60)
        wait_until(lambda: lag_partitions(a) == {0: 0, 1: 0}, 30, "A's lag 0 on both partitions", logs)

        b.start().wait_ready()
        wait_until(lambda: partitions_logged(a, "partitions revoked"), 60, "A loses a partition to B", logs)
        (revoked,) = partitions_logged(a, "partitions revoked")[0]
        kept = 1 - revoked

        # A stops delivering; 50 new records on the partition it kept raise its lag there, which only
        # statistics taken after the revoke can report.
        gate.open.clear()
        extra = produce_spread(kafka_bootstrap, topic, 2, 50, "lagrev2", only=kept)
        wait_until(lambda: lag_partitions(a).get(kept) == 50, 30, "A's lag 50 on the partition it kept", logs)
        assert lag_partitions(a) == {kept: 50}, f"series of partitions A does not own: {lag_partitions(a)}"

        gate.open.set()
        wait_until(lambda: extra <= {e["user_id"] for e in api_a.events}, 60, "A delivers the rest", logs)
        wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, 2), 30, "offsets at the end", logs)
        assert b.stop(signal.SIGTERM) == 0
        assert a.stop(signal.SIGTERM) == 0
    finally:
        a.kill()
        b.kill()
        api_a.kill()
        api_b.kill()
