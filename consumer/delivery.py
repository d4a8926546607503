"""Deliver one batch to the Track API, retrying until it is accepted, rejected or abandoned (I/O edge).

Runs on a small thread pool: one batch per worker, so `MAX_INFLIGHT_REQUESTS` bounds the
requests in flight. Decisions come from `retry.py`; this module only carries them out.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from consumer.batcher import Batch, Item
from consumer.breaker import Breaker, Change
from consumer.config import ConfigError, valid_token
from consumer.flow import ConcurrencyLimit
from consumer.retry import (
    Action,
    backoff,
    bounded_retry_after,
    classify,
    is_api_body,
    retry_after_s,
    retry_reason,
)
from consumer.telemetry import Health, Metrics
from consumer.throttle import Throttle

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.1
AUTH_BACKOFF_MAX_S = 5.0  # short, so a rotated token is picked up within seconds
AUTH_LOG_INTERVAL_S = 60.0
FAILURE_LOG_INTERVAL_S = 30.0


@dataclass
class Outcome:
    """What became of each event of a batch."""

    batch: Batch
    delivered: list[Item] = field(default_factory=list)
    rejected: list[tuple[Item, int, str]] = field(default_factory=list)  # item, HTTP status, API's message
    abandoned: list[Item] = field(default_factory=list)  # not delivered: shutting down


class TokenSource:
    """A secret (the Track API token by default), from the environment or from a file re-read when it changes.

    `name` is the setting named in messages (never the value); `valid` says whether a value is usable.
    The Schema Registry's secret files use it too (consumer/registry.py).
    """

    def __init__(
        self,
        token: str | None = None,
        path: Path | None = None,
        name: str = "TRACK_API_TOKEN_FILE",
        valid: Callable[[str], bool] = valid_token,
    ) -> None:
        self._path = path
        self._name = name
        self._valid = valid
        self._token = token or ""
        self._stamp: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self._say = Throttle(FAILURE_LOG_INTERVAL_S)  # the file is read before every request
        if path is not None:
            self.refresh()
            if not self._token:
                raise ConfigError(f"{name} is invalid: no usable value (empty, or not printable ASCII)")

    def get(self) -> str:
        if self._path is not None:
            self.refresh()
        return self._token

    def refresh(self) -> None:
        """Re-read the file if its mtime or size changed (a Kubernetes Secret swaps a symlink)."""
        if self._path is None:
            return
        try:
            st = os.stat(self._path)
            stamp = (st.st_mtime, st.st_size)
            if stamp == self._stamp:
                return
            token = self._path.read_text().strip()
        except OSError as exc:
            if self._say.allow("unreadable"):
                log.warning("cannot re-read %s; keeping the current value: %s", self._name, exc.strerror)
            return
        with self._lock:
            self._stamp = stamp
            if self._valid(token):
                self._token = token
            elif token and self._say.allow("unusable"):
                log.warning("%s holds no usable value (not printable ASCII); keeping the current one", self._name)


class RetryGate:
    """One `Retry-After` deadline shared by every worker: no request goes out before it."""

    def __init__(self) -> None:
        self._not_before = 0.0
        self._lock = threading.Lock()

    def defer(self, seconds: float) -> None:
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    def wait(self, stop: threading.Event, draining: threading.Event | None = None) -> bool:
        """Sleep until the deadline; False if `stop` was set meanwhile, or `draining` while a wait was due."""
        while (delay := self._not_before - time.monotonic()) > 0:
            if draining is not None and draining.is_set():
                return False  # a stop is never delayed by a Retry-After wait
            step = 1.0 if draining is None else 0.1  # bounded: Event.wait overflows on absurd Retry-After values
            if stop.wait(min(delay, step)):
                return False
        return not stop.is_set()


def auth_header(scheme: str, token: str) -> tuple[str, str]:
    """The request header that carries the token, for TRACK_API_AUTH (`bearer` or `x-api-key`)."""
    return ("x-api-key", token) if scheme == "x-api-key" else ("Authorization", f"Bearer {token}")


class Delivery:
    def __init__(
        self,
        url: str,
        tokens: TokenSource,
        timeout_s: float,
        backoff_max_s: float,
        max_connections: int,
        metrics: Metrics,
        health: Health,
        limiter: ConcurrencyLimit,
        ca_bundle: Path | None = None,
        auth: str = "bearer",
        breaker_refused_events: int = 100,
        retry_after_max_s: float = 60.0,
    ) -> None:
        self.url = url
        self.host = httpx.URL(url).host  # for log lines: never the whole URL (it may carry credentials)
        self.auth = auth
        self.limiter = limiter
        self.tokens = tokens
        self.backoff_max_s = backoff_max_s
        self.metrics = metrics
        self.health = health
        self.gate = RetryGate()
        self.stop = threading.Event()  # set when in-flight work must be abandoned
        self.draining = threading.Event()  # set at shutdown: no Retry-After is waited out any more
        self.retry_after_max_s = retry_after_max_s
        self._auth_log = Throttle(AUTH_LOG_INTERVAL_S)
        self._failure_log = Throttle(FAILURE_LOG_INTERVAL_S)
        self.breaker = Breaker(breaker_refused_events)  # shared by every worker, under _breaker_lock
        self._breaker_lock = threading.Lock()
        # Certificates are always verified; a CA bundle replaces the system trust store.
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else True
        self._client = httpx.Client(
            verify=verify,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"Content-Type": "application/json"},
        )

    def close(self) -> None:
        self._client.close()

    def send(self, batch: Batch) -> Outcome:
        """Deliver a batch; split on 413 and bisect on 400/422 so only refused events are rejected.

        Events refused one by one are dead-lettered unless the breaker opens before the batch is
        done: then they are held with the rest and retried whole (an outage, not bad data).
        """
        outcome = Outcome(batch)
        items = batch.items
        chunks = [(0, len(items))]  # ranges of events to send, the next one last
        refused: list[tuple[int, int, str]] = []  # index, status, message: refused one by one (400/422)
        attempt = 0  # retries of a refused request while the breaker is open
        while chunks or (refused and self.breaker.open):
            if refused and self.breaker.open:  # hold them: the API refuses everything now
                chunks, refused = _merged(chunks + [(i, i + 1) for i, _, _ in refused]), []
            lo, hi = chunks.pop()
            answer = self._post_until_final(batch.body_of(lo, hi), hi - lo)
            if answer is None:
                chunks.append((lo, hi))
                break
            action, status, message = answer
            if action is Action.DONE:
                outcome.delivered.extend(items[lo:hi])
                self._breaker_event(accepted=True)
                attempt = 0
            elif action is Action.BISECT and self.breaker.open:
                # Retry this range whole, with backoff: bisecting would only multiply the requests.
                chunks.append((lo, hi))
                self.metrics.retries.labels("breaker_open").inc()
                self._log_failure(f"HTTP {status}", message)
                if self.stop.wait(backoff(attempt, BACKOFF_BASE_S, self.backoff_max_s)):
                    break
                attempt += 1
            elif hi - lo == 1 and action is Action.BISECT:
                refused.append((lo, status, message))
                self._breaker_event(accepted=False)
            elif hi - lo == 1:  # 413 for one event: too large on its own, whatever the API's state
                outcome.rejected.append((items[lo], status, message))
            else:
                mid = (lo + hi) // 2
                chunks.append((mid, hi))
                chunks.append((lo, mid))
        if refused and self.breaker.open:  # stopping while held: these are not refused, only undelivered
            chunks, refused = chunks + [(i, i + 1) for i, _, _ in refused], []
        for lo, hi in chunks:  # left when stopping: not delivered, not committed
            outcome.abandoned.extend(items[lo:hi])
        outcome.rejected.extend((items[i], status, message) for i, status, message in refused)
        return outcome

    def _breaker_event(self, accepted: bool) -> None:
        with self._breaker_lock:
            change = self.breaker.accepted() if accepted else self.breaker.refused()
        if change is Change.OPENED:
            self.health.breaker_open = True
            self.metrics.breaker_open.set(1)
            self.metrics.breaker_opened.inc()
            log.error(
                "Track API refused each of the last %d events one by one and accepted nothing in between: "
                "treating it as an outage, not bad data; holding batches and retrying, dead-lettering "
                "nothing until a request is accepted",
                self.breaker.threshold,
            )
        elif change is Change.CLOSED:
            self.health.breaker_open = False
            self.metrics.breaker_open.set(0)
            log.warning("Track API accepts events again; refused events are dead-lettered as before")

    def _post_until_final(self, body: bytes, events: int) -> tuple[Action, int, str] | None:
        """POST until the answer is DONE, SPLIT or BISECT; None when abandoned."""
        attempt = 0
        while self.gate.wait(self.stop, self.draining):
            status, message, retry_after, api_body = self._post(body, events)
            action = classify(status, api_body)
            if action is Action.AUTH:
                self._auth_failed(status)
            elif status is not None and self.health.auth_failing:
                self.health.auth_failing = False
                self.metrics.auth_failing.set(0)
                log.info("Track API accepts the token again")
            if action in (Action.DONE, Action.SPLIT, Action.BISECT):
                return action, status or 0, message
            self.metrics.retries.labels(retry_reason(status, api_body)).inc()
            if status is not None and action is Action.RETRY and api_body:
                self._log_failure(f"HTTP {status}", message)
            cap = AUTH_BACKOFF_MAX_S if action is Action.AUTH else self.backoff_max_s
            if retry_after is not None:
                # Never sooner than the backoff would retry anyway (`Retry-After: 0` in a loop),
                # never longer than RETRY_AFTER_MAX_S (`Retry-After: 86400` must not stop delivery).
                floor = max(BACKOFF_BASE_S, backoff(attempt, BACKOFF_BASE_S, cap))
                wait, bound = bounded_retry_after(retry_after, floor, self.retry_after_max_s)
                if bound is not None:
                    self.metrics.retry_after_bounded.labels(bound).inc()
                self.gate.defer(wait)
                attempt += 1
                continue
            if self.stop.wait(backoff(attempt, BACKOFF_BASE_S, cap)):
                return None
            attempt += 1
        return None

    def _post(self, body: bytes, events: int) -> tuple[int | None, str, float | None, bool]:
        """One request: (status or None, short message, Retry-After seconds or None, is_api_body)."""
        token = self.tokens.get()
        name, value = auth_header(self.auth, token)
        headers = {name: value}
        self.metrics.batch_events.observe(events)
        started = time.perf_counter()
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except (httpx.HTTPError, UnicodeError, ValueError) as exc:  # ValueError: httpx refuses a header
            elapsed = time.perf_counter() - started
            self.metrics.http_duration.observe(elapsed)
            self.metrics.http_requests.labels("error").inc()
            self.limiter.on_response(elapsed, congested=True, now=time.monotonic())
            message = f"{type(exc).__name__}: {exc}".replace(token, "<redacted>")  # httpx quotes bad headers whole
            self._log_failure(type(exc).__name__, message)
            return None, message, None, True
        elapsed = time.perf_counter() - started
        self.metrics.http_duration.observe(elapsed)
        status = response.status_code
        if status not in (401, 403):  # a refused token says nothing about the API's load
            self.limiter.on_response(elapsed, congested=status == 429 or status >= 500, now=time.monotonic())
        self.metrics.http_requests.labels(str(status)).inc()
        message = "" if status < 300 else f"HTTP {status}: {response.text[:500]}"
        api_body = status >= 300 or is_api_body(response.headers.get("Content-Type"), len(response.content))
        if not api_body:
            content_type = response.headers.get("Content-Type", "none")[:100]
            message = f"HTTP {status} with content type {content_type}"
            self.metrics.http_not_json.inc()
            if self._failure_log.allow("not_json"):
                log.error(
                    "Track API URL (host %s) answered HTTP %s with content type %s, not JSON: not the Track API "
                    "(a web page, a login portal?); retrying, nothing is counted delivered or committed",
                    self.host,
                    status,
                    content_type,
                )
        return status, message, retry_after_s(response.headers.get("Retry-After"), time.time()), api_body

    def _log_failure(self, kind: str, message: str) -> None:
        """Say why requests fail (TLS, DNS, refused...), once per kind every 30 s: retries are silent otherwise."""
        if self._failure_log.allow(kind):
            log.warning("Track API request failed, retrying: %s", message)

    def _auth_failed(self, status: int | None) -> None:
        self.tokens.refresh()
        if not self.health.auth_failing:
            self.health.auth_failing = True
            self.metrics.auth_failing.set(1)
        if self._auth_log.allow():
            log.error("Track API refuses the token (HTTP %s); delivery paused until it is accepted", status)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent ranges joined, the lowest last (the order `send` pops them in)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out[::-1]
