"""consumer.batcher.Batcher: count, byte and linger bounds; exact body size; drop on revoke."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.batcher import Batch, Batcher, Item, close


def _item(n: int, size: int | None = None, partition: int = 0) -> tuple[bytes, Item]:
    """(event, item): a JSON event of exactly `size` bytes (at least 16 when n < 100) carrying its number."""
    event = orjson.dumps({"n": n})
    if size is not None:
        pad = size - len(orjson.dumps({"n": n, "p": ""}))
        assert pad >= 0, f"size {size} too small"
        event = orjson.dumps({"n": n, "p": "x" * pad})
        assert len(event) == size
    return event, ((partition, 1, n), 0, None, b"")


def _numbers(batch: Batch) -> list[int]:
    return [e["n"] for e in orjson.loads(batch.body)]


def _check(batch: Batch) -> None:
    body = batch.body
    parsed = orjson.loads(body)
    assert isinstance(parsed, list)
    assert parsed == [orjson.loads(e) for e in batch.events()]
    assert len(batch.events()) == len(batch.items)


def test_empty_batch_body_is_an_empty_array() -> None:
    b = close([], [], 0.0)
    assert b.body == b"[]"
    assert b.events() == []
    assert b.partitions() == set()


# ---- count bound -----------------------------------------------------------------------------------


def test_count_bound_closes_exactly_at_max_events() -> None:
    b = Batcher(max_events=3, max_bytes=1 << 20, linger_s=10)
    assert b.add([_item(0)], 0) == []
    assert b.add([_item(1)], 0) == []
    assert len(b) == 2
    closed = b.add([_item(2)], 0)
    assert len(closed) == 1
    assert _numbers(closed[0]) == [0, 1, 2]
    _check(closed[0])
    assert len(b) == 0
    assert b.flush() is None


def test_max_events_one_sends_every_event_alone() -> None:
    b = Batcher(max_events=1, max_bytes=1 << 20, linger_s=10)
    for n in range(3):
        (batch,) = b.add([_item(n)], 0)
        assert _numbers(batch) == [n]
        _check(batch)


# ---- byte bound ------------------------------------------------------------------------------------


def test_byte_bound_exact_fit_closes_the_batch() -> None:
    # "[" + 3 events of 20 bytes + 2 commas + "]" = 64 bytes
    b = Batcher(max_events=100, max_bytes=64, linger_s=10)
    assert b.add([_item(0, 20)], 0) == []
    assert b.add([_item(1, 20)], 0) == []
    (batch,) = b.add([_item(2, 20)], 0)
    assert len(batch.body) == 64
    assert _numbers(batch) == [0, 1, 2]


def test_byte_bound_one_byte_short_moves_the_event_to_the_next_batch() -> None:
    b = Batcher(max_events=100, max_bytes=63, linger_s=10)
    b.add([_item(0, 20)], 0)
    b.add([_item(1, 20)], 0)
    (batch,) = b.add([_item(2, 20)], 0)
    assert _numbers(batch) == [0, 1]
    assert len(batch.body) == 43 <= 63
    rest = b.flush()
    assert rest is not None and _numbers(rest) == [2]
    _check(rest)


def test_oversized_event_travels_alone() -> None:
    b = Batcher(max_events=100, max_bytes=50, linger_s=10)
    (batch,) = b.add([_item(0, 200)], 0)
    assert _numbers(batch) == [0]
    assert len(batch.body) == 202
    assert len(b) == 0


def test_oversized_event_after_small_ones_closes_both() -> None:
    b = Batcher(max_events=100, max_bytes=50, linger_s=10)
    b.add([_item(0, 20)], 0)
    first, second = b.add([_item(1, 200)], 0)
    assert _numbers(first) == [0] and _numbers(second) == [1]
    _check(first)
    _check(second)
    assert len(b) == 0


def test_event_filling_max_bytes_alone() -> None:
    b = Batcher(max_events=100, max_bytes=22, linger_s=10)
    (batch,) = b.add([_item(0, 20)], 0)  # "[" + 20 + "]" == 22: full
    assert len(batch.body) == 22


@given(
    sizes=st.lists(st.integers(16, 300), max_size=60),
    max_bytes=st.integers(18, 1000),
    max_events=st.integers(1, 20),
)
def test_bounds_hold_and_nothing_is_lost_or_duplicated(sizes: list[int], max_bytes: int, max_events: int) -> None:
    b = Batcher(max_events=max_events, max_bytes=max_bytes, linger_s=1.0)
    batches: list[Batch] = []
    now = 0.0
    for n, size in enumerate(sizes):
        now += 0.3
        batches.extend(b.add([_item(n, size)], now))
        if (due := b.due(now)) is not None:
            batches.append(due)
        assert len(b) <= max_events
    if (last := b.flush()) is not None:
        batches.append(last)
    assert len(b) == 0
    seen: list[int] = []
    for batch in batches:
        assert batch.items, "an empty batch was closed"
        body = batch.body
        assert len(body) <= max_bytes or len(batch.items) == 1
        assert len(batch.items) <= max_events
        seen.extend(_numbers(batch))
    assert seen == list(range(len(sizes)))


@given(sizes=st.lists(st.integers(16, 120), min_size=1, max_size=40), max_bytes=st.integers(200, 600))
def test_batches_are_as_full_as_allowed(sizes: list[int], max_bytes: int) -> None:
    """A batch is closed for bytes only when the next event would not fit."""
    b = Batcher(max_events=10_000, max_bytes=max_bytes, linger_s=1e9)
    batches: list[Batch] = []
    for n, size in enumerate(sizes):
        batches.extend(b.add([_item(n, size)], 0))
    if (last := b.flush()) is not None:
        batches.append(last)
    for batch, following in itertools.pairwise(batches):
        if len(batch.body) < max_bytes:
            assert len(batch.body) + 1 + len(following.events()[0]) > max_bytes


@given(
    sizes=st.lists(st.integers(16, 120), max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=8),
    max_bytes=st.integers(18, 600),
    max_events=st.integers(1, 12),
)
def test_adding_in_chunks_closes_the_same_batches_as_one_by_one(
    sizes: list[int], cuts: list[int], max_bytes: int, max_events: int
) -> None:
    """The app adds a whole consume() call at once; the batches must not depend on that."""
    items = [_item(n, size) for n, size in enumerate(sizes)]
    single, chunked = Batcher(max_events, max_bytes, 1.0), Batcher(max_events, max_bytes, 1.0)
    one_by_one = [batch for item in items for batch in single.add([item], 0)]
    bounds = [0, *sorted(c for c in cuts if c < len(items)), len(items)]
    at_once = [batch for lo, hi in itertools.pairwise(bounds) for batch in chunked.add(items[lo:hi], 0)]
    assert [(b.items, b.body) for b in at_once] == [(b.items, b.body) for b in one_by_one]
    assert len(chunked) == len(single)


@given(sizes=st.lists(st.integers(16, 200), max_size=30), data=st.data())
def test_body_and_the_body_of_any_range_are_the_json_arrays_of_their_events(
    sizes: list[int], data: st.DataObject
) -> None:
    events = [_item(n, size)[0] for n, size in enumerate(sizes)]
    batch = close(list(events), [_item(n)[1] for n in range(len(events))], 0.0)
    assert batch.body == b"[" + b",".join(events) + b"]"
    assert batch.events() == events
    lo = data.draw(st.integers(0, len(events)))
    hi = data.draw(st.integers(lo, len(events)))
    assert batch.body_of(lo, hi) == b"[" + b",".join(events[lo:hi]) + b"]"


def test_without_keeps_the_other_partitions_events_and_body() -> None:
    entries = [_item(n, 16 + n, partition=n % 3) for n in range(7)]
    batch = close([e for e, _ in entries], [i for _, i in entries], 4.0)
    rest = batch.without({1})
    assert _numbers(rest) == [0, 2, 3, 5, 6]
    assert rest.created == 4.0 and rest.partitions() == {0, 2}
    _check(rest)
    assert batch.without({0, 1, 2}).body == b"[]"


# ---- linger ----------------------------------------------------------------------------------------


def test_linger_due_and_deadline() -> None:
    b = Batcher(max_events=10, max_bytes=1 << 20, linger_s=0.5)
    assert b.deadline() is None
    assert b.due(100.0) is None
    b.add([_item(0)], 10.0)
    b.add([_item(1)], 10.4)  # a later event does not extend the deadline
    assert b.deadline() == pytest.approx(10.5)
    assert b.due(10.49) is None
    batch = b.due(10.5)
    assert batch is not None and _numbers(batch) == [0, 1]
    assert b.deadline() is None
    assert b.due(11.0) is None


def test_next_batch_lingers_from_its_own_first_event() -> None:
    b = Batcher(max_events=2, max_bytes=1 << 20, linger_s=1.0)
    b.add([_item(0)], 0.0)
    b.add([_item(1)], 0.5)  # closed by count at 0.5
    assert b.deadline() is None
    b.add([_item(2)], 5.0)
    assert b.deadline() == pytest.approx(6.0)
    assert b.due(5.99) is None
    assert b.due(6.0) is not None


def test_linger_zero_is_due_at_once() -> None:
    b = Batcher(max_events=10, max_bytes=1 << 20, linger_s=0)
    b.add([_item(0)], 3.0)
    assert b.deadline() == 3.0
    batch = b.due(3.0)
    assert batch is not None and _numbers(batch) == [0]


def test_flush_returns_the_open_batch_regardless_of_linger() -> None:
    b = Batcher(max_events=10, max_bytes=1 << 20, linger_s=100)
    assert b.flush() is None
    b.add([_item(0)], 0)
    batch = b.flush()
    assert batch is not None and _numbers(batch) == [0]
    assert b.flush() is None


# ---- drop ------------------------------------------------------------------------------------------


def test_drop_keeps_other_partitions_and_recomputes_size() -> None:
    b = Batcher(max_events=100, max_bytes=1 << 20, linger_s=1.0)
    for n in range(6):
        b.add([_item(n, 16 + n, partition=n % 3)], 7.0)
    assert b.drop({1}) == 2
    assert len(b) == 4
    assert b.deadline() == pytest.approx(8.0), "the kept events keep their linger deadline"
    batch = b.flush()
    assert batch is not None
    assert _numbers(batch) == [0, 2, 3, 5]
    assert batch.partitions() == {0, 2}
    _check(batch)


def test_drop_nothing_matching() -> None:
    b = Batcher(max_events=100, max_bytes=1 << 20, linger_s=1.0)
    b.add([_item(0, partition=0)], 0)
    assert b.drop({5}) == 0
    assert b.drop(set()) == 0
    assert len(b) == 1
    batch = b.flush()
    assert batch is not None
    _check(batch)


def test_drop_everything_then_add_again() -> None:
    b = Batcher(max_events=100, max_bytes=1 << 20, linger_s=1.0)
    b.add([_item(0, partition=4)], 0.0)
    b.add([_item(1, partition=4)], 0.0)
    assert b.drop({4}) == 2
    assert len(b) == 0
    assert b.deadline() is None
    assert b.due(100.0) is None
    assert b.flush() is None
    b.add([_item(2, partition=1)], 50.0)
    assert b.deadline() == pytest.approx(51.0), "linger restarts with the first event after the drop"
    batch = b.flush()
    assert batch is not None and _numbers(batch) == [2]
    _check(batch)


def test_byte_bound_after_drop_uses_the_recomputed_size() -> None:
    b = Batcher(max_events=100, max_bytes=64, linger_s=10)
    b.add([_item(0, 20, partition=0)], 0)
    b.add([_item(1, 20, partition=1)], 0)
    b.drop({1})
    # Now "[" + 20 + "]" = 22; two more 20-byte events fill exactly 64.
    assert b.add([_item(2, 20)], 0) == []
    (batch,) = b.add([_item(3, 20)], 0)
    assert _numbers(batch) == [0, 2, 3]
    assert len(batch.body) == 64


@given(
    parts=st.lists(st.integers(0, 3), max_size=30),
    dropped=st.sets(st.integers(0, 3)),
    sizes=st.data(),
)
def test_drop_property(parts: list[int], dropped: set[int], sizes: st.DataObject) -> None:
    b = Batcher(max_events=1000, max_bytes=1 << 30, linger_s=1.0)
    for n, p in enumerate(parts):
        b.add([_item(n, sizes.draw(st.integers(16, 50)), partition=p)], 0)
    assert b.drop(dropped) == sum(1 for p in parts if p in dropped)
    batch = b.flush()
    kept = [n for n, p in enumerate(parts) if p not in dropped]
    if not kept:
        assert batch is None
        return
    assert batch is not None
    assert _numbers(batch) == kept
    _check(batch)


def test_batch_partitions() -> None:
    b = Batcher(max_events=3, max_bytes=1 << 20, linger_s=1)
    b.add([_item(0, partition=2)], 0)
    b.add([_item(1, partition=0)], 0)
    (batch,) = b.add([_item(2, partition=2)], 0)
    assert batch.partitions() == {0, 2}
