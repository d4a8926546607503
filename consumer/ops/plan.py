"""Offset plans for `offsets show` and `offsets rewind`. Pure: the I/O gathers the numbers.

A committed offset is the next record the group reads; -1 (or any negative) means none.
Every new offset is kept inside the partition's retained range [low, high]: below `low` the
records are gone, above `high` they do not exist yet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionState:
    partition: int
    committed: int  # negative: the group has no committed offset here
    low: int
    high: int

    @property
    def lag(self) -> int | None:
        return None if self.committed < 0 else max(self.high - self.committed, 0)


@dataclass(frozen=True)
class Change:
    partition: int
    current: int  # negative: none committed
    new: int

    @property
    def resent(self) -> int | None:
        """Records the consumer reads again (negative: skipped forward); None if unknown."""
        return None if self.current < 0 else self.current - self.new


def _clamp(offset: int, s: PartitionState) -> int:
    return min(max(offset, s.low), s.high)


def by(states: list[PartitionState], n: int) -> list[Change]:
    """Back by `n` records from the committed offset (from the end where nothing is committed)."""
    return [
        Change(s.partition, s.committed, _clamp((s.committed if s.committed >= 0 else s.high) - n, s)) for s in states
    ]


def to_offset(states: list[PartitionState], offset: int) -> list[Change]:
    return [Change(s.partition, s.committed, _clamp(offset, s)) for s in states]


def to_time(states: list[PartitionState], found: dict[int, int]) -> list[Change]:
    """`found`: the broker's first offset at or after the time per partition (negative: none, so the end)."""
    changes = []
    for s in states:
        offset = found.get(s.partition, -1)
        changes.append(Change(s.partition, s.committed, _clamp(offset if offset >= 0 else s.high, s)))
    return changes


def _off(n: int) -> str:
    return "-" if n < 0 else str(n)


def render_show(group: str, topic: str, states: list[PartitionState], members: list[str], state: str) -> str:
    lines = [f"group {group} on topic {topic} ({state}, {len(members)} active members)"]
    lines.append(f"  {'partition':>9} {'committed':>10} {'end':>10} {'lag':>8}")
    total = 0
    for s in states:
        lag = s.lag
        total += lag if lag is not None else s.high - s.low
        lines.append(f"  {s.partition:>9} {_off(s.committed):>10} {s.high:>10} {'-' if lag is None else lag:>8}")
    lines.append(f"  {'total':>9} {'':>10} {'':>10} {total:>8}")
    lines += [f"  member {m}" for m in members]
    return "\n".join(lines)


def render_changes(changes: list[Change]) -> str:
    lines = [f"  {'partition':>9} {'current':>10} {'new':>10} {'re-sent':>8}"]
    total = 0
    for c in changes:
        resent = c.resent
        total += resent or 0
        lines.append(f"  {c.partition:>9} {_off(c.current):>10} {c.new:>10} {'-' if resent is None else resent:>8}")
    lines.append(f"  {'total':>9} {'':>10} {'':>10} {total:>8}")
    return "\n".join(lines)
