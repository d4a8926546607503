"""The main loop's pause and position decisions across rebalances, with a fake Kafka consumer.

The fake keeps librdkafka's behaviour that matters here: a pause stays on a partition across
revoke and re-assign, and the position is one past the last record handed out (past skipped
transaction markers). The real `App` methods run on a bare `App` with only what they touch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from consumer.app import App
from consumer.flow import BufferBudget
from consumer.offsets import OffsetTracker
from consumer.source import Source
from consumer.telemetry import Health, Metrics

TOPIC = "t"


@dataclass
class FakeConsumer:
    paused: set[int] = field(default_factory=set)  # librdkafka's per-partition pause flag
    positions: dict[int, int] = field(default_factory=dict)

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused.update(tp.partition for tp in tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused.difference_update(tp.partition for tp in tps)

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, tp.partition, self.positions.get(tp.partition, -1001)) for tp in tps]


@dataclass
class FakeDeadLetters:
    pending: int = 0

    def forget(self, parts: set[int]) -> None:
        pass


@dataclass
class FakeMessage:
    p: int

    def partition(self) -> int:
        return self.p


def bare_app(buffer_max: int = 200) -> tuple[Any, FakeConsumer]:
    consumer = FakeConsumer()
    source = Source.__new__(Source)
    source.topic, source.consumer, source.paused = TOPIC, consumer, set()
    app: Any = App.__new__(App)
    app.topic = TOPIC
    app.metrics = Metrics()
    app.health = Health(60.0, app.metrics)
    app.tracker = OffsetTracker()
    app.budget = BufferBudget(buffer_max)
    app.source = source
    app.dead_letters = FakeDeadLetters()
    app.inbox, app.batcher, app.in_batches = [], [], 0
    app.held, app.headers_of = set(), {}
    return app, consumer


def assign(app: Any, *parts: int) -> None:
    app._on_assign([TopicPartition(TOPIC, p) for p in parts])


def gauge(app: Any) -> float:
    return app.metrics.paused._value.get()


def flow(app: Any, buffered: int) -> None:
    app.in_batches = buffered
    app._flow_control()


def test_a_partition_paused_when_revoked_comes_back_resumed() -> None:
    """The reproduction of issue 13 item 6, step by step."""
    app, kafka = bare_app()
    assign(app, 0, 1, 2, 3)
    flow(app, 200)
    assert kafka.paused == {0, 1, 2, 3} and gauge(app) == 4
    app._release({0, 1})  # revoked while paused: librdkafka keeps the flag
    assert kafka.paused == {0, 1, 2, 3} and gauge(app) == 2, "the gauge counts owned partitions"
    flow(app, 0)  # resumes the partitions it owns
    assert kafka.paused == {0, 1} and gauge(app) == 0
    assign(app, 0, 1)
    assert kafka.paused == set(), "a re-assigned partition must be resumed explicitly"
    assert gauge(app) == 0


def test_a_partition_assigned_while_paused_is_paused_and_counted() -> None:
    app, kafka = bare_app()
    assign(app, 0)
    flow(app, 200)
    assign(app, 1)
    assert kafka.paused == {0, 1} and gauge(app) == 2
    flow(app, 0)
    assert kafka.paused == set() and gauge(app) == 0


def test_a_partition_assigned_while_draining_stays_paused() -> None:
    app, kafka = bare_app()
    app.health.draining = True
    assign(app, 5)
    assert kafka.paused == {5} and gauge(app) == 1


def test_a_held_partition_stays_paused_when_flow_control_resumes() -> None:
    app, kafka = bare_app()
    assign(app, 0, 1)
    flow(app, 200)
    app.held = {1}
    flow(app, 0)
    assert kafka.paused == {1} and gauge(app) == 1


def test_positions_are_learned_except_where_records_wait_in_the_inbox() -> None:
    app, kafka = bare_app()
    assign(app, 0, 1, 2)
    kafka.positions = {0: 11, 1: 40, 2: -1001}
    app.inbox = [FakeMessage(1)]  # records of partition 1 below its position are not tracked yet
    app._learn_positions()
    assert app.tracker.committable() == {0: 11}
