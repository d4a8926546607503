"""Wiring and lifecycle: the main loop that moves records from Kafka to the Track API.

One thread (this one) owns the Kafka consumer, the offset tracker, the batcher and the
dead-letter producer. Batches are delivered on a thread pool; finished deliveries come
back through a queue that this thread drains, so every offset decision is made here.

    consume → decode/transform → batcher → ready → pool (HTTP) → outcomes
                           └─ poison ──────────────────────────┴─ rejected → dead letters
    outcomes, dead-letter acks → offset tracker → commit (timer, revoke, shutdown)
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType

from confluent_kafka import KafkaError, Message, TopicPartition

from consumer import decode as dec
from consumer.batcher import Batch, Batcher, Item
from consumer.config import ConfigError, Settings, redacted
from consumer.convert import Unconvertible, dead_letter_reason, encode_event
from consumer.deadletter import Admin, DeadLetters, KafkaUnreachable, StartupError, ensure_topic
from consumer.delivery import Delivery, Outcome, TokenSource
from consumer.flow import BufferBudget, ConcurrencyLimit
from consumer.offsets import OffsetTracker, Ticket
from consumer.retry import backoff
from consumer.source import Source, commit_retriable, common_config
from consumer.telemetry import Health, Metrics, serve
from consumer.throttle import Throttle

log = logging.getLogger(__name__)

CONSUME_MAX = 1000  # records per consume() call
LOOP_WAIT_S = 0.05  # longest a loop iteration blocks; bounds how late an outcome is noticed
ABORT_FLUSH_S = 5.0  # after a failure, how long pending dead letters may take before the exit
FINAL_COMMIT_MIN_S = 2.0  # the final commit's retries get this long even when the drain used its budget
COMMIT_RETRY_S = 0.1  # between final-commit attempts, how long to serve the group (a rebalance)


class App:
    def __init__(self, settings: Settings, overrides: dict[str, str]) -> None:
        self.settings = settings
        self.overrides = overrides
        self.topic = settings.kafka_topic
        self.metrics = Metrics()
        self.health = Health(settings.health_stall_timeout_s, self.metrics)
        self.decoder = build_decoder(settings)
        self.tokens = TokenSource(
            settings.track_api_token.get_secret_value() if settings.track_api_token else None,
            settings.track_api_token_file,
        )
        self.tracker = OffsetTracker()
        self.batcher = Batcher(settings.batch_max_events, settings.batch_max_bytes, settings.batch_linger_s)
        self.budget = BufferBudget(settings.buffer_max_events)
        self.limiter = ConcurrencyLimit(settings.max_inflight_requests)
        self.inbox: list[Message] = []  # consumed, waiting for the Schema Registry
        self.ready: deque[Batch] = deque()  # closed batches waiting for a delivery slot
        self.inflight: dict[Future[Outcome], Batch] = {}
        self.headers_of: dict[Ticket, list] = {}  # batched records that carry headers, for their dead letter
        self.outcomes: queue.SimpleQueue[Future[Outcome]] = queue.SimpleQueue()
        self.in_batches = 0  # events in `ready` and `inflight`
        self.registry_retry_at = 0.0
        self.registry_attempt = 0
        self.stopping = False
        self.drain_deadline = 0.0  # while draining, how long a revoke may wait for in-flight batches
        self.last_commit = 0.0
        self.assigned_at: float | None = None  # set by an assignment until its first records arrive
        self._finished = False  # the final commit ran
        self.left_uncommitted = 0  # offsets done but not committed when released while draining
        self._closed = False
        try:
            self.server = serve(settings.metrics_port, self.metrics, self.health)
        except OSError as exc:
            raise ConfigError(
                f"METRICS_PORT is invalid: cannot listen on {settings.metrics_port}: {exc.strerror}"
            ) from None
        self.delivery = Delivery(
            str(settings.track_api_url),
            self.tokens,
            settings.http_timeout_s,
            settings.retry_backoff_max_s,
            settings.max_inflight_requests,
            self.metrics,
            self.health,
            self.limiter,
            settings.track_api_ca_bundle,
            settings.track_api_auth,
            breaker_refused_events=settings.breaker_refused_events,
            retry_after_max_s=settings.retry_after_max_s,
        )
        self.pool = ThreadPoolExecutor(settings.max_inflight_requests, thread_name_prefix="delivery")
        self.source = Source(settings, overrides, self._on_assign, self._on_revoke, self._on_lost, self._on_stats)
        shared = common_config(settings, overrides)
        self.dead_letters = DeadLetters(
            shared, settings.kafka_dlq_topic, self._dead_lettered, self.metrics, settings.retry_backoff_max_s
        )
        self.held: set[int] = set()  # partitions paused because a dead letter of theirs is refused

    # ---- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> App:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def run(self) -> int:
        """Consume until asked to stop, then drain and commit; returns the exit code."""
        log.info("configuration", extra={"settings": redacted(self.settings, self.overrides)})
        log.info(
            "consumer starting",
            extra={
                "topic": self.topic,
                "group": self.settings.kafka_group_id,
                "metrics_port": self.server.server_address[1],
            },
        )
        if not self._wait_for_kafka():
            return self._shutdown()
        self.source.start(self.tracker.committed)
        while not self.stopping and self.source.fatal is None:
            self._step()
        if self.source.fatal is not None:
            # The consumer cannot go on; `close()` commits what was delivered on the way out.
            log.error("fatal Kafka error, exiting without draining: %s", self.source.fatal)
            return 1
        return self._shutdown()

    def _wait_for_kafka(self) -> bool:
        """Check the dead-letter topic, retrying while Kafka is unreachable; False if stopped meanwhile.

        Retrying here (not exiting) keeps a pod with a broker outage or refused credentials
        from crash-looping: it stays alive, not ready, and logs the cause every 30 s.
        """
        admin = Admin(common_config(self.settings, self.overrides))
        attempt, say = 0, Throttle(30.0)
        while not self.stopping:
            try:
                source_max_bytes = ensure_topic(admin, self.topic, self.settings.kafka_dlq_topic)
                self.dead_letters.fit(source_max_bytes)
                return True
            except KafkaUnreachable as exc:
                if say.allow():
                    log.error("%s; retrying", exc)
            self.health.beat()
            deadline = time.monotonic() + backoff(attempt, 1.0, 10.0)
            attempt += 1
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.1)
        return False

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            # A second signal: leave now. Nothing undelivered was committed, so nothing is lost.
            log.warning("second signal, exiting at once")
            os._exit(128 + signum)
        log.info("signal %s: draining", signal.Signals(signum).name)
        self.stopping = True

    def _shutdown(self) -> int:
        """Drain within SHUTDOWN_TIMEOUT_S: deliver what is buffered, then commit and close."""
        s = self.settings
        self.health.draining = True
        self.delivery.draining.set()  # a batch waiting out a Retry-After gives up: it is not worth a stop's time
        self.drain_deadline = time.monotonic() + s.shutdown_timeout_s
        self.source.set_paused(self.tracker.owned(), True)
        self._report_paused()
        self._convert([], time.monotonic())
        if (batch := self.batcher.flush()) is not None:
            self._close_batch(batch)
        while (self.ready or self.inflight) and time.monotonic() < self.drain_deadline:
            self._dispatch()
            self._collect(wait_s=LOOP_WAIT_S)
            self.dead_letters.poll()
        abandoned = self.in_batches + len(self.inbox)
        self._learn_positions()  # outside consume(): a trailing transaction marker is committed too
        self._final_commit(
            flush_s=max(self.drain_deadline - time.monotonic(), 1.0),
            deadline=max(self.drain_deadline, time.monotonic() + FINAL_COMMIT_MIN_S),
        )
        self.close()
        log.info(
            "consumer stopped",
            extra={"undelivered_left_uncommitted": abandoned, "delivered_left_uncommitted": self.left_uncommitted},
        )
        return 0

    def _final_commit(self, flush_s: float, deadline: float) -> None:
        """Give up on unfinished deliveries, then checkpoint everything, retrying until `deadline`."""
        self._finished = True
        self.delivery.stop.set()  # in-flight retries give up; their records stay uncommitted
        self._checkpoint(flush_s, retry_until=deadline)

    def _checkpoint(self, flush_s: float, partitions: set[int] | None = None, retry_until: float | None = None) -> None:
        """Make what is done durable, in one order for a revoke and the exit: apply finished
        deliveries, store the dead letters (up to `flush_s`), then commit synchronously.
        (The timer's turn in `_step` keeps the same order, without waiting.)

        With `retry_until` (the exit; never inside a rebalance callback, where polling is not
        allowed), a commit the group refuses while it rebalances (`generation id is not valid`,
        `rebalance in progress`) is retried, serving the rebalance in between: the new
        generation lets it through, or a revoke commits its partitions itself.
        """
        self._collect(wait_s=0)
        self.dead_letters.flush(flush_s)
        self._collect(wait_s=0)  # batches that finished meanwhile; their rejected events stay uncommitted
        while (err := self._commit(wait=True, partitions=partitions)) is not None and retry_until is not None:
            remaining = retry_until - time.monotonic()
            if remaining <= 0 or self.source.fatal is not None or not commit_retriable(err):
                break
            self.source.serve(min(COMMIT_RETRY_S, remaining))
            self.health.beat()

    def close(self) -> None:
        """Release everything once. After a failure (nothing drained), first commit what was delivered.

        `with App(...)` calls this however the loop ended, so an exception or a fatal Kafka
        error still commits finished work, leaves the group, and stops the delivery threads'
        retries: the process can exit at once and Kubernetes restart it.
        """
        if self._closed:
            return
        self._closed = True
        self.health.draining = True
        self.drain_deadline = time.monotonic()  # the revoke inside source.close() must not wait
        if not self._finished:
            try:
                budget = min(ABORT_FLUSH_S, self.settings.shutdown_timeout_s)
                self._final_commit(flush_s=budget, deadline=time.monotonic() + budget)
            except Exception as exc:  # best effort: the cause is logged already; what is uncommitted is re-read
                log.warning("could not commit on the way out: %s: %s", type(exc).__name__, exc)
        for what, release in (
            ("Kafka consumer", self.source.close),
            ("delivery threads", lambda: self.pool.shutdown(wait=False, cancel_futures=True)),
            ("HTTP client", self.delivery.close),
            ("metrics server", self.server.shutdown),
        ):
            try:
                release()
            except Exception as exc:
                log.warning("closing the %s failed: %s: %s", what, type(exc).__name__, exc)

    # ---- one turn of the loop --------------------------------------------------------------------

    def _step(self) -> None:
        now = time.monotonic()
        room = self.budget.room(self._buffered())
        wait = LOOP_WAIT_S
        if (deadline := self.batcher.deadline()) is not None:
            wait = min(wait, max(deadline - now, 0.0))
        messages = self.source.consume(min(room, CONSUME_MAX), wait)
        now = time.monotonic()
        if messages or self.inbox:
            self._convert(messages, now)
        if (batch := self.batcher.due(now)) is not None:
            self._close_batch(batch)
        self._dispatch()
        self._collect(wait_s=0)
        commit_due = now - self.last_commit >= self.settings.commit_interval_ms / 1000
        if self.dead_letters.pending or commit_due:  # polling gives up the GIL: only when useful
            self.dead_letters.poll()
            self._hold_for_dead_letters()
        self._flow_control()
        if commit_due:
            self._learn_positions()
            self._commit(wait=False)
        self.health.beat()

    def _convert(self, messages: list[Message], now: float) -> None:
        """Decode, map and batch consumed records in order (the hot loop: one pass per call).

        While the Schema Registry is unreachable, the rest wait in the inbox, untracked: their
        offsets are above every tracked one, so no commit can pass them.
        """
        if self.assigned_at is not None and messages:
            # How long offsets and the first fetch took: a slow start after a rebalance shows here.
            log.info("first records after assignment", extra={"after_ms": round((now - self.assigned_at) * 1000)})
            self.assigned_at = None
        if self.inbox:
            messages, self.inbox = self.inbox + messages, []
        if now < self.registry_retry_at:
            self.inbox = messages
            return
        owned = set(self.tracker.owned())  # rebalances happen only inside consume(): fixed here
        track, decoder, topic = self.tracker.track, self.decoder, self.topic
        idempotency = self.settings.idempotency_key
        # An event must fit a request body on its own: the brackets take 2 bytes.
        max_event = min(self.settings.max_event_bytes, self.settings.batch_max_bytes - 2)
        entries: list[tuple[bytes, Item]] = []  # (event, its record)
        append, consumed = entries.append, 0
        registry_failed = False
        for i, m in enumerate(messages):
            if (err := m.error()) is not None:
                self.source.consume_error(err)  # a fatal one ends the loop after this turn
                continue
            partition = m.partition()
            if partition not in owned:
                continue  # a leftover from a partition revoked in the consume() call
            consumed += 1
            value = m.value()
            if value is None:
                self.metrics.skipped.labels("tombstone").inc()
                self.tracker.ack(track(partition, m.offset()))
                continue
            key = f"{topic}/{partition}/{m.offset()}" if idempotency else None
            try:
                encoded = encode_event(decoder, value, max_event, key)
            except dec.RegistryUnavailable as exc:
                self.inbox = messages[i:]
                consumed -= 1
                delay = backoff(self.registry_attempt, 0.5, self.settings.retry_backoff_max_s)
                self.registry_attempt += 1
                self.registry_retry_at = now + delay
                self.metrics.retries.labels("schema_registry").inc()
                log.warning("Schema Registry unavailable, retrying in %.1fs: %s", delay, exc)
                registry_failed = True
                break
            except Unconvertible as exc:
                self._dead_letter(m, track(partition, m.offset()), dead_letter_reason(exc), str(exc))
            else:
                ticket = track(partition, m.offset())
                if (headers := m.headers()) is not None:  # rare: kept aside, not in the hot batch items
                    self.headers_of[ticket] = headers
                append((encoded, (ticket, m.timestamp()[1], m.key(), value)))
        if registry_failed != self.health.registry_failing:  # visible until the waiting records decode
            self.health.registry_failing = registry_failed
            self.metrics.schema_registry_failing.set(int(registry_failed))
        if entries:
            self.registry_attempt = 0
            for batch in self.batcher.add(entries, now):
                self._close_batch(batch)
        self.metrics.records_consumed.inc(consumed)

    def _close_batch(self, batch: Batch) -> None:
        self.ready.append(batch)
        self.in_batches += len(batch.items)

    def _dispatch(self) -> None:
        limit = self.limiter.current
        while self.ready and len(self.inflight) < limit:
            batch = self.ready.popleft()
            future = self.pool.submit(self.delivery.send, batch)
            self.inflight[future] = batch
            future.add_done_callback(self.outcomes.put)
        self.metrics.inflight.set(len(self.inflight))
        self.metrics.inflight_limit.set(limit)

    def _collect(self, wait_s: float) -> None:
        """Apply finished deliveries: ack delivered events, dead-letter rejected ones."""
        try:
            future = self.outcomes.get(timeout=wait_s) if wait_s > 0 else self.outcomes.get_nowait()
        except queue.Empty:
            return
        while True:
            batch = self.inflight.pop(future)
            self.in_batches -= len(batch.items)
            outcome = future.result()
            self._apply(outcome)
            try:
                future = self.outcomes.get_nowait()
            except queue.Empty:
                break
        self.metrics.inflight.set(len(self.inflight))

    def _apply(self, outcome: Outcome) -> None:
        if delivered := outcome.delivered:
            now_s = time.time()
            self.tracker.ack_all([ticket for ticket, _, _, _ in delivered])
            self.metrics.e2e_latency.observe_many([now_s - timestamp_ms / 1000 for _, timestamp_ms, _, _ in delivered])
            self.metrics.events_delivered.inc(len(delivered))
            self.metrics.last_progress.set(now_s)
            if self.headers_of:
                for ticket, _, _, _ in delivered:
                    self.headers_of.pop(ticket, None)
        for (ticket, _, key, value), status, message in outcome.rejected:
            self.dead_letters.send(
                ticket,
                self.topic,
                key,
                value,
                "rejected",
                message,
                {"dlq.http.status": str(status)},
                original=self.headers_of.pop(ticket, None),
            )

    def _dead_letter(self, m: Message, ticket: Ticket, reason: str, message: str) -> None:
        message = message[:1000]
        partition, _, offset = ticket
        log.warning(
            "dead-lettering record",
            extra={"partition": partition, "offset": offset, "reason": reason, "error": message},
        )
        self.dead_letters.send(ticket, self.topic, m.key(), m.value(), reason, message, original=m.headers())

    def _dead_lettered(self, ticket: Ticket, reason: str) -> None:
        self.tracker.ack(ticket)
        self.metrics.dead_lettered.labels(reason).inc()

    def _hold_for_dead_letters(self) -> None:
        """Pause a partition while a dead letter of its is refused; resume it once the letter is stored.

        Records after a stuck one could be delivered but never committed, and a restart would
        send them all again: pausing bounds that to what was already fetched.
        """
        owned = set(self.tracker.owned())
        if orphans := self.dead_letters.stuck_partitions() - owned:
            # A rejected event of a batch that finished after its partition was revoked: its ack
            # would be ignored, and the next owner dead-letters the record again.
            self.dead_letters.forget(orphans)
        stuck = self.dead_letters.stuck_partitions()
        if stuck != self.held:
            self.source.set_paused(sorted(stuck - self.held), True)
            if not self.budget.paused:  # else flow control resumes them with the rest
                self.source.set_paused(sorted(self.held - stuck), False)
            log.info(
                "dead letters: partitions held",
                extra={"held": sorted(stuck), "added": sorted(stuck - self.held), "freed": sorted(self.held - stuck)},
            )
            self.held = stuck
            self._report_paused()
        self.health.dead_letters_stuck = self.dead_letters.stuck > 0
        self.metrics.dead_letters_stuck.set(self.dead_letters.stuck)

    def _buffered(self) -> int:
        # Pending dead letters count too: the producer's queue is memory like any other buffer.
        return len(self.inbox) + len(self.batcher) + self.in_batches + self.dead_letters.pending

    def _flow_control(self) -> None:
        buffered = self._buffered()
        self.metrics.buffered.set(buffered)
        decision = self.budget.update(buffered)
        if decision is not None:
            owned = self.tracker.owned()
            # A partition held for a refused dead letter stays paused when flow control resumes.
            self.source.set_paused(owned if decision else [p for p in owned if p not in self.held], decision)
            self._report_paused()
            log.info(
                "flow control: %s %d partitions at %d buffered events",
                "paused" if decision else "resumed",
                len(owned),
                buffered,
            )

    def _report_paused(self) -> None:
        """group_enriched_paused_partitions: the owned partitions paused on the consumer now."""
        self.metrics.paused.set(len(self.source.paused & set(self.tracker.owned())))

    def _learn_positions(self) -> None:
        """Tell the tracker where the consumer stands, so a commit can pass offsets that hold no
        record (transaction markers, aborted transactions). Only here, between consume() calls:
        every record consume() handed out is tracked by now, except those waiting in the inbox
        (their partitions are skipped). Inside a rebalance callback consume() may hold records
        not yet returned, so the revoke and shutdown commits use what was learned here."""
        waiting = {m.partition() for m in self.inbox}
        for partition, offset in self.source.positions(self.tracker.owned()).items():
            if partition not in waiting:
                self.tracker.learn_position(partition, offset)

    def _commit(self, wait: bool, partitions: set[int] | None = None) -> KafkaError | None:
        """Commit what is done; synchronous commits return the error, if any."""
        self.last_commit = time.monotonic()
        return self.source.commit(self.tracker.committable(partitions), wait)

    # ---- rebalances (called by the consumer inside consume(), on this thread) ---------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        parts = [tp.partition for tp in partitions]
        for p in parts:
            self.tracker.assign(p)
        # librdkafka keeps a pause across revoke and re-assign: set the state both ways, so a
        # partition paused when it left does not come back paused after flow control resumed.
        self.source.set_paused(parts, self.budget.paused or self.health.draining)
        self._report_paused()
        self.metrics.rebalances.labels("assigned").inc()
        self.health.in_group = True
        self.assigned_at = time.monotonic()
        log.info("partitions assigned", extra={"partitions": [tp.partition for tp in partitions]})

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Finish what was sent for these partitions (within the drain budget), commit, let go."""
        parts = {tp.partition for tp in partitions}
        if not parts:
            return
        self.metrics.rebalances.labels("revoked").inc()
        self._drop(parts)
        # While draining for shutdown the shared deadline applies; otherwise a fresh drain budget.
        deadline = self.drain_deadline if self.health.draining else time.monotonic() + self.settings.shutdown_timeout_s
        while time.monotonic() < deadline and any(b.partitions() & parts for b in self.inflight.values()):
            self._collect(wait_s=LOOP_WAIT_S)
            self.dead_letters.poll()
            self.health.beat()  # waiting here (up to SHUTDOWN_TIMEOUT_S) is progress, not a stall
        self._checkpoint(max(deadline - time.monotonic(), 0.5), parts)
        self._release(parts)
        log.info("partitions revoked", extra={"partitions": sorted(parts)})

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        """Another consumer may own these already: commit nothing for them."""
        parts = {tp.partition for tp in partitions}
        self.metrics.rebalances.labels("lost").inc()
        self._drop(parts)
        self._release(parts)
        log.warning("partitions lost", extra={"partitions": sorted(parts)})

    def _drop(self, parts: set[int]) -> None:
        """Forget buffered, unsent records of these partitions; their next owner reads them again."""
        self.inbox = [m for m in self.inbox if m.partition() not in parts]
        self.batcher.drop(parts)
        kept: deque[Batch] = deque()
        for batch in self.ready:
            rest = batch.without(parts)
            self.in_batches -= len(batch.items) - len(rest.items)
            if rest.items:
                kept.append(rest)
        self.ready = kept

    def _release(self, parts: set[int]) -> None:
        if self.health.draining:  # for the stop line: what the next owner will send again
            self.left_uncommitted += sum(self.tracker.uncommitted(p) for p in parts)
        self.dead_letters.forget(parts)  # the next owner dead-letters those records again
        if held := parts & self.held:
            # librdkafka keeps a pause across revoke and re-assign: a partition must come back unheld.
            self.source.set_paused(sorted(held), False)
            self.held -= held
        if self.headers_of:
            self.headers_of = {t: h for t, h in self.headers_of.items() if t[0] not in parts}
        for p in parts:
            self.tracker.revoke(p)
            self.metrics.forget_partition(self.topic, p)
        self._report_paused()

    def _on_stats(self, stats_json: str) -> None:
        # Called inside consume()/poll() on this thread, so the tracker's owned set is current.
        read_committed = self.overrides.get("isolation.level", "read_committed") != "read_uncommitted"
        self.metrics.update_lag(stats_json, self.topic, set(self.tracker.owned()), read_committed)


def build_decoder(settings: Settings) -> dec.Decoder:
    reader = dec.load_schema()
    if settings.schema_registry_url is not None:
        from consumer.registry import RegistryClient  # builds the client now: a bad property stops start-up

        return dec.ConfluentDecoder(reader, dec.registry_fetcher(client=RegistryClient(settings).current))
    writer = None
    if settings.avro_writer_schema_file is not None:
        try:
            writer = dec.load_schema(settings.avro_writer_schema_file)
            return dec.RawDecoder(reader, writer)
        except Exception as exc:
            raise ConfigError(f"AVRO_WRITER_SCHEMA_FILE is invalid: {type(exc).__name__}: {exc}") from None
    return dec.RawDecoder(reader)


def run(settings: Settings, overrides: dict[str, str]) -> int:
    """Run the consumer; returns the exit code. An unexpected exception is logged here, once, with its
    traceback, before `App.close()` commits what was delivered: exit 1, so the pod is restarted."""
    with App(settings, overrides) as app:
        signal.signal(signal.SIGTERM, app.request_stop)
        signal.signal(signal.SIGINT, app.request_stop)
        try:
            return app.run()
        except StartupError as exc:
            log.error("start-up failed: %s", exc)
            return 1
        except Exception:
            log.exception("consumer crashed; committing what was delivered, then exiting")
            return 1
