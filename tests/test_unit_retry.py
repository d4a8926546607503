"""consumer.retry: status classification, retry reasons, full-jitter backoff, Retry-After parsing."""

from __future__ import annotations

import math
import random
from email.utils import formatdate
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.retry import Action, backoff, bounded_retry_after, classify, is_api_body, retry_after_s, retry_reason

NOW = 1_729_439_495.0  # a whole second, so HTTP dates (1 s resolution) compare exactly

# ---- classify --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (None, Action.RETRY),
        (200, Action.DONE),
        (201, Action.DONE),
        (202, Action.DONE),
        (204, Action.DONE),
        (299, Action.DONE),
        (408, Action.RETRY),
        (425, Action.RETRY),
        (429, Action.RETRY),
        (500, Action.RETRY),
        (502, Action.RETRY),
        (503, Action.RETRY),
        (504, Action.RETRY),
        (413, Action.SPLIT),
        (400, Action.BISECT),
        (422, Action.BISECT),
        (401, Action.AUTH),
        (403, Action.AUTH),
        # "any other status": a misconfigured URL must stall, never drop data
        (404, Action.RETRY),
        (405, Action.RETRY),
        (301, Action.RETRY),
        (302, Action.RETRY),
        (304, Action.RETRY),
        (100, Action.RETRY),
        (199, Action.RETRY),
        (300, Action.RETRY),
        (409, Action.RETRY),
        (410, Action.RETRY),
        (418, Action.RETRY),
        (501, Action.RETRY),
        (505, Action.RETRY),
        (599, Action.RETRY),
    ],
)
def test_classify_table(status: int | None, action: Action) -> None:
    assert classify(status) is action


@given(st.integers(200, 299))
def test_every_2xx_is_done(status: int) -> None:
    assert classify(status) is Action.DONE


@given(st.integers(0, 999).filter(lambda s: not 200 <= s < 300))
def test_nothing_outside_2xx_is_done(status: int) -> None:
    action = classify(status)
    assert action is not Action.DONE
    # Only the listed statuses drop data paths (split/bisect end in dead-letters); everything else waits.
    if status not in (400, 401, 403, 413, 422):
        assert action is Action.RETRY


# ---- retry_reason ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (None, "network"),
        (401, "auth"),
        (403, "auth"),
        (429, "throttled"),
        (500, "server_error"),
        (502, "server_error"),
        (503, "server_error"),
        (504, "server_error"),
        (599, "server_error"),
        (408, "http_408"),
        (425, "http_425"),
        (404, "http_404"),
        (301, "http_301"),
    ],
)
def test_retry_reason(status: int | None, reason: str) -> None:
    assert retry_reason(status) == reason


@given(st.integers(100, 599))
def test_retry_reason_is_a_bounded_label(status: int) -> None:
    """Metric label cardinality: a handful of names plus http_<status>."""
    reason = retry_reason(status)
    assert reason in {"auth", "throttled", "server_error"} or reason == f"http_{status}"


# ---- backoff ---------------------------------------------------------------------------------------


class _EdgeRng:
    """A Random stand-in returning one end of the requested interval."""

    def __init__(self, top: bool) -> None:
        self.top = top
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b if self.top else a


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "ceiling"),
    [
        (0, 0.1, 30.0, 0.1),
        (1, 0.1, 30.0, 0.2),
        (3, 0.1, 30.0, 0.8),
        (8, 0.1, 30.0, 25.6),
        (9, 0.1, 30.0, 30.0),
        (40, 0.1, 30.0, 30.0),
        (0, 5.0, 1.0, 1.0),  # the cap wins even on the first attempt
    ],
)
def test_backoff_is_full_jitter_up_to_the_ceiling(attempt: int, base: float, cap: float, ceiling: float) -> None:
    top, bottom = _EdgeRng(True), _EdgeRng(False)
    assert backoff(attempt, base, cap, top) == pytest.approx(ceiling)  # type: ignore[arg-type]
    assert backoff(attempt, base, cap, bottom) == 0  # type: ignore[arg-type]
    assert top.calls[0][0] == 0, "full jitter draws from 0, not from a fraction of the ceiling"


@given(
    attempt=st.one_of(st.integers(0, 64), st.integers(0, 10**18)),
    base=st.floats(1e-6, 10.0),
    cap=st.floats(1e-6, 1e6),
    seed=st.integers(0, 2**32 - 1),
)
def test_backoff_bounds(attempt: int, base: float, cap: float, seed: int) -> None:
    b = backoff(attempt, base, cap, random.Random(seed))
    assert math.isfinite(b)
    bound = min(Fraction(cap), Fraction(base) * 2 ** min(attempt, 2000))
    assert 0 <= Fraction(b) <= bound


@pytest.mark.parametrize("attempt", [31, 1023, 1024, 10**6, 10**100])
def test_backoff_huge_attempt_does_not_overflow(attempt: int) -> None:
    b = backoff(attempt, 0.1, 30.0, random.Random(1))
    assert 0 <= b <= 30.0


