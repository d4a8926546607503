"""Offset gaps on real parts: a transactional upstream (control records, aborted ranges) and a compacted topic.

Offsets a consumer never sees (transaction markers, aborted records skipped under
`read_committed`, records removed by compaction) must not hold the commit back: once
everything read from a partition is delivered, the committed offset reaches the end
offset and `group_enriched_consumer_lag` reaches 0.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.support import consumer_env, new_topic, wait_until

pytestmark = pytest.mark.integration


def lag_series(proc: ConsumerProcess) -> dict[str, float]:
    return {k: v for k, v in proc.metrics().items() if k.startswith("group_enriched_consumer_lag{")}


def produce_transactions(
    bootstrap: str, topic: str, partitions: int, per_partition: int, aborted: list[bool], tag: str
) -> tuple[set[str], set[str]]:
    """One transaction per entry of `aborted`, `per_partition` records on each partition; (committed, aborted) ids."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"txn-{uuid.uuid4().hex[:8]}", "linger.ms": 5}
    )
    producer.init_transactions(30)
    kept: set[str] = set()
    dropped: set[str] = set()
    n = 0
    for abort in aborted:
        producer.begin_transaction()
        for _ in range(per_partition):
            for p in range(partitions):
                record = sample_record(n, tag)
                n += 1
                producer.produce(topic, encode_raw(record), partition=p)
                (dropped if abort else kept).add(record["user_id"])
            producer.poll(0)
        if abort:
            producer.flush(30)  # the records reach the log, then the abort marker
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    # The coordinator writes the markers after commit/abort returns: each transaction ends in one per partition.
    ends = {p: len(aborted) * (per_partition + 1) for p in range(partitions)}
    wait_until(lambda: kafkautil.end_offsets(bootstrap, topic, partitions) == ends, 30, f"end offsets {ends}")
    return kept, dropped


def run_to_the_end(bootstrap: str, topic: str, partitions: int, expected: set[str]) -> tuple[TrackApi, dict]:
    """Run the consumer until every expected event arrived and the commit reached the end offsets."""
    with TrackApi() as api:
        env = consumer_env(bootstrap, topic, api)
        group = env["KAFKA_GROUP_ID"]
        ends = kafkautil.end_offsets(bootstrap, topic, partitions)
        with ConsumerProcess(env) as proc:
            proc.wait_ready()
            assert api.wait_for(len(expected), 60), f"{api.count()} of {len(expected)} delivered"

            def figures() -> str:
                committed = kafkautil.committed_offsets(bootstrap, group, topic, partitions)
                return f"committed {committed} end {ends} lag {lag_series(proc)}\n{proc.logs()}"

            wait_until(
                lambda: kafkautil.committed_offsets(bootstrap, group, topic, partitions) == ends,
                30,
                "committed offsets == end offsets",
                figures,
            )
            wait_until(lambda: list(lag_series(proc).values()) == [0.0] * partitions, 30, "consumer lag 0", figures)
            metrics = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
    return api, metrics


def test_transactions_some_aborted_the_last_aborted(kafka_bootstrap: str) -> None:
    """7 transactions over 2 partitions, 3 aborted (the last one too): committed once, aborted never, lag 0."""
    topic = new_topic(kafka_bootstrap, 2, "txn")
    aborted = [False, True, False, False, True, False, True]
    kept, dropped = produce_transactions(kafka_bootstrap, topic, 2, 60, aborted, "txn")
    api, metrics = run_to_the_end(kafka_bootstrap, topic, 2, kept)
    delivered = [e["user_id"] for e in api.events]
    assert len(delivered) == len(kept) == 4 * 2 * 60
    assert set(delivered) == kept, "every committed record delivered"
    assert not set(delivered) & dropped, "an aborted record was delivered"
    assert metrics["group_enriched_records_consumed_total"] == len(kept)


