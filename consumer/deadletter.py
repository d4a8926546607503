"""The dead-letter topic: records that can never be delivered, with the reason in headers (I/O edge)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from consumer.dlqpolicy import smaller
from consumer.offsets import Ticket
from consumer.ops.headers import Headers, carried
from consumer.source import kafka_client

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1000  # a schema-resolution error quotes both schemas: ~15 KB
BROKER_DEFAULT_MAX_BYTES = 1_048_588  # a topic's max.message.bytes when nothing says otherwise
# Room for the dead letter's headers and record overhead on top of the largest record the source holds.
HEADROOM_BYTES = 64 * 1024

Acked = Callable[[Ticket, str], None]  # (ticket, reason) once the broker has the dead letter


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


class KafkaUnreachable(Exception):
    """Kafka did not answer (down, wrong address, refused credentials); worth trying again."""


class DeadLetters:
    """Produces dead letters idempotently (acks=all) and reports each one once it is stored."""

    def __init__(self, config: dict[str, object], topic: str, on_acked: Acked) -> None:
        self.topic = topic
        self._on_acked = on_acked
        self._config = {
            **config,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 60_000,
        }
        self._producer = kafka_client(Producer, self._config)  # a bad setting fails here, at start-up
        self.max_bytes = 1_000_000  # librdkafka's default message.max.bytes
        self.pending = 0

    def fit(self, source_max_bytes: int) -> None:
        """Size the producer for the largest record the source topic holds (before the first dead letter).

        librdkafka refuses a message above its `message.max.bytes` (1 MB by default) before
        sending it; the topic's own limit is the broker's to enforce (see `send`).
        """
        wanted = source_max_bytes + HEADROOM_BYTES
        if wanted > self.max_bytes and self.pending == 0:
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

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            self.pending -= 1
            if err is None:
                self._on_acked(ticket, reason)
                return
            refused(err)

        def refused(err: KafkaError) -> None:
            nonlocal key, value, encoded
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and (less := smaller(key, value, encoded)) is not None:
                # Too large for the producer or the topic: write it without its value (then its key).
                key, value, encoded = less
                log.warning(
                    "dead letter too large, writing it without its value",
                    extra={"partition": partition, "offset": offset, "error": err.str()},
                )
            else:
                # Never ack a record whose dead letter was lost: produce it again.
                log.warning("dead-letter write failed, retrying: %s", err.str())
            self._produce(key, value, encoded, delivered, refused)

        self._produce(key, value, encoded, delivered, refused)

    def _produce(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list,
        callback: Callable[[KafkaError | None, Message], None],
        refused: Callable[[KafkaError], None],
    ) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, headers=headers, on_delivery=callback)
                self.pending += 1
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.1)
            except KafkaException as exc:  # refused before sending (above message.max.bytes)
                refused(exc.args[0])
                return

    def poll(self) -> None:
        """Serve delivery reports (calls `on_acked` on this thread)."""
        self._producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        return self._producer.flush(max(timeout_s, 0.0))


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
