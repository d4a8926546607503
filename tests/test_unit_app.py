"""The main loop's decisions (stop, final commit, revoke, lost, crash, fatal error, pause, timer commit) with
small fakes for the Kafka consumer, the dead-letter producer and the HTTP side.

The fakes replace the classes `consumer.app` builds, so `App` itself runs unchanged: the real
offset tracker, batcher, flow control and delivery thread pool, on this thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from consumer import app as app_module
from consumer.batcher import Batch
from consumer.config import load
from consumer.delivery import Outcome
from consumer.source import Source
from consumer.throttle import Throttle
from harness.records import encode_raw, sample_record

MAX_STEPS = 2000  # a bound on loop turns, not on time: each turn blocks at most LOOP_WAIT_S


class FakeMessage:
    def __init__(self, partition: int, offset: int, value: bytes | None) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return None

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


class FakeSource:
    """The Kafka consumer: scripted consume() steps, recorded pauses and commits, rebalances on demand."""

    def __init__(self, settings: Any, _overrides: Any, on_assign: Any, on_revoke: Any, on_lost: Any, _stats: Any):
        self.topic = settings.kafka_topic
        self.on_assign, self.on_revoke, self.on_lost = on_assign, on_revoke, on_lost
        self.fatal: str | None = None
        self._error_log = Throttle(30.0)
        self.script: deque[list[FakeMessage] | Callable[[], list[FakeMessage]]] = deque()
        self.assigned: set[int] = set()
        self.paused: set[int] = set()
        self.commits: list[tuple[dict[int, int], bool, KafkaError | None]] = []
        self.commit_errors: deque[KafkaError] = deque()  # the next sync commits fail with these
        self.always_fail: KafkaError | None = None
        self.served = 0
        self.on_serve: Callable[[], None] | None = None
        self.closed = False
        self._committed: Callable[[int, int], None] = lambda p, o: None

    def tps(self, parts: set[int] | list[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(parts)]

    def assign(self, parts: list[int]) -> None:
        self.assigned |= set(parts)
        self.on_assign(self.tps(parts))

    def revoke(self, parts: list[int]) -> None:
        self.on_revoke(self.tps(parts))
        self.assigned -= set(parts)
        self.paused -= set(parts)

    def start(self, committed: Callable[[int, int], None]) -> None:
        self._committed = committed

    def consume(self, max_records: int, timeout_s: float) -> list[FakeMessage]:
        if max_records <= 0 or not self.script:
            time.sleep(min(timeout_s, 0.01))  # as the real one blocks: delivery threads get to run
            return []
        step = self.script.popleft()
        return step() if callable(step) else step

    def set_paused(self, partitions: list[int], paused: bool) -> None:
        (self.paused.update if paused else self.paused.difference_update)(partitions)

    def positions(self, _partitions: list[int]) -> dict[int, int]:
        return {}

    def commit(self, offsets: dict[int, int], wait: bool) -> KafkaError | None:
        if not offsets:
            return None
        err = None
        if wait:
            err = self.commit_errors.popleft() if self.commit_errors else self.always_fail
        self.commits.append((dict(offsets), wait, err))
        if err is None:
            for p, o in offsets.items():
                self._committed(p, o)
        return err

    def serve(self, _timeout_s: float) -> None:
        self.served += 1
        if self.on_serve is not None:
            self.on_serve()

    def consume_error(self, err: KafkaError) -> None:
        Source.consume_error(self, err)  # type: ignore[arg-type]  # the real decision, on the fake's state

    def close(self) -> None:
        self.closed = True
        if self.assigned:
            self.revoke(sorted(self.assigned))

    def stored(self) -> dict[int, int]:
        """What the group has: the last successful commit per partition."""
        out: dict[int, int] = {}
        for offsets, _, err in self.commits:
            if err is None:
                out.update(offsets)
        return out


class FakeDelivery:
    """The HTTP side: every batch is accepted, or held until `release` (or abandoned once `stop` is set)."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        self.stop = threading.Event()
        self.draining = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.closed = False

    def send(self, batch: Batch) -> Outcome:
        while not self.release.wait(0.01):
            if self.stop.is_set():
                return Outcome(batch, abandoned=list(batch.items))
        return Outcome(batch, delivered=list(batch.items))

    def close(self) -> None:
        self.closed = True


