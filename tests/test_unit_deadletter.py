"""Decisions about dead letters the broker refuses (consumer/dlqpolicy.py): what to write instead, when to retry."""

from __future__ import annotations

import random

from confluent_kafka import KafkaError

from consumer.dlqpolicy import ERROR_KINDS, Refusals, error_kind, smaller

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


# ---- Refusals: backoff, stuck letters, the partitions they hold ------------------------------------------


def refusals(cap_s: float = 8.0) -> Refusals:
    return Refusals(base_s=0.5, cap_s=cap_s, rng=random.Random(1))


def test_a_refused_letter_is_stuck_and_holds_its_partition_until_stored() -> None:
    r = refusals()
    assert (r.stuck, r.partitions()) == (0, set())
    r.refused(1, partition=3, now=0.0)
    assert (r.stuck, r.partitions()) == (1, {3})
    r.stored(1)
    assert (r.stuck, r.partitions()) == (0, set())


def test_backoff_doubles_within_the_upper_half_and_stops_at_the_cap() -> None:
    r = refusals(cap_s=8.0)
    delays = [r.refused(1, 0, now=0.0) for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert r.stuck == 1  # attempts of one letter, not letters


def test_a_letter_is_due_once_its_time_has_come_and_stays_stuck() -> None:
    r = refusals()
    delay = r.refused(7, 0, now=100.0)
    assert r.due(100.0 + delay - 0.01) == []
    assert r.due(100.0 + delay) == [7]
    assert r.due(1000.0) == []  # handed out once per refusal
    assert r.stuck == 1
    r.refused(7, 0, now=200.0)  # refused again: waits longer
    assert r.due(200.0 + 0.49) == []


def test_letters_back_off_independently() -> None:
    r = refusals()
    for _ in range(4):
        r.refused(1, 0, now=0.0)
    r.refused(2, 1, now=0.0)
    assert r.due(0.5) == [2]
    assert r.partitions() == {0, 1}


def test_revoked_partitions_are_forgotten() -> None:
    r = refusals()
    r.refused(1, 0, now=0.0)
    r.refused(2, 1, now=0.0)
    r.refused(3, 1, now=0.0)
    r.forget({1})
    assert (r.stuck, r.partitions(), r.due(100.0)) == (1, {0}, [1])


def test_the_cap_is_never_below_the_base() -> None:
    r = Refusals(base_s=0.5, cap_s=0.1, rng=random.Random(2))
    assert 0.25 <= r.refused(1, 0, now=0.0) <= 0.5
