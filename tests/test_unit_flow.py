"""consumer.flow.BufferBudget: pause at high, resume at low, no flapping in between; room()."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.flow import BufferBudget


def test_default_low_is_half_of_high() -> None:
    assert BufferBudget(100).low == 50
    assert BufferBudget(101).low == 50
    assert BufferBudget(1).low == 0
    assert BufferBudget(100, low=10).low == 10
    assert BufferBudget(100, low=0).low == 0  # an explicit 0 is not "unset"


def test_hysteresis_sequence() -> None:
    b = BufferBudget(high=100, low=40)
    assert not b.paused
    assert b.update(0) is None
    assert b.update(99) is None
    assert b.update(100) is True and b.paused  # pause at high
    assert b.update(150) is None  # already paused: no second decision
    assert b.update(100) is None
    assert b.update(41) is None  # between low and high: stay paused
    assert b.update(99) is None
    assert b.update(40) is False and not b.paused  # resume at low
    assert b.update(0) is None
    assert b.update(41) is None  # between low and high: stay running
    assert b.update(99) is None
    assert b.update(100) is True


def test_no_flapping_when_oscillating_between_low_and_high() -> None:
    b = BufferBudget(high=100, low=40)
    b.update(100)
    decisions = [b.update(n) for n in [41, 99, 60, 45, 98, 41] * 10]
    assert decisions == [None] * 60
    assert b.paused
    b.update(40)
    decisions = [b.update(n) for n in [41, 99, 60, 45, 98, 41] * 10]
    assert decisions == [None] * 60
    assert not b.paused


def test_big_jumps_cross_both_thresholds() -> None:
    b = BufferBudget(high=10, low=5)
    assert b.update(1000) is True
    assert b.update(0) is False
    assert b.update(10) is True


@pytest.mark.parametrize(("buffered", "room"), [(0, 100), (1, 99), (99, 1), (100, 0), (101, 0), (10**9, 0)])
def test_room(buffered: int, room: int) -> None:
    assert BufferBudget(100).room(buffered) == room


def test_room_does_not_depend_on_pause_state() -> None:
    b = BufferBudget(100, 40)
    b.update(100)
    assert b.room(50) == 50


@given(
    high=st.integers(2, 1000),
    data=st.data(),
    levels=st.lists(st.integers(0, 1500), max_size=80),
)
def test_hysteresis_property(high: int, data: st.DataObject, levels: list[int]) -> None:
    low = data.draw(st.integers(0, high - 1))
    b = BufferBudget(high, low)
    paused = False
    last_decision: bool | None = None
    for n in levels:
        decision = b.update(n)
        if decision is True:
            assert not paused and n >= high
            assert last_decision is not True, "two pauses without a resume"
        elif decision is False:
            assert paused and n <= low
            assert last_decision is not False, "two resumes without a pause"
        else:
            # No decision: either nothing to do in this state, or the level is inside the band.
            assert (not paused and n < high) or (paused and n > low)
        if decision is not None:
            paused = decision
            last_decision = decision
        assert b.paused == paused
