"""Kafka helpers for tests, the demo and benchmarks: topics, producing, reading offsets and dead letters."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

_QUIET = logging.getLogger("harness.kafka-client")
_QUIET.setLevel(logging.ERROR)  # "coordinator load in progress" retries on a fresh broker are noise here


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    future = admin.create_topics([NewTopic(name, num_partitions=partitions)])
    try:
        future[name].result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def topic_exists(bootstrap: str, name: str) -> bool:
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return name in topics and topics[name].error is None


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]], partitions: int | None = None
) -> list[tuple[int, int]]:
    """Produce (key, value) pairs; returns their (partition, offset) in input order.

    With `partitions`, record i goes to partition i % partitions (an even spread);
    otherwise the key decides.
    """
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all", "enable.idempotence": True, "logger": _QUIET}
    )
    positions: list[tuple[int, int] | None] = []

    def report(index: int):  # type: ignore[no-untyped-def]
        def cb(err: KafkaError | None, msg) -> None:  # type: ignore[no-untyped-def]
            if err is not None:
                raise KafkaException(err)
            positions[index] = (msg.partition(), msg.offset())

        return cb

    for i, (key, value) in enumerate(records):
        positions.append(None)
        kwargs = {"partition": i % partitions} if partitions else {}
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report(i), **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("records not acknowledged by the broker within 60 s")
    assert all(p is not None for p in positions)
    return positions  # type: ignore[return-value]


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "offset-reader"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (-1001 where nothing is committed)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


@dataclass
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


def read_all(bootstrap: str, topic: str, expect: int, timeout_s: float = 30) -> list[DeadLetter]:
    """Read a topic from the start until `expect` records arrived or the time ran out."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for m in c.consume(500, timeout=0.5):
                if m.error() is None:
                    headers = {k: v.decode() for k, v in (m.headers() or [])}
                    out.append(DeadLetter(m.key(), m.value(), headers))
    finally:
        c.close()
    return out
