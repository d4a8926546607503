"""How to react to each Track API answer, and how long to wait before trying again. Pure.

| answer                                     | action  | why                                                  |
|--------------------------------------------|---------|------------------------------------------------------|
| 2xx, body empty or JSON                    | DONE    | every event in the batch accepted                    |
| 2xx, any other body (text/html, ...)       | RETRY   | not the Track API (a page, a portal): never delivered |
| network error, timeout                     | RETRY   | the API may be back in a moment                      |
| 408 425 429 500 502 503 504                | RETRY   | transient by definition; honour Retry-After          |
| 413                                        | SPLIT   | the body is too large: send the halves               |
| 400 422                                    | BISECT  | some event is refused: isolate it, deliver the rest  |
| 401 403                                    | AUTH    | the token is wrong, not the data: wait for a new one |
| any other status (404, 405, 3xx, ...)      | RETRY   | a misconfigured URL must stall, never drop data      |

A single event that still gets SPLIT or BISECT is rejected on its own: dead-lettered as
`rejected`. Retries are unlimited: the partition waits, lag grows and an alert fires.
"""

from __future__ import annotations

import enum
import math
import random
from datetime import UTC
from email.utils import parsedate_to_datetime


class Action(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    SPLIT = "split"
    BISECT = "bisect"
    AUTH = "auth"


_RETRY = frozenset({408, 425, 429, 500, 502, 503, 504})


def classify(status: int | None, api_body: bool = True) -> Action:
    """`status` is the HTTP status, or None when no answer came (connection error, timeout).

    `api_body` is `is_api_body(...)` of the answer: a 2xx without it is not an acceptance.
    """
    if status is None or status in _RETRY:
        return Action.RETRY
    if 200 <= status < 300:
        return Action.DONE if api_body else Action.RETRY
    if status == 413:
        return Action.SPLIT
    if status in (400, 422):
        return Action.BISECT
    if status in (401, 403):
        return Action.AUTH
    return Action.RETRY


def is_api_body(content_type: str | None, body_length: int) -> bool:
    """A body the Track API sends: empty, or JSON (`application/json`, `application/*+json`)."""
    if body_length == 0:
        return True
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def retry_reason(status: int | None, api_body: bool = True) -> str:
    """The `reason` label of group_enriched_retries_total."""
    if status is None:
        return "network"
    if 200 <= status < 300 and not api_body:
        return "not_json"
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    return f"http_{status}"


def backoff(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0, ceiling)


def bounded_retry_after(seconds: float, floor_s: float, cap_s: float) -> tuple[float, str | None]:
    """A `Retry-After` wait held between a floor and a cap: (seconds, the bound applied or None).

    The cap wins over the floor: a Retry-After never holds delivery longer than `cap_s`.
    """
    if seconds > cap_s:
        return cap_s, "cap"
    if seconds < floor_s:
        return min(floor_s, cap_s), "floor"
    return seconds, None


def retry_after_s(value: str | None, now_epoch_s: float) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit() alone accepts "²"
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime dates carry no zone; HTTP dates are UTC (RFC 9110 §5.6.7)
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_epoch_s)