class FakeDeadLetters:
    def __init__(self, _config: Any, _topic: str, on_acked: Callable[..., None], *_args: Any, **_kwargs: Any) -> None:
        self.on_acked = on_acked
        self.queue: list[tuple[Any, str]] = []
        self.on_poll: Callable[[], None] | None = None
        self.stuck = 0

    @property
    def pending(self) -> int:
        return len(self.queue)

    def stuck_partitions(self) -> set[int]:
        return set()

    def fit(self, _source_max_bytes: int) -> None:
        pass

    def send(self, ticket: Any, _topic: str, _key: Any, _value: Any, reason: str, *_a: Any, **_k: Any) -> None:
        self.queue.append((ticket, reason))

    def poll(self) -> None:
        if self.on_poll is not None:
            self.on_poll()
        queue, self.queue = self.queue, []
        for ticket, reason in queue:
            self.on_acked(ticket, reason)

    def flush(self, _timeout_s: float) -> int:
        self.poll()
        return 0

    def forget(self, _partitions: set[int]) -> None:
        pass


class FakeServer:
    server_address = ("127.0.0.1", 0)

    def __init__(self) -> None:
        self.stopped = False

    def shutdown(self) -> None:
        self.stopped = True


@pytest.fixture
def make_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., app_module.App]]:
    monkeypatch.setattr(app_module, "Source", FakeSource)
    monkeypatch.setattr(app_module, "Delivery", FakeDelivery)
    monkeypatch.setattr(app_module, "DeadLetters", FakeDeadLetters)
    monkeypatch.setattr(app_module, "serve", lambda *_a: FakeServer())
    monkeypatch.setattr(app_module, "Admin", lambda _config: None)
    monkeypatch.setattr(app_module, "ensure_topic", lambda *_a: 1_048_588)
    made: list[app_module.App] = []

    def make(**env: str) -> app_module.App:
        environ = {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "KAFKA_TOPIC": "t",
            "TRACK_API_TOKEN": "x",
            "METRICS_PORT": "0",
            "BATCH_LINGER_MS": "0",
            "BATCH_MAX_EVENTS": "5",
            "COMMIT_INTERVAL_MS": "600000",
            **env,
        }
        settings, overrides = load(environ)
        made.append(app_module.App(settings, overrides))
        made[-1].last_commit = time.monotonic()  # no timer commit before COMMIT_INTERVAL_MS
        return made[-1]

    yield make
    for a in made:
        a.pool.shutdown(wait=False, cancel_futures=True)


def fake(app: app_module.App) -> FakeSource:
    assert isinstance(app.source, FakeSource)
    return app.source


def assigned(app: app_module.App, partitions: list[int]) -> FakeSource:
    """The app's fake consumer, subscribed and assigned `partitions` (the rebalance callback runs)."""
    src = fake(app)
    src.start(app.tracker.committed)
    src.assign(partitions)
    return src


def records(partition: int, start: int, n: int) -> list[FakeMessage]:
    return [FakeMessage(partition, o, encode_raw(sample_record(o, "unit"))) for o in range(start, start + n)]


def step_until(app: app_module.App, condition: Callable[[], object]) -> None:
    for _ in range(MAX_STEPS):
        if condition():
            return
        app._step()
    pytest.fail("condition not reached")


def delivered_all(app: app_module.App, offsets: dict[int, int]) -> Callable[[], bool]:
    """Every record below `offsets` is acked (committed already, or committable now)."""
    src = fake(app)
    return lambda: all(app.tracker.committable({p}).get(p, src.stored().get(p)) == o for p, o in offsets.items())


