"""Which offset may be committed, per partition, when records finish out of order. Pure.

Every consumed record is tracked; it is acked once delivered, dead-lettered or skipped.
The committable offset of a partition is one past the longest acked prefix: nothing
below it is still open, so committing it can never skip an undelivered record.

Offsets that hold no record for us (transaction markers, aborted transactions skipped under
`read_committed`, records removed by compaction) are never tracked. A committable offset one
past the last acked record would stop short of them forever; so the tracker also learns the
consumer's position (the next offset it will hand out) and, while no record of the partition
is open, may commit up to it.

Each assignment of a partition gets a new generation. A ticket from an earlier
generation (a batch that finished after its partition was revoked) is ignored, so a
late result can never commit for a partition this process no longer owns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

# (partition, generation, offset): identifies one consumed record for acking. A plain tuple,
# not a NamedTuple, like `batcher.Item`: CPython's collector stops tracking a plain tuple that
# holds no tracked object, but never a tuple subclass. With thousands of records buffered,
# NamedTuples made garbage collection 3% of the main loop (docs/benchmarks.md).
Ticket = tuple[int, int, int]


class _Partition:
    __slots__ = ("acked", "committed", "first", "generation", "next_offset", "open", "position")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.open: deque[int] = deque()  # offsets tracked and not yet below the watermark, ascending
        self.acked: set[int] = set()  # acked offsets still above the watermark
        self.next_offset: int | None = None  # the committable offset: everything below is done
        self.committed: int | None = None
        self.position: int | None = None  # the consumer's position: nothing below it is left to read
        self.first: int | None = None  # the first offset done in this assignment (for `uncommitted`)


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}
        self._generation = 0

    def assign(self, partition: int) -> None:
        self._generation += 1
        self._partitions[partition] = _Partition(self._generation)

    def revoke(self, partition: int) -> None:
        self._partitions.pop(partition, None)

    def owned(self) -> list[int]:
        return list(self._partitions)

    def owns(self, partition: int) -> bool:
        return partition in self._partitions

    def track(self, partition: int, offset: int) -> Ticket:
        """Record a consumed offset; offsets of one partition must arrive in ascending order."""
        p = self._partitions[partition]
        if not p.open and p.position is not None and (p.next_offset is None or p.position > p.next_offset):
            # Everything below the position is done: the watermark starts there, or the next
            # commit would fall back below one already made at the position.
            p.next_offset = p.position
        p.open.append(offset)
        return (partition, p.generation, offset)

    def ack(self, ticket: Ticket) -> bool:
        """Mark a record done; False (and no effect) when the ticket is from a revoked assignment."""
        return self.ack_all((ticket,)) == 1

    def ack_all(self, tickets: Iterable[Ticket]) -> int:
        """`ack` for a delivered batch, moving each watermark once; returns how many counted."""
        partitions, moved, counted = self._partitions, set(), 0
        for partition, generation, offset in tickets:
            p = partitions.get(partition)
            if p is not None and p.generation == generation:
                p.acked.add(offset)
                moved.add(p)
                counted += 1
        for p in moved:
            open_, acked = p.open, p.acked
            if p.first is None and open_:
                p.first = open_[0]
            while open_ and open_[0] in acked:
                offset = open_.popleft()
                acked.discard(offset)
                p.next_offset = offset + 1
        return counted

    def learn_position(self, partition: int, offset: int) -> None:
        """The consumer's position: every offset below it was tracked or holds no record for us.

        The caller must have tracked every record the consumer handed out below `offset`
        (librdkafka's position is one past the last record handed out, and past control
        records and aborted ranges it skipped). A negative offset (not known yet) is ignored.
        """
        p = self._partitions.get(partition)
        if p is not None and offset >= 0 and (p.position is None or offset > p.position):
            p.position = offset

    def open_count(self, partition: int) -> int:
        p = self._partitions.get(partition)
        return len(p.open) if p else 0

    def committable(self, partitions: set[int] | None = None) -> dict[int, int]:
        """Offsets to commit now: partitions whose watermark moved past the last commit.

        The watermark is one past the longest acked prefix; while no record is open, the
        consumer's position if that is further (it passes offsets that hold no record).
        """
        out = {}
        for n, p in self._partitions.items():
            if partitions is not None and n not in partitions:
                continue
            offset = p.next_offset
            if not p.open and p.position is not None and (offset is None or p.position > offset):
                offset = p.position
            if offset is not None and offset != p.committed:
                out[n] = offset
        return out

    def uncommitted(self, partition: int) -> int:
        """How many offsets are done but not committed (an upper bound on records a next owner re-sends)."""
        p = self._partitions.get(partition)
        target = self.committable({partition}).get(partition)
        if p is None or target is None:
            return 0
        base = p.committed if p.committed is not None else p.first
        return max(target - base, 0) if base is not None else 0

    def committed(self, partition: int, offset: int) -> None:
        """The broker acknowledged a commit of `offset`."""
        p = self._partitions.get(partition)
        if p is not None and (p.committed is None or offset > p.committed):
            p.committed = offset
