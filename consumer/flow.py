"""Flow control: when to stop fetching from Kafka and when to start again. Pure.

The buffer is every event between Kafka and the API: decoded or waiting to decode,
in an open batch, queued, or in flight. Pausing at `high` and resuming only below `low`
(hysteresis) keeps the consumer from flapping pause/resume on every poll.
"""

from __future__ import annotations


class BufferBudget:
    def __init__(self, high: int, low: int | None = None) -> None:
        self.high = high
        self.low = high // 2 if low is None else low
        self.paused = False

    def update(self, buffered: int) -> bool | None:
        """Feed the current buffer size; returns True to pause, False to resume, None to stay."""
        if not self.paused and buffered >= self.high:
            self.paused = True
            return True
        if self.paused and buffered <= self.low:
            self.paused = False
            return False
        return None

    def room(self, buffered: int) -> int:
        """How many more records may be fetched now."""
        return max(0, self.high - buffered)
