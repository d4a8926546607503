"""`offsets show` and `offsets rewind`: the group's committed offsets on KAFKA_TOPIC (I/O edge).

What `kafka-consumer-groups --reset-offsets` does, with the consumer's own settings and
without the Kafka distribution: a rewind is refused while the group has members (their next
commit would undo it), and it prints the change before making it.
"""

from __future__ import annotations

import time
from typing import TextIO

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

from consumer.config import Settings
from consumer.ops import client, plan

_COORDINATOR_BUSY = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError._TIMED_OUT,
}


def _group(settings: Settings, overrides: dict[str, str]) -> tuple[str, list[str]]:
    """The group's state and its members, one description each."""
    group = settings.kafka_group_id
    admin = client.admin(settings, overrides)
    for attempt in range(6):
        try:
            desc = admin.describe_consumer_groups([group], request_timeout=client.TIMEOUT_S)[group].result()
            break
        except KafkaException as exc:
            # A coordinator still loading (a fresh or restarted broker) answers with a retriable error.
            if attempt == 5 or not (exc.args[0].retriable() or exc.args[0].code() in _COORDINATOR_BUSY):
                raise client.ToolError(
                    f"cannot describe group {group}: {exc.args[0].str() or exc.args[0].name()}"
                ) from None
            time.sleep(1)
    members = []
    for m in desc.members:
        parts = sorted(tp.partition for tp in (m.assignment.topic_partitions if m.assignment else []))
        members.append(f"{m.client_id} {m.host} partitions {parts}")
    return desc.state.name.lower(), members


def _states(settings: Settings, overrides: dict[str, str]) -> list[plan.PartitionState]:
    topic = settings.kafka_topic
    consumer = client.reader(settings, overrides, settings.kafka_group_id)  # never joins: only reads offsets
    try:
        parts = client.partitions(consumer, topic)
        marks = client.watermarks(consumer, topic, parts)
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=client.TIMEOUT_S)
    except KafkaException as exc:
        group = settings.kafka_group_id
        raise client.ToolError(f"cannot read the offsets of group {group}: {exc.args[0].str()}") from None
    finally:
        consumer.close()
    return [plan.PartitionState(tp.partition, tp.offset, *marks[tp.partition]) for tp in committed]


def show(settings: Settings, overrides: dict[str, str], out: TextIO) -> int:
    state, members = _group(settings, overrides)
    states = _states(settings, overrides)
    print(plan.render_show(settings.kafka_group_id, settings.kafka_topic, states, members, state), file=out)
    return 0


def rewind(
    settings: Settings,
    overrides: dict[str, str],
    out: TextIO,
    *,
    to_time_ms: int | None,
    by: int | None,
    to_offset: int | None,
    partitions: list[int] | None,
    dry_run: bool,
) -> int:
    group, topic = settings.kafka_group_id, settings.kafka_topic
    state, members = _group(settings, overrides)
    states = _states(settings, overrides)
    if partitions:
        unknown = sorted(set(partitions) - {s.partition for s in states})
        if unknown:
            raise client.ToolError(f"topic {topic} has no partition {unknown[0]}")
        states = [s for s in states if s.partition in partitions]
    if to_time_ms is not None:
        found = _offsets_for_time(settings, overrides, topic, [s.partition for s in states], to_time_ms)
        changes = plan.to_time(states, found)
    elif by is not None:
        changes = plan.by(states, by)
    else:
        assert to_offset is not None
        changes = plan.to_offset(states, to_offset)
    verb = "would change" if dry_run or members else "changes"
    print(f"group {group} on topic {topic}: this rewind {verb} the committed offsets", file=out)
    print(plan.render_changes(changes), file=out, flush=True)
    if members:
        raise client.ToolError(
            f"refused: group {group} has {len(members)} active members ({state}); stop the consumer first "
            "(kubectl scale deployment --replicas=0), then run the rewind again: " + "; ".join(members)
        )
    if dry_run:
        print("dry run: nothing changed", file=out)
        return 0
    tps = [TopicPartition(topic, c.partition, c.new) for c in changes]
    admin = client.admin(settings, overrides)
    try:
        result = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, tps)], request_timeout=client.TIMEOUT_S
        )[group].result()
    except KafkaException as exc:
        # The group may have gained a member since the check: the broker refuses then.
        raise client.ToolError(f"rewind refused by Kafka: {exc.args[0].str()}; nothing changed") from None
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        why = ", ".join(f"{tp.partition}: {tp.error.str()}" for tp in failed)
        raise client.ToolError(f"rewind failed on partitions {why}")
    print(f"done: {len(tps)} partitions rewound; the consumer re-sends from there when it starts", file=out)
    return 0


def _offsets_for_time(
    settings: Settings, overrides: dict[str, str], topic: str, parts: list[int], ms: int
) -> dict[int, int]:
    consumer = client.reader(settings, overrides)
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], timeout=client.TIMEOUT_S)
    except KafkaException as exc:
        raise client.ToolError(f"cannot look up offsets by time: {exc.args[0].str()}") from None
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found}
