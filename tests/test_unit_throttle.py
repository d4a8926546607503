"""Throttle: once per interval per key."""

from consumer.throttle import Throttle


def test_first_time_then_only_after_the_interval_per_key() -> None:
    t = Throttle(30.0)
    assert t.allow("a", now=100.0)
    assert not t.allow("a", now=129.9)
    assert t.allow("b", now=129.9)  # keys are independent
    assert t.allow("a", now=130.0)
    assert not t.allow("a", now=130.0)


def test_the_default_key_is_one_key() -> None:
    t = Throttle(1.0)
    assert t.allow(now=0.0)
    assert not t.allow(now=0.5)
    assert t.allow(now=1.5)
