"""The dead-letter topic: records that can never be delivered, with the reason in headers (I/O edge)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.offsets import Ticket
from consumer.ops.headers import Headers, carried
from consumer.source import kafka_client

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1000  # a schema-resolution error quotes both schemas: ~15 KB

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
        self._producer = kafka_client(
            Producer,
            {**config, "acks": "all", "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 60_000},
        )
        self.pending = 0

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
            if err is None:
                self.pending -= 1
                self._on_acked(ticket, reason)
                return
            # Never ack a record whose dead letter was lost: produce it again.
            log.warning("dead-letter write failed, retrying: %s", err.str())
            self.pending -= 1
            self._produce(key, value, encoded, delivered)

        self._produce(key, value, encoded, delivered)

    def _produce(self, key: bytes | None, value: bytes | None, headers: list, callback: Callable) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, headers=headers, on_delivery=callback)
                self.pending += 1
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.1)

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


def ensure_topic(admin: Admin, source: str, dlq: str, timeout_s: float = 5.0) -> None:
    """Check the dead-letter topic exists; create it like the source topic if not."""
    try:
        topics = admin.client.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise KafkaUnreachable(
            f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS: {exc.args[0].str()}{admin.cause()}"
        ) from None
    if dlq in topics and topics[dlq].error is None:
        return
    if source not in topics or topics[source].error is not None:
        raise StartupError(
            f"KAFKA_DLQ_TOPIC {dlq} does not exist and cannot be created like KAFKA_TOPIC {source}, "
            "which does not exist either"
        )
    partitions = len(topics[source].partitions)
    future = admin.client.create_topics([NewTopic(dlq, num_partitions=partitions)])[dlq]
    try:
        future.result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another replica won the race
            raise StartupError(f"cannot create KAFKA_DLQ_TOPIC {dlq}: {exc.args[0].str()}") from None
    log.warning("created missing dead-letter topic %s with %d partitions", dlq, partitions)
