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


class ConcurrencyLimit:
    """How many requests may be in flight: additive increase, multiplicative decrease (AIMD).

    Each request that comes back healthy and fast adds 1/limit (so +1 per full window);
    a congestion signal (429, 5xx, timeout, connection error, or a latency above
    `tolerance` times the best latency of a successful request lately + `slack_s`) halves the limit, at most once per
    `cooldown_s`, since one overload episode fails a whole window of requests at once.
    Workers report and the main thread reads `current`; a report lost to a race between
    two workers only delays an adjustment, so there is no lock.
    """

    def __init__(
        self,
        maximum: int,
        minimum: int = 1,
        decrease: float = 0.5,
        tolerance: float = 2.0,
        slack_s: float = 0.1,
        cooldown_s: float = 1.0,
    ) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.decrease = decrease
        self.tolerance = tolerance
        self.slack_s = slack_s
        self.cooldown_s = cooldown_s
        self._limit = float(maximum)
        self._best_latency: float | None = None
        self._last_decrease = float("-inf")

    @property
    def current(self) -> int:
        return int(self._limit)

    def on_response(self, latency_s: float, congested: bool, now: float) -> None:
        """Feed one request's result; `congested` for 429/5xx/network errors."""
        best = self._best_latency
        if not congested:
            # Learnt from successes only: a refused connection answers in a millisecond, and a
            # baseline that low made every good response "slow" for minutes after an outage.
            # It creeps up slowly, so a permanently slower API becomes the new normal.
            self._best_latency = latency_s if best is None else min(latency_s, best * 1.01 + 0.0005)
        slow = best is not None and latency_s > self.tolerance * best + self.slack_s
        if congested or slow:
            if now - self._last_decrease >= self.cooldown_s:
                self._last_decrease = now
                self._limit = max(float(self.minimum), self._limit * self.decrease)
        else:
            self._limit = min(float(self.maximum), self._limit + 1.0 / max(self._limit, 1.0))
