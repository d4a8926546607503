"""The Kafka consumer: configuration, pause/resume, commits, and error logging (I/O edge).

Only the main thread touches the consumer: `consume()` runs the rebalance callbacks on it,
so offsets, pauses and commits never race with a rebalance.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer import __version__
from consumer.config import KAFKA_CFG_PREFIX, ConfigError, Settings, setting_name
from consumer.throttle import Throttle

T = TypeVar("T")

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 30.0

# Our defaults; any of them can be overridden with KAFKA_CFG_<NAME>.
CONSUMER_DEFAULTS: dict[str, object] = {
    "enable.auto.commit": False,  # commits follow delivery, never a timer
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",  # a new group starts from the oldest retained record
    "partition.assignment.strategy": "cooperative-sticky",
    "statistics.interval.ms": 5000,
    # 3 s by default: a joining consumer then waits ~6 s for its partitions (1 s: ~1 s).
    "heartbeat.interval.ms": 1000,  # per-partition lag for group_enriched_consumer_lag
    # Bound librdkafka's prefetch: the flow-control budget is the real buffer.
    "queued.max.messages.kbytes": 16384,
    # Once that bound is reached librdkafka waits this long before fetching again. Its default,
    # 1000 ms, is longer than the ~0.7 s one process takes to read the 16 MB: the queue ran dry
    # 4 times in a 200,000-record run (50 ms each). 100 ms: never (docs/benchmarks.md).
    "fetch.queue.backoff.ms": 100,
    "fetch.max.bytes": 16 * 1024 * 1024,
}


def common_config(settings: Settings, overrides: dict[str, str]) -> dict[str, object]:
    """Settings shared by the consumer, the dead-letter producer and the admin client."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": f"group-enriched-consumer-{__version__}@{socket.gethostname()}",
        "logger": logging.getLogger("librdkafka"),  # librdkafka's own log lines as JSON too
        **{k: v for k, v in overrides.items() if k in _SHARED_KEYS or k.startswith(_SHARED_PREFIXES)},
    }


_SHARED_PREFIXES = ("security.", "sasl.", "ssl.", "ssl_")
_SHARED_KEYS = {"client.id", "client.rack", "socket.keepalive.enable", "broker.address.family", "debug"}


# Commit errors that a rebalance or a coordinator move causes: the same commit succeeds once it is over.
_COMMIT_RETRIABLE = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._WAIT_COORD,
}


def commit_retriable(err: KafkaError) -> bool:
    """True when a failed commit is worth retrying (after serving the group); never for a fatal error."""
    return not err.fatal() and (err.code() in _COMMIT_RETRIABLE or err.retriable())


def kafka_client(cls: type[T], config: dict[str, object]) -> T:
    """Create a librdkafka client; a bad KAFKA_CFG_* property becomes a one-line ConfigError."""
    try:
        return cls(config)
    except (KafkaException, ValueError, TypeError) as exc:
        detail = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        named = re.search(r'"([a-z0-9._]+)"', detail)  # librdkafka quotes the property it refuses
        setting = setting_name(KAFKA_CFG_PREFIX, named.group(1)) if named else "KAFKA_CFG_*"
        if not named and "SASL mechanism" in detail:  # librdkafka names the value, not the property
            key = "sasl.mechanisms" if "sasl.mechanisms" in config else "sasl.mechanism"
            setting = setting_name(KAFKA_CFG_PREFIX, key)
        raise ConfigError(f"{setting} is invalid: {detail}") from None


