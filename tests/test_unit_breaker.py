"""consumer.breaker: a run of refused events opens it, one accepted request closes it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.breaker import Breaker, Change


def test_opens_at_the_threshold_not_before() -> None:
    b = Breaker(3)
    assert b.refused() is Change.NONE
    assert b.refused() is Change.NONE
    assert not b.open
    assert b.refused() is Change.OPENED
    assert b.open
    assert b.refused() is Change.NONE  # already open: said once


def test_an_accepted_request_resets_the_run() -> None:
    b = Breaker(3)
    b.refused(2)
    assert b.accepted() is Change.NONE
    b.refused(2)
    assert not b.open  # 2 + 2 refused, but not in a row


def test_closes_on_the_first_accepted_request() -> None:
    b = Breaker(2)
    b.refused(2)
    assert b.open
    assert b.accepted() is Change.CLOSED
    assert not b.open and b.refused_in_a_row == 0
    assert b.refused() is Change.NONE  # a fresh run is counted from zero


def test_zero_turns_it_off() -> None:
    b = Breaker(0)
    assert b.refused(10_000) is Change.NONE
    assert not b.open


@given(st.lists(st.one_of(st.integers(1, 5), st.just(0)), max_size=200), st.integers(1, 50))
def test_open_iff_the_last_run_of_refusals_reached_the_threshold(steps: list[int], threshold: int) -> None:
    """0 is an accepted request, n > 0 is n events refused one by one."""
    b = Breaker(threshold)
    run = 0
    for step in steps:
        if step == 0:
            b.accepted()
            run = 0
        else:
            b.refused(step)
            run += step
    assert b.open == (run >= threshold)


def test_held_ranges_are_merged_lowest_last() -> None:
    from consumer.delivery import _merged

    assert _merged([(5, 6), (0, 4), (4, 5), (8, 10)]) == [(8, 10), (0, 6)]
    assert _merged([]) == []


def test_every_metric_delivery_uses_exists() -> None:
    """Delivery's metric attributes exist on Metrics (a merge once dropped one: a crash on the first Retry-After)."""
    import ast
    import inspect

    from consumer import delivery
    from consumer.telemetry import Metrics

    used = {
        node.attr
        for node in ast.walk(ast.parse(inspect.getsource(delivery)))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "metrics"
    }
    metrics = Metrics()
    assert used and all(hasattr(metrics, name) for name in used), sorted(n for n in used if not hasattr(metrics, n))