def test_backoff_spreads_over_the_whole_interval() -> None:
    rng = random.Random(42)
    samples = [backoff(3, 1.0, 100.0, rng) for _ in range(2000)]
    assert min(samples) < 0.2 and max(samples) > 7.8
    assert all(0 <= s <= 8.0 for s in samples)


def test_backoff_without_rng_uses_the_module_random() -> None:
    for _ in range(50):
        assert 0 <= backoff(2, 0.5, 10.0) <= 2.0


# ---- Retry-After -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("1", 1.0), ("120", 120.0), (" 7 ", 7.0), ("007", 7.0), ("86400", 86400.0)],
)
def test_retry_after_delta_seconds(value: str, seconds: float) -> None:
    assert retry_after_s(value, NOW) == seconds


@pytest.mark.parametrize("value", [None, ""])
def test_retry_after_absent(value: str | None) -> None:
    assert retry_after_s(value, NOW) is None


def test_retry_after_http_date_in_the_future() -> None:
    assert retry_after_s(formatdate(NOW + 90, usegmt=True), NOW) == 90.0
    assert retry_after_s(formatdate(NOW + 1, usegmt=True), NOW) == 1.0


@pytest.mark.parametrize("delta", [0, -1, -3600, -(10**6)])
def test_retry_after_http_date_in_the_past_is_zero(delta: int) -> None:
    assert retry_after_s(formatdate(NOW + delta, usegmt=True), NOW) == 0.0


def test_retry_after_fixed_http_date() -> None:
    value = "Sun, 20 Oct 2024 15:51:45 GMT"  # NOW is 15:51:35 that day
    assert retry_after_s(value, NOW) == 10.0


def test_retry_after_rfc850_date() -> None:
    assert retry_after_s("Sunday, 06-Nov-94 08:49:37 GMT", NOW) == 0.0


def test_retry_after_asctime_date() -> None:
    assert retry_after_s("Sun Nov  6 08:49:37 1994", NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    ["soon", "1.5", "-1", "+5", "1e3", "0x10", "NaN", "inf", "12 s", "Wed, 99 Foo 2024",
     "Mon, 32 Oct 2024 00:00:00 GMT", " ", "\t"],
)  # fmt: skip
def test_retry_after_garbage_is_none(value: str) -> None:
    assert retry_after_s(value, NOW) is None


@pytest.mark.parametrize("value", ["²", "¹²", "3³"])
def test_retry_after_unicode_digit_garbage_is_none(value: str) -> None:
    assert retry_after_s(value, NOW) is None


def test_retry_after_absurd_delta_is_finite() -> None:
    result = retry_after_s("9" * 400, NOW)
    assert result is None or math.isfinite(result)


@given(st.text(max_size=40))
def test_retry_after_never_raises_on_any_text(value: str) -> None:
    """Any header value: a non-negative number or None."""
    result = retry_after_s(value, NOW)
    assert result is None or result >= 0


@given(st.integers(0, 10**9))
def test_retry_after_any_delta_seconds(n: int) -> None:
    assert retry_after_s(str(n), NOW) == float(n)


# ---- a 2xx that is not the Track API's ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "length", "api"),
    [
        (None, 0, True),  # an empty body: 204, or 200 without content
        ("text/html", 0, True),
        ("application/json", 15, True),
        ("application/json; charset=utf-8", 15, True),
        ("Application/JSON", 15, True),
        ("application/problem+json", 15, True),
        ("text/html; charset=utf-8", 40, False),  # a login portal
        ("text/plain", 2, False),
        (None, 2, False),
        ("", 2, False),
        ("application/xml", 2, False),
        ("json", 2, False),
    ],
)
def test_is_api_body(content_type: str | None, length: int, api: bool) -> None:
    assert is_api_body(content_type, length) is api


def test_a_2xx_without_an_api_body_is_retried_not_done() -> None:
    assert classify(200, api_body=False) is Action.RETRY
    assert classify(204, api_body=False) is Action.RETRY
    assert retry_reason(200, api_body=False) == "not_json"
    assert classify(200, api_body=True) is Action.DONE
    # The flag speaks of 2xx only: other statuses keep their meaning.
    assert classify(400, api_body=False) is Action.BISECT
    assert classify(503, api_body=False) is Action.RETRY


# ---- Retry-After bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "wait", "bound"),
    [
        (0.0, 0.1, "floor"),  # Retry-After: 0 (or a past date) in a loop must not hammer the API
        (0.05, 0.1, "floor"),
        (0.1, 0.1, None),
        (5.0, 5.0, None),
        (60.0, 60.0, None),
        (61.0, 60.0, "cap"),
        (86400.0, 60.0, "cap"),  # an absurd value must not stop delivery for a day
        (float("inf"), 60.0, "cap"),
    ],
)
def test_bounded_retry_after(seconds: float, wait: float, bound: str | None) -> None:
    assert bounded_retry_after(seconds, 0.1, 60.0) == (wait, bound)


@given(st.floats(0, 1e12), st.floats(0, 100), st.floats(0.001, 1000))
def test_bounded_retry_after_never_exceeds_the_cap(seconds: float, floor: float, cap: float) -> None:
    wait, _ = bounded_retry_after(seconds, floor, cap)
    assert wait <= cap
    assert wait >= min(floor, cap) or wait == seconds
