"""Dead letters the broker refuses: what to write instead of one too large, when to try again,
which partitions to hold. Pure.

The dead-letter producer (deadletter.py) asks here and does the I/O; the main loop pauses the
partitions `Refusals.partitions()` names and turns not-ready while `Refusals.stuck` is above 0.
"""

from __future__ import annotations

import random

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


class Refusals:
    """Dead letters refused at least once and not yet stored: when each is tried again.

    A refusal reaches here only after librdkafka gave up on its own retries (a permanent
    error, or `message.timeout.ms`), so every refused letter counts as stuck at once: its
    partition is paused (records after it could be delivered but never committed, and a
    restart would send them again) until the letter is stored. Attempts back off
    exponentially, from `base_s` up to `cap_s`, with jitter in the upper half of each step
    so a letter never retries at once after a refusal.
    """

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = max(cap_s, base_s)
        self._rng = rng or random.Random()
        self._attempts: dict[int, int] = {}  # letter → refusals so far
        self._partition: dict[int, int] = {}  # letter → its source partition
        self._retry_at: dict[int, float] = {}  # letters waiting for their next attempt

    @property
    def stuck(self) -> int:
        return len(self._attempts)

    def partitions(self) -> set[int]:
        """Partitions to keep paused: each holds a refused dead letter."""
        return set(self._partition.values())

    def delay(self, attempts: int) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(attempts - 1, 30))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def refused(self, letter: int, partition: int, now: float) -> float:
        """Note a refusal; returns the seconds until the letter's next attempt."""
        attempts = self._attempts[letter] = self._attempts.get(letter, 0) + 1
        self._partition[letter] = partition
        delay = self.delay(attempts)
        self._retry_at[letter] = now + delay
        return delay

    def due(self, now: float) -> list[int]:
        """Letters whose next attempt is due; they stay stuck until `stored`."""
        if not self._retry_at:
            return []
        ready = [letter for letter, at in self._retry_at.items() if at <= now]
        for letter in ready:
            del self._retry_at[letter]
        return ready

    def stored(self, letter: int) -> None:
        self._attempts.pop(letter, None)
        self._partition.pop(letter, None)
        self._retry_at.pop(letter, None)

    def forget(self, partitions: set[int]) -> None:
        """The partitions were revoked or lost: their next owner reads the records again."""
        for letter in [n for n, p in self._partition.items() if p in partitions]:
            self.stored(letter)
