"""The dead-letter topic: records that can never be delivered, with the reason in headers (I/O edge)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from consumer.dlqpolicy import KEY_OMITTED, Refusals, error_kind, smaller
from consumer.offsets import Ticket
from consumer.ops.headers import Headers, carried
from consumer.source import kafka_client
from consumer.throttle import Throttle

if TYPE_CHECKING:
    from consumer.telemetry import Metrics

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1000  # a schema-resolution error quotes both schemas: ~15 KB
BROKER_DEFAULT_MAX_BYTES = 1_048_588  # a topic's max.message.bytes when nothing says otherwise
# Room for the dead letter's headers and record overhead on top of the largest record the source holds.
HEADROOM_BYTES = 64 * 1024
# librdkafka retries transient errors (a leader election, a broker restart) on its own for this
# long; a dead letter it still cannot store is then refused to us, held, and tried again with backoff.
MESSAGE_TIMEOUT_MS = 30_000
RETRY_BASE_S = 0.5  # first retry of a refused dead letter after 0.25-0.5 s, doubling up to RETRY_BACKOFF_MAX_S
LOG_INTERVAL_S = 30.0  # one "dead-letter write failed" line per kind of error per interval

Acked = Callable[[Ticket, str], None]  # (ticket, reason) once the broker has the dead letter


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


class KafkaUnreachable(Exception):
    """Kafka did not answer (down, wrong address, refused credentials); worth trying again."""


@dataclass(slots=True)
class _Letter:
    """A dead letter not yet stored."""

    ticket: Ticket
    reason: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    fresh: bool = True  # never refused: revoke and shutdown wait for it, within their budget
    # What each retry starts from, whole again: the topic's limit may have been raised meanwhile.
    original: tuple[bytes | None, bytes | None, list[tuple[str, bytes]]] = field(init=False)

    def __post_init__(self) -> None:
        self.original = (self.key, self.value, self.headers)


class DeadLetters:
    """Produces dead letters idempotently (acks=all) and reports each one once it is stored.

    A dead letter the broker refuses is never acked (its record stays uncommitted): it is tried
    again with backoff (`dlqpolicy.Refusals`), counted in `dead_letter_failures_total{error}`,
    logged once per kind of error every `LOG_INTERVAL_S`, and its partition is named by
    `stuck_partitions()` for the main loop to pause. One refused as too large is written
    without its value instead (`dlqpolicy.smaller`).
    """

    def __init__(
        self,
        config: dict[str, object],
        topic: str,
        on_acked: Acked,
        metrics: Metrics | None = None,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.topic = topic
        self._on_acked = on_acked
        self._metrics = metrics
        self._config = {
            **config,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        }
        self._producer = kafka_client(Producer, self._config)  # a bad setting fails here, at start-up
        self.max_bytes = 1_000_000  # librdkafka's default message.max.bytes
        self._letters: dict[int, _Letter] = {}
        self._next_id = 0
        self._refusals = Refusals(RETRY_BASE_S, backoff_max_s)
        self._say = Throttle(LOG_INTERVAL_S)
        self._refused_since_log: dict[str, int] = {}
        self._given_up: set[int] = set()

    @property
    def pending(self) -> int:
        """Dead letters not yet stored (in the producer's queue or waiting to be tried again)."""
        return len(self._letters)

    @property
    def stuck(self) -> int:
        """Dead letters refused and not yet stored."""
        return self._refusals.stuck

    def stuck_partitions(self) -> set[int]:
        return self._refusals.partitions()

    def fit(self, source_max_bytes: int) -> None:
        """Size the producer for the largest record the source topic holds (before the first dead letter).

        librdkafka refuses a message above its `message.max.bytes` (1 MB by default) before
        sending it; the topic's own limit is the broker's to enforce (see `smaller`).
        """
        wanted = source_max_bytes + HEADROOM_BYTES
        if wanted > self.max_bytes and not self._letters:
            self._producer = kafka_client(Producer, {**self._config, "message.max.bytes": wanted})
            self.max_bytes = wanted

    def send(
        self,
        ticket: Ticket,
        source_topic: str,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        message: str,
        extra_headers: dict[str, str] | None = None,
        original: Headers | None = None,
    ) -> None:
        partition, _, offset = ticket
        headers = {
            "dlq.reason": reason,
            "dlq.error.message": message[:MAX_MESSAGE_CHARS],
            "dlq.source.topic": source_topic,
            "dlq.source.partition": str(partition),
            "dlq.source.offset": str(offset),
            **(extra_headers or {}),
        }
        # The record's own headers ride along, so `dlq redrive` can publish it again as it was.
        encoded = [(k, v.encode()) for k, v in headers.items()] + carried(original)
        letter_id = self._next_id
        self._next_id += 1
        self._letters[letter_id] = _Letter(ticket, reason, key, value, encoded)
        self._produce(letter_id)

    def _produce(self, letter_id: int) -> None:
        letter = self._letters[letter_id]

        def report(err: KafkaError | None, _msg: Message) -> None:
            self._report(letter_id, err)

        while True:
            try:
                self._producer.produce(
                    self.topic, value=letter.value, key=letter.key, headers=letter.headers, on_delivery=report
                )
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.1)
            except KafkaException as exc:  # refused before sending (e.g. above message.max.bytes)
                self._refused(letter_id, letter, exc.args[0])
                return

    def _report(self, letter_id: int, err: KafkaError | None) -> None:
        letter = self._letters.get(letter_id)
        if letter is None:
            return  # forgotten: its partition was revoked
        if err is None:
            del self._letters[letter_id]
            self._refusals.stored(letter_id)
            self._on_acked(letter.ticket, letter.reason)
            return
        self._refused(letter_id, letter, err)

    def _refused(self, letter_id: int, letter: _Letter, err: KafkaError) -> None:
        kind = error_kind(err.code())
        if self._metrics is not None:
            self._metrics.dead_letter_failures.labels(kind).inc()
        partition, _, offset = letter.ticket
        if kind == "too_large" and (less := smaller(letter.key, letter.value, letter.headers)) is not None:
            # Too large for the producer or the topic: write it without its value (then its key).
            letter.key, letter.value, letter.headers = less
            if letter.fresh:  # once per record; retries of a stuck one say it in the throttled line
                log.warning(
                    "dead letter too large, writing it without its %s",
                    "key" if less[2][-2][0] == KEY_OMITTED else "value",
                    extra={"partition": partition, "offset": offset, "error": err.str()},
                )
            self._produce(letter_id)
            return
        # Never ack a record whose dead letter was lost: hold it, and its partition, and try again.
        letter.fresh = False
        delay = self._refusals.refused(letter_id, partition, time.monotonic())
        self._refused_since_log[kind] = self._refused_since_log.get(kind, 0) + 1
        if self._say.allow(kind):
            log.error(
                "dead-letter write failed, retrying with backoff: %s",
                err.str(),
                extra={
                    "error_kind": kind,
                    "partition": partition,
                    "offset": offset,
                    "retry_in_s": round(delay, 1),
                    "refusals_since_last_line": self._refused_since_log.pop(kind),
                    "dead_letters_stuck": self._refusals.stuck,
                },
            )

    def poll(self) -> None:
        """Serve delivery reports (calls `on_acked` on this thread); produce refused letters whose time came."""
        self._producer.poll(0)
        for letter_id in self._refusals.due(time.monotonic()):
            if (letter := self._letters.get(letter_id)) is not None:
                letter.key, letter.value, letter.headers = letter.original
                self._produce(letter_id)

    def flush(self, timeout_s: float) -> int:
        """Wait, at most `timeout_s`, for dead letters never refused; give up at once on refused ones.

        While a dead letter is stuck the topic refuses writes: waiting would spend the drain budget
        for nothing. What is not stored stays uncommitted. Returns how many are left.
        """
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while not self._refusals.stuck and any(letter.fresh for letter in self._letters.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._producer.poll(min(remaining, 0.1))
        if self._letters and set(self._letters) != self._given_up:  # shutdown's revoke flushes again: once
            self._given_up = set(self._letters)
            log.warning(
                "giving up on dead letters not stored; their records stay uncommitted",
                extra={"left": len(self._letters), "refused": self._refusals.stuck},
            )
        return len(self._letters)

    def forget(self, partitions: set[int]) -> None:
        """The partitions were revoked or lost: drop their dead letters (the next owner reads the records again)."""
        for letter_id in [n for n, letter in self._letters.items() if letter.ticket[0] in partitions]:
            del self._letters[letter_id]
        self._refusals.forget(partitions)


class Admin:
    """One admin client for start-up checks, remembering the last error librdkafka reported.

    `list_topics` only says "transport failure"; the cause (refused SASL credentials, a TLS
    handshake error) arrives on the client's error callback, which is served by `poll`.
    """

    def __init__(self, config: dict[str, object]) -> None:
        self.errors: list[KafkaError] = []
        self.client = kafka_client(AdminClient, {**config, "error_cb": self.errors.append})

    def cause(self) -> str:
        self.client.poll(0)
        useful = [e for e in self.errors if e.code() not in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT)]
        self.errors.clear()
        return f" (last error: {useful[-1].str()})" if useful else ""


