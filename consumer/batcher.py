"""Group encoded events into request bodies bounded by count, bytes and linger time. Pure.

The body is a JSON array: `[` + events joined by `,` + `]`, so its size is known exactly
before it is built. An event larger than `max_bytes` on its own travels alone; the API
decides (413 → dead-letter as rejected).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from consumer.offsets import Ticket


class Item(NamedTuple):
    """One event on its way to the API, with what is needed to ack or dead-letter its record."""

    event: bytes  # the event, JSON-encoded
    ticket: Ticket
    timestamp_ms: int  # the Kafka record's timestamp, for end-to-end latency
    key: bytes | None  # the record's original key and value, kept for the dead-letter topic
    value: bytes


@dataclass
class Batch:
    items: list[Item] = field(default_factory=list)
    size: int = 2  # body bytes: the brackets, the events, the commas between them
    created: float = 0.0

    def body(self) -> bytes:
        return body(self.items)

    def partitions(self) -> set[int]:
        return {item.ticket.partition for item in self.items}

    def without(self, partitions: set[int]) -> Batch:
        """The same batch less the events of `partitions` (their next owner reads them again)."""
        kept = [i for i in self.items if i.ticket.partition not in partitions]
        return Batch(kept, 2 + sum(len(i.event) for i in kept) + max(len(kept) - 1, 0), self.created)


def body(items: Sequence[Item]) -> bytes:
    """The JSON array of the events, built with one copy of them.

    `b"[" + b",".join(...) + b"]"` copied a 1 MB body three times: 0.16 µs per event,
    against 0.07 µs for one join (`python -m bench.hotpath`).
    """
    if not items:
        return b"[]"
    events = [item.event for item in items]
    events[0] = b"[" + events[0]
    events[-1] = events[-1] + b"]"
    return b",".join(events)


class Batcher:
    def __init__(self, max_events: int, max_bytes: int, linger_s: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        self._open = Batch()

    def __len__(self) -> int:
        return len(self._open.items)

    def add(self, items: Iterable[Item], now: float) -> list[Batch]:
        """Add events in order; returns the batches this closed (none, or the full ones)."""
        closed = []
        batch = self._open
        for item in items:
            size = len(item.event)
            if batch.items and batch.size + 1 + size > self.max_bytes:
                closed.append(self._take(now))
                batch = self._open
            if batch.items:
                batch.size += size + 1
            else:
                batch.created = now
                batch.size += size
            batch.items.append(item)
            if len(batch.items) >= self.max_events or batch.size >= self.max_bytes:
                closed.append(self._take(now))
                batch = self._open
        return closed

    def due(self, now: float) -> Batch | None:
        """The open batch, if it has waited `linger_s`."""
        if self._open.items and now - self._open.created >= self.linger_s:
            return self._take(now)
        return None

    def deadline(self) -> float | None:
        """When the open batch falls due, if there is one."""
        return self._open.created + self.linger_s if self._open.items else None

    def flush(self, now: float) -> Batch | None:
        return self._take(now) if self._open.items else None

    def drop(self, partitions: set[int]) -> int:
        """Forget events of revoked partitions (their new owner re-reads them); returns how many."""
        before = len(self._open.items)
        self._open = self._open.without(partitions)
        return before - len(self._open.items)

    def _take(self, now: float) -> Batch:
        batch, self._open = self._open, Batch(created=now)
        return batch
