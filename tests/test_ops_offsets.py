"""`offsets show` and `offsets rewind` on a real broker, with the real consumer before and after."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumer.ops.selection import iso
from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.ops_support import run_tool
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration


def produce_at(bootstrap: str, topic: str, rows: list[tuple[int, bytes, int]]) -> None:
    """(partition, value, timestamp ms) with explicit timestamps, so `--to-time` has exact boundaries."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for partition, value, ts in rows:
        producer.produce(topic, value=value, key=None, partition=partition, timestamp=ts)
    assert producer.flush(30) == 0


def test_rewind_to_time_resends_exactly_the_records_from_that_time(kafka_bootstrap: str, tmp_path: Path) -> None:
    """40 records, 24 before T and 16 from T on, delivered and committed. A rewind while the consumer runs is
    refused and changes nothing; after it stops, `--to-time T` moves the offsets to T's first records and the
    next consumer run sends exactly those 16 again (no more, none twice)."""
    topic = new_topic(kafka_bootstrap, 2, "rewind")
    base = int(time.time() * 1000) - 3_600_000
    boundary = base + 1_800_000  # T: half an hour after the first batch
    before = [(i % 2, encode_raw(sample_record(i, "old")), base + i) for i in range(24)]
    after = [(i % 2, encode_raw(sample_record(i, "new")), boundary + i) for i in range(16)]
    produce_at(kafka_bootstrap, topic, before + after)
    expected_again = {f"new-user-{i}" for i in range(16)}

    with TrackApi() as api:
        env = consumer_env(kafka_bootstrap, topic, api)
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "first.log") as proc:
            proc.wait_ready()
            wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, 2), 60, "all 40 committed", proc.logs)
            shown = run_tool(env, "offsets", "show")
            refused = run_tool(env, "offsets", "rewind", "--to-time", iso(boundary))
            committed_while_running = kafkautil.committed_offsets(kafka_bootstrap, group, topic, 2)
            assert proc.stop() == 0
        assert api.count() == 40
    print(shown.stdout, refused.stdout, refused.stderr, sep="\n")
    assert shown.returncode == 0, shown.stderr
    assert "1 active members" in shown.stdout and "partitions [0, 1]" in shown.stdout
    assert [line.split()[1:] for line in shown.stdout.splitlines()[2:4]] == [["20", "20", "0"], ["20", "20", "0"]]
    assert refused.returncode == 1
    assert "refused: group" in refused.stderr and "1 active members" in refused.stderr
    assert "this rewind would change" in refused.stdout
    assert committed_while_running == {0: 20, 1: 20}

    dry = run_tool(env, "offsets", "rewind", "--to-time", iso(boundary), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing changed" in dry.stdout
    assert kafkautil.committed_offsets(kafka_bootstrap, group, topic, 2) == {0: 20, 1: 20}
    by = run_tool(env, "offsets", "rewind", "--by", "3", "--partition", "1", "--dry-run")
    assert [line.split() for line in by.stdout.splitlines()[2:3]] == [["1", "20", "17", "3"]]

    rewind = run_tool(env, "offsets", "rewind", "--to-time", iso(boundary))
    print(rewind.stdout)
    assert rewind.returncode == 0, rewind.stderr
    assert [line.split() for line in rewind.stdout.splitlines()[2:5]] == [
        ["0", "20", "12", "8"],
        ["1", "20", "12", "8"],
        ["total", "16"],
    ]
    assert kafkautil.committed_offsets(kafka_bootstrap, group, topic, 2) == {0: 12, 1: 12}

    with TrackApi() as again:
        env = consumer_env(kafka_bootstrap, topic, again)
        with ConsumerProcess(env, tmp_path / "second.log") as proc:
            proc.wait_ready()
            wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, 2), 60, "committed again", proc.logs)
            assert proc.stop() == 0
        sent = Counter(e["user_id"] for e in again.events)
    assert set(sent) == expected_again, sorted(set(sent) ^ expected_again)
    assert max(sent.values()) == 1
    assert sum(sent.values()) == 16
