"""When the Track API refuses everything, it is an outage, not bad data. Pure.

A 400/422 answer to a single-event request means "this event is refused": it is dead-lettered.
But an API change, a proxy or a gateway bug can refuse *every* event, and bisection would then
move a whole stream to the dead-letter topic. The breaker tells the two apart:

- closed (normal): refused events are dead-lettered as `rejected`;
- it opens once `threshold` events in a row were refused one by one (400/422 to a
  single-event request) with no request accepted in between, from any worker;
- open: nothing is dead-lettered; refused requests are held and retried with backoff,
  whole, without bisecting (the batch is held, /readyz answers 503);
- it closes on the first accepted request, and bisection resumes: a few bad events among
  good ones are dead-lettered exactly as before.

`threshold` 0 turns the breaker off. Not thread-safe: the caller holds a lock.
"""

from __future__ import annotations

import enum


class Change(enum.Enum):
    """What a call did to the breaker's state (the caller logs and counts it)."""

    NONE = "none"
    OPENED = "opened"
    CLOSED = "closed"


class Breaker:
    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.refused_in_a_row = 0  # events refused one by one since the last accepted request
        self.open = False

    def refused(self, events: int = 1) -> Change:
        """`events` refused one by one (a single-event request answered 400/422)."""
        self.refused_in_a_row += events
        if self.threshold > 0 and not self.open and self.refused_in_a_row >= self.threshold:
            self.open = True
            return Change.OPENED
        return Change.NONE

    def accepted(self) -> Change:
        """A request was accepted (2xx that is the Track API's): the API takes events."""
        self.refused_in_a_row = 0
        if self.open:
            self.open = False
            return Change.CLOSED
        return Change.NONE