def test_one_committed_transaction_trailing_marker(kafka_bootstrap: str) -> None:
    """One committed transaction: the commit marker is the last offset, and the commit passes it."""
    topic = new_topic(kafka_bootstrap, 1, "txn1")
    kept, _ = produce_transactions(kafka_bootstrap, topic, 1, 10, [False], "txn1")
    api, _ = run_to_the_end(kafka_bootstrap, topic, 1, kept)
    assert sorted(e["user_id"] for e in api.events) == sorted(kept)


def test_compacted_topic_with_offset_gaps(kafka_bootstrap: str) -> None:
    """Compaction removed superseded records: the latest value of each key arrives, the commit reaches the end."""
    topic = f"compact-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    config = {
        "cleanup.policy": "compact",
        "segment.ms": "100",  # every produce after 100 ms rolls a segment: the older ones are cleanable
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100",
    }
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(30)
    keys = [f"company-{k}".encode() for k in range(10)]
    latest: dict[bytes, str] = {}
    n = 0
    for _round in range(5):
        rows = []
        for key in keys:
            record = sample_record(n, "compact")
            n += 1
            latest[key] = record["user_id"]
            rows.append((key, encode_raw(record)))
        kafkautil.produce(kafka_bootstrap, topic, rows)

    def end() -> int:
        return kafkautil.end_offsets(kafka_bootstrap, topic, 1)[0]

    def readable(until: int) -> int:
        """Records left below offset `until` (reads until that many arrived, or 5 s with fewer)."""
        return len(kafkautil.read_all(kafka_bootstrap, topic, until, timeout_s=5))

    # The log cleaner runs every 15 s by default; a produce after segment.ms rolls the last full segment.
    def compacted() -> bool:
        kafkautil.produce(kafka_bootstrap, topic, [(keys[0], encode_raw(sample_record(0, "compact")))])
        latest[keys[0]] = "compact-user-0"
        return readable(end()) < end()

    wait_until(compacted, 90, "the log cleaner to remove superseded records")
    last = end()
    api, _ = run_to_the_end(kafka_bootstrap, topic, 1, set(latest.values()))
    assert api.count() < last, f"{api.count()} records delivered below end offset {last}: no offset gaps"
    assert set(latest.values()) <= {e["user_id"] for e in api.events}, "the latest value of a key is missing"


def test_lag_counts_to_the_last_stable_offset_under_read_committed(kafka_bootstrap: str) -> None:
    """An open transaction's records are not readable yet: lag is measured to the last stable offset, 0 here."""
    topic = new_topic(kafka_bootstrap, 1, "txnopen")
    kept, _ = produce_transactions(kafka_bootstrap, topic, 1, 20, [False], "txnopen")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"open-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    pending = [sample_record(i, "txnpending") for i in range(30)]
    for record in pending:
        producer.produce(topic, encode_raw(record), partition=0)
    producer.flush(30)  # acknowledged: in the log (high watermark 51) above the last stable offset (21)
    with TrackApi() as api:
        env = consumer_env(kafka_bootstrap, topic, api)
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env) as proc:
            proc.wait_ready()
            assert api.wait_for(len(kept), 60)
            committed = lambda: kafkautil.committed_offsets(kafka_bootstrap, group, topic, 1)  # noqa: E731
            wait_until(lambda: committed() == {0: 21}, 30, "commit at the last stable offset", lambda: str(committed()))
            figures = lambda: f"lag {lag_series(proc)} committed {committed()}"  # noqa: E731
            wait_until(lambda: list(lag_series(proc).values()) == [0.0], 30, "lag 0 below an open transaction", figures)
            producer.commit_transaction(30)
            assert api.wait_for(len(kept) + len(pending), 60)
            wait_until(lambda: committed() == {0: 52}, 30, "commit past the second marker", figures)
            wait_until(lambda: list(lag_series(proc).values()) == [0.0], 30, "lag 0 at the end", figures)
            assert proc.stop() == 0, proc.logs()[-2000:]
    assert sorted(e["user_id"] for e in api.events) == sorted(kept | {r["user_id"] for r in pending})
