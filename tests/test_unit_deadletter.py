"""Dead letters the broker refuses: the decisions (consumer/dlqpolicy.py), and DeadLetters acting on them
with a fake producer (what is produced again, held, acked, given up)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer import deadletter
from consumer.deadletter import DeadLetters
from consumer.dlqpolicy import ERROR_KINDS, Refusals, error_kind, smaller
from consumer.offsets import Ticket
from consumer.telemetry import Metrics

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


# ---- DeadLetters with a fake producer: what is produced, held, acked, given up ------------------------


class FakeProducer:
    """Stands in for confluent_kafka.Producer: records produce() calls; poll() answers them with `answer`."""

    def __init__(self, _config: dict[str, object]) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.queue: list[tuple[bytes | None, Callable[[KafkaError | None, None], None]]] = []
        self.answer: Callable[[bytes | None], int | None] = lambda _value: None  # value → error code or None
        self.local_max: int | None = None  # refuse before sending above this (message.max.bytes)

    def produce(
        self, _topic: str, value: bytes | None, key: bytes | None, headers: list, on_delivery: Callable
    ) -> None:
        if self.local_max is not None and len(value or b"") > self.local_max:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.sent.append((key, value, headers))
        self.queue.append((value, on_delivery))

    def poll(self, _timeout: float) -> int:
        queue, self.queue = self.queue, []
        for value, report in queue:
            code = self.answer(value)
            report(None if code is None else KafkaError(code), None)
        return len(queue)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def letters(monkeypatch: pytest.MonkeyPatch) -> tuple[DeadLetters, FakeProducer, list, Clock, Metrics]:
    producers: list[FakeProducer] = []

    def client(_cls: type, config: dict[str, object]) -> FakeProducer:
        producers.append(FakeProducer(config))
        return producers[-1]

    clock = Clock()
    monkeypatch.setattr(deadletter, "kafka_client", client)
    monkeypatch.setattr(deadletter, "time", clock)
    acked: list[tuple[Ticket, str]] = []
    metrics = Metrics()
    dl = DeadLetters({}, "t.dlq", lambda ticket, reason: acked.append((ticket, reason)), metrics, backoff_max_s=4.0)
    return dl, producers[-1], acked, clock, metrics


def failures(metrics: Metrics, kind: str) -> float:
    return metrics.registry.get_sample_value("group_enriched_dead_letter_failures_total", {"error": kind}) or 0.0


def test_a_letter_the_broker_refuses_as_too_large_is_stored_without_its_value(letters) -> None:  # type: ignore[no-untyped-def]
    dl, producer, acked, _clock, metrics = letters
    producer.answer = lambda value: KafkaError.MSG_SIZE_TOO_LARGE if value else None
    dl.send((0, 1, 5), "t", b"k", b"v" * 100, "decode_error", "bad")
    dl.poll()  # refused whole
    dl.poll()  # stored without its value
    assert acked == [((0, 1, 5), "decode_error")]
    key, value, headers = producer.sent[-1]
    assert (key, value) == (b"k", None)
    assert dict(headers)["dlq.value.omitted"] == b"too_large" and dict(headers)["dlq.value.size"] == b"100"
    assert (dl.pending, dl.stuck, failures(metrics, "too_large")) == (0, 0, 1)


def test_a_letter_above_the_producers_limit_is_shrunk_before_sending(letters) -> None:  # type: ignore[no-untyped-def]
    dl, producer, acked, _clock, _metrics = letters
    producer.local_max = 10
    dl.send((0, 1, 5), "t", b"k", b"v" * 100, "rejected", "too big", {"dlq.http.status": "413"})
    dl.poll()
    assert len(producer.sent) == 1 and producer.sent[0][1] is None
    assert acked == [((0, 1, 5), "rejected")]


def test_a_refused_letter_is_held_retried_whole_with_backoff_then_acked(letters) -> None:  # type: ignore[no-untyped-def]
    dl, producer, acked, clock, metrics = letters
    producer.answer = lambda _value: KafkaError.TOPIC_AUTHORIZATION_FAILED
    dl.send((2, 1, 9), "t", b"k", b"value", "decode_error", "bad")
    dl.poll()
    assert (dl.pending, dl.stuck, dl.stuck_partitions(), acked) == (1, 1, {2}, [])
    assert failures(metrics, "not_authorized") == 1
    dl.poll()  # not due yet: nothing produced again
    assert len(producer.sent) == 1
    clock.now += 0.5  # the first backoff is 0.25-0.5 s
    producer.answer = lambda _value: None  # the ACL was fixed
    dl.poll()  # produces again, whole
    assert len(producer.sent) == 2 and producer.sent[1][1] == b"value"
    dl.poll()  # the report
    assert acked == [((2, 1, 9), "decode_error")]
    assert (dl.pending, dl.stuck, dl.stuck_partitions()) == (0, 0, set())


def test_a_retry_starts_from_the_whole_letter_after_a_shrunk_one_was_refused(letters) -> None:  # type: ignore[no-untyped-def]
    dl, producer, acked, clock, _metrics = letters
    producer.answer = lambda _value: KafkaError.MSG_SIZE_TOO_LARGE  # even the headers are too large
    dl.send((0, 1, 3), "t", b"k", b"value", "decode_error", "bad")
    for _ in range(3):
        dl.poll()
    assert [(k, v) for k, v, _h in producer.sent] == [(b"k", b"value"), (b"k", None), (None, None)]
    assert dl.stuck == 1
    producer.answer = lambda _value: None  # the limit was raised
    clock.now += 0.5
    dl.poll()
    dl.poll()
    assert producer.sent[-1][:2] == (b"k", b"value") and acked == [((0, 1, 3), "decode_error")]


def test_flush_gives_up_at_once_while_a_letter_is_stuck(letters) -> None:  # type: ignore[no-untyped-def]
    dl, producer, _acked, _clock, _metrics = letters
    producer.answer = lambda value: KafkaError.TOPIC_AUTHORIZATION_FAILED if value == b"bad" else None
    dl.send((0, 1, 1), "t", None, b"bad", "decode_error", "x")
    dl.poll()
    dl.send((1, 1, 2), "t", None, b"fine", "decode_error", "x")  # fresh, never polled
    assert dl.flush(30.0) == 2  # returned without serving the fresh one: the topic refuses writes
    assert dl.pending == 2


def test_flush_waits_for_fresh_letters_when_nothing_is_stuck(letters) -> None:  # type: ignore[no-untyped-def]
    dl, _producer, acked, _clock, _metrics = letters
    dl.send((1, 1, 2), "t", None, b"fine", "decode_error", "x")
    assert dl.flush(30.0) == 0 and len(acked) == 1


def test_revoked_partitions_are_forgotten_and_their_late_reports_ignored(letters) -> None:  # type: ignore[no-untyped-def]
    dl, producer, acked, _clock, _metrics = letters
    producer.answer = lambda _value: KafkaError.TOPIC_AUTHORIZATION_FAILED
    dl.send((0, 1, 1), "t", None, b"a", "decode_error", "x")
    dl.poll()
    producer.answer = lambda _value: None
    dl.send((0, 1, 2), "t", None, b"b", "decode_error", "x")  # in the producer's queue
    dl.send((1, 1, 3), "t", None, b"c", "decode_error", "x")
    dl.forget({0})
    assert (dl.pending, dl.stuck, dl.stuck_partitions()) == (1, 0, set())
    dl.poll()
    assert acked == [((1, 1, 3), "decode_error")]
