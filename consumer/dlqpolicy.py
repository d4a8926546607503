"""Dead letters the broker refuses: what to write instead of one too large. Pure.

The dead-letter producer (deadletter.py) asks here and does the I/O.
"""

from __future__ import annotations

from confluent_kafka import KafkaError

Headers = list[tuple[str, bytes]]

VALUE_OMITTED = "dlq.value.omitted"
VALUE_SIZE = "dlq.value.size"
KEY_OMITTED = "dlq.key.omitted"
KEY_SIZE = "dlq.key.size"

_KINDS: dict[int, str] = {
    KafkaError.MSG_SIZE_TOO_LARGE: "too_large",
    KafkaError.UNKNOWN_TOPIC_OR_PART: "topic_missing",
    KafkaError._UNKNOWN_TOPIC: "topic_missing",
    KafkaError._UNKNOWN_PARTITION: "topic_missing",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "not_authorized",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "not_authorized",
    KafkaError._MSG_TIMED_OUT: "timed_out",
    KafkaError.REQUEST_TIMED_OUT: "timed_out",
    KafkaError._TIMED_OUT: "timed_out",
}
ERROR_KINDS = ("too_large", "topic_missing", "not_authorized", "timed_out", "other")


def error_kind(code: int) -> str:
    """A librdkafka error code as one of `ERROR_KINDS` (a metric label: few values)."""
    return _KINDS.get(code, "other")


def smaller(
    key: bytes | None, value: bytes | None, headers: Headers
) -> tuple[bytes | None, bytes | None, Headers] | None:
    """The next smaller form of a dead letter refused as too large, or None when nothing is left to drop.

    First the value goes (the source topic still holds it, at `dlq.source.partition`/`offset`),
    then the key; each leaves a header saying so and how many bytes it had. Every other header stays.
    """
    if value is not None:
        return key, None, [*headers, (VALUE_OMITTED, b"too_large"), (VALUE_SIZE, str(len(value)).encode())]
    if key is not None:
        return None, None, [*headers, (KEY_OMITTED, b"too_large"), (KEY_SIZE, str(len(key)).encode())]
    return None
