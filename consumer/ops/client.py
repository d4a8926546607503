"""Kafka clients for the operator tools, configured like the consumer's own (I/O edge)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.config import Settings
from consumer.source import common_config, kafka_client

TIMEOUT_S = 15.0


class ToolError(Exception):
    """The command cannot go on (exit code 1); the message is one line for the operator."""


def reader(settings: Settings, overrides: dict[str, str], group: str | None = None) -> Consumer:
    """A consumer that never commits by itself and reads only committed records."""
    return kafka_client(
        Consumer,
        {
            **common_config(settings, overrides),
            "group.id": group or f"{settings.kafka_group_id}.ops-reader",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        },
    )


def admin(settings: Settings, overrides: dict[str, str]) -> AdminClient:
    # Notice and above: an admin client being destroyed says "Purging ... background queue" at info.
    return kafka_client(AdminClient, {**common_config(settings, overrides), "log_level": 5})


def partitions(client: Consumer | AdminClient, topic: str) -> list[int]:
    try:
        md = client.list_topics(topic, timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise ToolError(f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS: {exc.args[0].str()}") from None
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise ToolError(f"topic {topic} does not exist")
    return sorted(t.partitions)


def watermarks(consumer: Consumer, topic: str, parts: list[int]) -> dict[int, tuple[int, int]]:
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S) for p in parts}
    except KafkaException as exc:
        raise ToolError(f"cannot read offsets of {topic}: {exc.args[0].str()}") from None


def read(consumer: Consumer, topic: str, start: dict[int, int]) -> Iterator[Message]:
    """Records of `topic` from `start` (partition → offset; negative: the beginning) to the end
    each partition had when the read began. Skips control records and aborted transactions."""
    ends = {p: hi for p, (_, hi) in watermarks(consumer, topic, list(start)).items()}
    todo = {p for p, o in start.items() if ends[p] > max(o, 0)}
    consumer.assign(
        [TopicPartition(topic, p, o if o >= 0 else OFFSET_BEGINNING) for p, o in start.items() if p in todo]
    )
    idle_since = time.monotonic()
    while todo:
        batch = consumer.consume(500, timeout=0.5)
        if batch:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 60:
            raise ToolError(f"no records from {topic} for 60 s while reading partitions {sorted(todo)}")
        for m in batch:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    todo.discard(m.partition())
                    continue
                raise ToolError(f"reading {topic}: {err.str()}")
            if m.partition() not in todo:
                continue
            yield m
            if m.offset() + 1 >= ends[m.partition()]:
                todo.discard(m.partition())
