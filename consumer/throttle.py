"""Say a repeated thing once per interval: outages repeat the same error many times a second. Pure."""

from __future__ import annotations

import time
from collections.abc import Hashable


class Throttle:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable = None, now: float | None = None) -> bool:
        """True the first time for `key`, then again only once `interval_s` has passed."""
        now = time.monotonic() if now is None else now
        if now - self._last.get(key, float("-inf")) < self.interval_s:
            return False
        self._last[key] = now
        return True
