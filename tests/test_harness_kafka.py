"""The Kafka harness runs a real broker that keeps its port and data across a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from harness.kafka import KafkaBroker

pytestmark = pytest.mark.integration


def _consume_one(bootstrap: str, group: str, topic: str, timeout: float = 30) -> tuple[int, bytes, bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            consumer.commit(message=msg, asynchronous=False)
            return msg.partition(), msg.key(), msg.value()
        pytest.fail(f"no record from {topic} within {timeout}s")
    finally:
        consumer.close()


def test_broker_round_trip_survives_restart(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    try:
        broker.start()
        broker.create_topic("harness-check", partitions=3)
        md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics("harness-check", timeout=10)
        assert len(md.topics["harness-check"].partitions) == 3

        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        producer.produce("harness-check", key=b"group-1", value=b"hello", partition=2)
        assert producer.flush(10) == 0
        assert _consume_one(broker.bootstrap, "g1", "harness-check") == (2, b"group-1", b"hello")

        bootstrap = broker.bootstrap
        broker.stop()
        assert not broker.is_running()
        broker.start()
        assert broker.bootstrap == bootstrap

        # the record and g1's committed offset both survived the restart
        assert _consume_one(bootstrap, "g2", "harness-check") == (2, b"group-1", b"hello")
        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "g1"})
        try:
            committed = probe.committed([TopicPartition("harness-check", 2)], timeout=10)
        finally:
            probe.close()
        assert committed[0].offset == 1
    finally:
        broker.kill()