def stop_line(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    lines = [r for r in caplog.records if r.getMessage() == "consumer stopped"]
    assert len(lines) == 1
    return lines[0]


# ---- stop and the final commit ----------------------------------------------------------------------


def test_stop_delivers_what_is_buffered_commits_and_closes(make_app: Callable[..., app_module.App]) -> None:
    app = make_app()
    src = assigned(app, [0, 1])
    src.script.append(records(0, 0, 7) + records(1, 0, 3))
    app._step()
    assert app._shutdown() == 0
    assert src.stored() == {0: 7, 1: 3}
    assert src.commits[-1][1] is True  # the final commit waits for the broker
    assert src.closed and app.delivery.stop.is_set() and app.server.stopped  # type: ignore[attr-defined]


def test_final_commit_is_retried_while_the_group_rebalances(
    make_app: Callable[..., app_module.App], caplog: pytest.LogCaptureFixture
) -> None:
    """`generation id is not valid`, then `rebalance in progress`: serve the group, try again, succeed."""
    app = make_app()
    src = assigned(app, [0])
    src.script.append(records(0, 0, 10))
    step_until(app, delivered_all(app, {0: 10}))
    src.commit_errors.extend([KafkaError(KafkaError.ILLEGAL_GENERATION), KafkaError(KafkaError.REBALANCE_IN_PROGRESS)])
    with caplog.at_level(logging.INFO):
        assert app._shutdown() == 0
    assert src.served == 2
    assert src.stored() == {0: 10}
    assert stop_line(caplog).delivered_left_uncommitted == 0  # type: ignore[attr-defined]


def test_a_revoke_while_retrying_commits_its_partitions_itself(make_app: Callable[..., app_module.App]) -> None:
    app = make_app()
    src = assigned(app, [0, 1])
    src.script.append(records(0, 0, 5) + records(1, 0, 5))
    step_until(app, delivered_all(app, {0: 5, 1: 5}))
    src.commit_errors.append(KafkaError(KafkaError.ILLEGAL_GENERATION))
    src.on_serve = lambda: src.revoke([1])  # the rebalance's second round takes partition 1
    assert app._shutdown() == 0
    assert src.stored() == {0: 5, 1: 5}


def test_final_commit_gives_up_at_the_deadline_and_the_stop_line_says_what_is_left(
    make_app: Callable[..., app_module.App], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "FINAL_COMMIT_MIN_S", 0.0)
    app = make_app(SHUTDOWN_TIMEOUT_S="0.2")
    src = assigned(app, [0])
    src.script.append(records(0, 0, 10))
    step_until(app, delivered_all(app, {0: 10}))
    src.always_fail = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    with caplog.at_level(logging.INFO):
        assert app._shutdown() == 0
    assert src.served > 0 and src.stored() == {}
    assert stop_line(caplog).delivered_left_uncommitted == 10  # type: ignore[attr-defined]


def test_a_commit_error_no_rebalance_explains_is_not_retried(make_app: Callable[..., app_module.App]) -> None:
    app = make_app()
    src = assigned(app, [0])
    src.script.append(records(0, 0, 5))
    step_until(app, delivered_all(app, {0: 5}))
    src.always_fail = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    assert app._shutdown() == 0
    assert src.served == 0


def test_undelivered_at_the_deadline_is_abandoned_and_reported(
    make_app: Callable[..., app_module.App], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "FINAL_COMMIT_MIN_S", 0.0)
    app = make_app(SHUTDOWN_TIMEOUT_S="0.1")
    src = assigned(app, [0])
    app.delivery.release.clear()  # type: ignore[attr-defined]
    src.script.append(records(0, 0, 10))
    app._step()
    with caplog.at_level(logging.INFO):
        assert app._shutdown() == 0
    assert src.stored() == {}
    line = stop_line(caplog)
    assert line.undelivered_left_uncommitted == 10 and line.delivered_left_uncommitted == 0  # type: ignore[attr-defined]


# ---- failures: an exception, a fatal Kafka error --------------------------------------------------------


def test_an_exception_commits_what_was_delivered_and_releases_everything(
    make_app: Callable[..., app_module.App],
) -> None:
    app = make_app()
    src = fake(app)
    with pytest.raises(RuntimeError), app:
        src.start(app.tracker.committed)
        src.assign([0])
        src.script.append(records(0, 0, 5))
        step_until(app, delivered_all(app, {0: 5}))
        app.delivery.release.clear()  # type: ignore[attr-defined]
        src.script.append(records(0, 5, 5))  # in flight, retrying, when the bug strikes
        app._step()
        raise RuntimeError("a bug")
    assert src.stored() == {0: 5}
    assert app.delivery.stop.is_set() and app.delivery.closed  # type: ignore[attr-defined]
    assert src.closed and app.server.stopped  # type: ignore[attr-defined]
    app.close()  # once only
    assert len([c for c in src.commits if c[1]]) == 1


def test_a_fatal_kafka_error_exits_1_after_committing_what_was_delivered(
    make_app: Callable[..., app_module.App],
) -> None:
    app = make_app()
    src = fake(app)

    def fatal_once_delivered() -> list[FakeMessage]:
        if app.tracker.committable():
            src.fatal = "Broker: Static consumer fenced by other consumer with same group.instance.id"
        else:
            src.script.append(fatal_once_delivered)
        return []

    src.script.extend([lambda: src.assign([0]) or records(0, 0, 5), fatal_once_delivered])
    with app:
        assert app.run() == 1
    assert src.stored() == {0: 5} and src.closed


# ---- rebalances ----------------------------------------------------------------------------------------


def test_revoke_waits_for_in_flight_batches_then_commits_and_forgets(
    make_app: Callable[..., app_module.App],
) -> None:
    app = make_app()
    src = assigned(app, [0, 1])
    app.delivery.release.clear()  # type: ignore[attr-defined]
    src.script.append(records(0, 0, 5) + records(1, 0, 5))
    app._step()
    assert len(app.inflight) == 2
    beats = []
    app.health.beat = lambda: beats.append(1)  # type: ignore[method-assign]
    polls = 0

    def release_later() -> None:  # the API answers while the revoke waits
        nonlocal polls
        polls += 1
        if polls == 3:
            app.delivery.release.set()  # type: ignore[attr-defined]

    app.dead_letters.on_poll = release_later  # type: ignore[attr-defined]
    src.revoke([1])
    assert src.stored() == {1: 5}  # partition 1 only: 0 stays ours
    assert app.tracker.owned() == [0]
    assert beats, "the loop's heartbeat stopped while the revoke waited"


def test_lost_partitions_commit_nothing(make_app: Callable[..., app_module.App]) -> None:
    app = make_app()
    src = assigned(app, [0])
    src.script.append(records(0, 0, 5))
    step_until(app, delivered_all(app, {0: 5}))
    src.on_lost(src.tps([0]))
    assert src.commits == [] and app.tracker.owned() == []


def test_records_of_a_revoked_partition_left_in_the_consume_call_are_skipped(
    make_app: Callable[..., app_module.App],
) -> None:
    app = make_app()
    src = assigned(app, [0, 1])

    def revoke_during_consume() -> list[FakeMessage]:
        src.revoke([1])
        return records(0, 0, 3) + records(1, 0, 3)

    src.script.append(revoke_during_consume)
    step_until(app, delivered_all(app, {0: 3}))
    assert app.metrics.records_consumed._value.get() == 3


# ---- flow control and the timer commit -----------------------------------------------------------------


def test_pauses_over_budget_and_resumes_below_half(make_app: Callable[..., app_module.App]) -> None:
    app = make_app(BUFFER_MAX_EVENTS="10")
    src = assigned(app, [0, 1])
    app.delivery.release.clear()  # type: ignore[attr-defined]
    src.script.append(records(0, 0, 5) + records(1, 0, 5))
    app._step()
    assert src.paused == {0, 1}
    app.delivery.release.set()  # type: ignore[attr-defined]
    step_until(app, lambda: not src.paused)
    assert delivered_all(app, {0: 5, 1: 5})()


def test_timer_commits_asynchronously_what_was_delivered(make_app: Callable[..., app_module.App]) -> None:
    app = make_app(COMMIT_INTERVAL_MS="10")
    src = assigned(app, [0])
    src.script.append(records(0, 0, 5))
    step_until(app, lambda: src.stored() == {0: 5})
    assert all(wait is False for _, wait, _ in src.commits)


# ---- loop hygiene --------------------------------------------------------------------------------------


class ErrorMessage(FakeMessage):
    def __init__(self, partition: int, offset: int, value: bytes | None, err: KafkaError | None = None) -> None:
        super().__init__(partition, offset, value)
        self._err = err or KafkaError(KafkaError._TRANSPORT, "Broker: transport failure")

    def error(self) -> KafkaError:  # type: ignore[override]
        return self._err


def test_consume_errors_are_logged_once_per_interval(
    make_app: Callable[..., app_module.App], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    src = assigned(app, [0])
    for _ in range(50):
        src.script.append([ErrorMessage(0, 0, None)])
    with caplog.at_level(logging.WARNING):
        step_until(app, lambda: not src.script)
    assert len([r for r in caplog.records if "consume error" in r.getMessage()]) == 1


def test_a_fatal_error_handed_out_by_consume_ends_the_loop(make_app: Callable[..., app_module.App]) -> None:
    """librdkafka hands a fatal error (a fenced static member) to consume(), not to error_cb, while polled."""
    app = make_app()
    src = fake(app)
    fenced = KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced")
    src.script.extend([lambda: src.assign([0]) or records(0, 0, 5), [ErrorMessage(0, 0, None, fenced)]])
    with app:
        assert app.run() == 1
    assert src.fatal is not None and src.closed
