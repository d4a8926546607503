"""Decisions about dead letters the broker refuses (consumer/dlqpolicy.py)."""

from __future__ import annotations

from confluent_kafka import KafkaError

from consumer.dlqpolicy import ERROR_KINDS, error_kind, smaller

HEADERS = [("dlq.reason", b"decode_error"), ("dlq.source.offset", b"7")]


def test_too_large_drops_the_value_first_keeping_key_and_headers() -> None:
    key, value, headers = smaller(b"k", b"v" * 2000, HEADERS)  # type: ignore[misc]
    assert (key, value) == (b"k", None)
    assert headers == [*HEADERS, ("dlq.value.omitted", b"too_large"), ("dlq.value.size", b"2000")]


def test_then_the_key_then_nothing_is_left_to_drop() -> None:
    key, value, headers = smaller(b"kkk", None, HEADERS)  # type: ignore[misc]
    assert (key, value) == (None, None)
    assert headers[-2:] == [("dlq.key.omitted", b"too_large"), ("dlq.key.size", b"3")]
    assert smaller(None, None, headers) is None


def test_an_empty_value_is_still_a_value() -> None:
    result = smaller(None, b"", HEADERS)
    assert result is not None and result[2][-1] == ("dlq.value.size", b"0")


def test_error_kinds_are_a_small_fixed_set() -> None:
    assert error_kind(KafkaError.MSG_SIZE_TOO_LARGE) == "too_large"
    assert error_kind(KafkaError._MSG_TIMED_OUT) == "timed_out"
    assert error_kind(KafkaError.UNKNOWN_TOPIC_OR_PART) == "topic_missing"
    assert error_kind(KafkaError.TOPIC_AUTHORIZATION_FAILED) == "not_authorized"
    assert error_kind(KafkaError.INVALID_REQUIRED_ACKS) == "other"
    assert {error_kind(code) for code in range(-200, 120)} <= set(ERROR_KINDS)