class Source:
    def __init__(
        self,
        settings: Settings,
        overrides: dict[str, str],
        on_assign: Callable[[list[TopicPartition]], None],
        on_revoke: Callable[[list[TopicPartition]], None],
        on_lost: Callable[[list[TopicPartition]], None],
        on_stats: Callable[[str], None],
    ) -> None:
        self.topic = settings.kafka_topic
        self._error_log = Throttle(ERROR_LOG_INTERVAL_S)
        self.fatal: str | None = None  # set when librdkafka reports a fatal error: the app must stop
        # Partitions we paused and did not resume since. librdkafka keeps a pause across revoke and
        # re-assign, so this may name partitions not assigned now; every assignment sets the state.
        self.paused: set[int] = set()
        config = {
            **common_config(settings, overrides),
            **CONSUMER_DEFAULTS,
            "group.id": settings.kafka_group_id,
            "error_cb": self._on_error,
            "stats_cb": on_stats,
            "on_commit": self._on_commit,
            **overrides,
        }
        self._committed: Callable[[int, int], None] = lambda p, o: None
        self.consumer = kafka_client(Consumer, config)
        self._callbacks = (on_assign, on_revoke, on_lost)

    def start(self, committed: Callable[[int, int], None]) -> None:
        """Subscribe; `committed(partition, offset)` hears of every successful commit."""
        self._committed = committed
        on_assign, on_revoke, on_lost = self._callbacks
        self.consumer.subscribe(
            [self.topic],
            on_assign=lambda _c, parts: on_assign(parts),
            on_revoke=lambda _c, parts: on_revoke(parts),
            on_lost=lambda _c, parts: on_lost(parts),
        )

    def consume(self, max_records: int, timeout_s: float) -> list[Message]:
        if max_records <= 0:
            # Paused by flow control: still call in, so rebalances and heartbeats are served.
            self.consumer.poll(timeout_s)
            return []
        return self.consumer.consume(num_messages=max_records, timeout=timeout_s)

    def set_paused(self, partitions: list[int], paused: bool) -> None:
        tps = [TopicPartition(self.topic, p) for p in partitions]
        if tps:
            (self.consumer.pause if paused else self.consumer.resume)(tps)
            (self.paused.update if paused else self.paused.difference_update)(partitions)

    def positions(self, partitions: list[int]) -> dict[int, int]:
        """The consumer's position per partition: one past the last record handed out, and past the
        control records and aborted transactions it skipped; partitions with none yet are left out."""
        if not partitions:
            return {}
        try:
            tps = self.consumer.position([TopicPartition(self.topic, p) for p in partitions])
        except KafkaException:
            return {}
        return {tp.partition: tp.offset for tp in tps if tp.error is None and tp.offset >= 0}

    def commit(self, offsets: dict[int, int], wait: bool) -> KafkaError | None:
        """Commit `offsets` (next offset to read, per partition).

        Asynchronous: a failure is logged when reported and the next commit carries the same
        offsets again. Synchronous: returns the error (None once every offset is stored), so the
        caller can retry while the group rebalances.
        """
        if not offsets:
            return None
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        try:
            result = self.consumer.commit(offsets=tps, asynchronous=not wait)
        except KafkaException as exc:
            self._commit_failed(exc.args[0])
            return exc.args[0]
        if wait and result:
            self._on_commit(None, result)
            return next((tp.error for tp in result if tp.error is not None), None)
        return None

    def serve(self, timeout_s: float) -> None:
        """Serve group events (a rebalance's callbacks run here) without taking records.

        Used while leaving with every partition paused: a record handed out anyway (from a
        partition assigned meanwhile) is dropped untracked, so no commit can pass it.
        """
        self.consumer.poll(timeout_s)

    def close(self) -> None:
        self.consumer.close()

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            self._commit_failed(err)
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                self._committed(tp.partition, tp.offset)

    def _commit_failed(self, err: KafkaError) -> None:
        # A coordinator outage fails every commit (5 a second with a short interval): each kind every 30 s.
        if self._error_log.allow(("commit", err.code())):
            log.warning("offset commit failed, will retry: %s", err.str())

    def consume_error(self, err: KafkaError) -> None:
        """An error consume() handed out in place of a record: a fatal one stops the app (librdkafka
        delivers it this way, not to `error_cb`, when the consumer polls); others are logged once
        per kind every 30 s (outages repeat them)."""
        if err.fatal() or err.code() == KafkaError._FATAL:
            self.fatal = self.fatal or err.str()
        elif self._error_log.allow(("consume", err.code())):
            log.warning("Kafka consume error: %s", err.str())

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() == KafkaError._FATAL:
            self.fatal = self.fatal or err.str()
            return
        # Broker outages repeat the same error many times a second: log each kind at most every 30 s.
        if self._error_log.allow(err.code()):
            log.warning("Kafka: %s", err.str())
