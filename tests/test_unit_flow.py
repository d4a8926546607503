"""consumer.flow: BufferBudget (pause at high, resume at low, no flapping; room()) and ConcurrencyLimit's baseline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.flow import BufferBudget, ConcurrencyLimit


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


# ---- ConcurrencyLimit: the latency baseline ---------------------------------------------------------


def feed(limit: ConcurrencyLimit, latency_s: float, congested: bool, n: int, start: float) -> float:
    """`n` responses, 0.1 s apart (past the cooldown every 10); returns the time after the last."""
    now = start
    for _ in range(n):
        limit.on_response(latency_s, congested, now)
        now += 0.1
    return now


def test_fast_failures_during_an_outage_do_not_lower_the_latency_baseline() -> None:
    """Connection refused answers in 1 ms; once the API is back at its usual 200 ms, the limit recovers."""
    limit = ConcurrencyLimit(8)
    now = feed(limit, 0.2, False, 50, 0.0)
    assert limit.current == 8
    now = feed(limit, 0.001, True, 50, now)  # the outage
    assert limit.current == 1
    feed(limit, 0.2, False, 40, now)  # back: 1+2+...+7 = 28 good responses climb to 8
    assert limit.current == 8


def test_the_baseline_is_learnt_from_successful_responses_only() -> None:
    limit = ConcurrencyLimit(4)
    now = feed(limit, 0.001, True, 20, 0.0)  # no success yet: nothing to compare with
    assert limit.current == 1
    now = feed(limit, 0.3, False, 20, now)
    assert limit.current == 4  # 300 ms is the first baseline, not "slow" against 1 ms failures
    feed(limit, 0.3 * 2 + 0.2, False, 1, now)  # far above the learnt baseline: a congestion signal
    assert limit.current == 2