def ensure_topic(admin: Admin, source: str, dlq: str, timeout_s: float = 5.0) -> int:
    """Check the dead-letter topic exists; create it like the source topic if not.

    Returns the source topic's `max.message.bytes` (the largest record it holds), which the
    dead-letter producer must carry; a dead-letter topic created here holds that plus headroom.
    """
    try:
        topics = admin.client.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise KafkaUnreachable(
            f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS: {exc.args[0].str()}{admin.cause()}"
        ) from None
    source_exists = source in topics and topics[source].error is None
    source_max = max_message_bytes(admin, source, timeout_s) if source_exists else BROKER_DEFAULT_MAX_BYTES
    if dlq in topics and topics[dlq].error is None:
        return source_max
    if not source_exists:
        raise StartupError(
            f"KAFKA_DLQ_TOPIC {dlq} does not exist and cannot be created like KAFKA_TOPIC {source}, "
            "which does not exist either"
        )
    partitions = len(topics[source].partitions)
    config = {"max.message.bytes": str(source_max + HEADROOM_BYTES)}
    future = admin.client.create_topics([NewTopic(dlq, num_partitions=partitions, config=config)])[dlq]
    try:
        future.result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another replica won the race
            raise StartupError(f"cannot create KAFKA_DLQ_TOPIC {dlq}: {exc.args[0].str()}") from None
    log.warning(
        "created missing dead-letter topic %s with %d partitions, max.message.bytes %s",
        dlq,
        partitions,
        config["max.message.bytes"],
    )
    return source_max


def max_message_bytes(admin: Admin, topic: str, timeout_s: float) -> int:
    """A topic's `max.message.bytes`; the broker's default when it cannot be read (e.g. no DescribeConfigs ACL)."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.client.describe_configs([resource], request_timeout=timeout_s)[resource].result(timeout_s)
        return int(entries["max.message.bytes"].value)
    except Exception as exc:  # KafkaException, a missing entry, a timeout: the default is a safe guess
        log.warning("cannot read max.message.bytes of %s, assuming %d: %s", topic, BROKER_DEFAULT_MAX_BYTES, exc)
        return BROKER_DEFAULT_MAX_BYTES
