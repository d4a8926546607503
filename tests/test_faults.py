"""Fault injection on real parts: a real Kafka broker, the real CLI as a child process, loopback HTTP stand-ins.

Every test produces records whose `user_id` is unique, counts what the Track API stand-in
accepted by `user_id`, and asserts that nothing was lost (every produced `user_id` arrived).
Duplicates are counted and printed (`pytest -s` shows the `FAULT ...` lines) and held to the
bound each scenario allows. Timeouts are generous: the machine is small and shared.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer

from harness import kafkautil
from harness.kafka import KafkaBroker
from harness.process import ConsumerProcess, log_entries
from harness.records import encode_confluent, encode_raw, sample_record, writer_schemas
from harness.registry import SchemaRegistry
from harness.trackapi import TrackApi
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
DLQ_REASONS = ("decode_error", "invalid_record", "rejected")


# ---- helpers ---------------------------------------------------------------------------------------


def committed(bootstrap: str, group: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    return kafkautil.committed_offsets(bootstrap, group, topic, partitions)


def committed_sum(offsets: dict[int, int]) -> int:
    return sum(max(o, 0) for o in offsets.values())


def delivered_ids(api: TrackApi) -> Counter[str]:
    return Counter(e["user_id"] for e in list(api.events))


def all_delivered(api: TrackApi, expected: set[str]) -> Callable[[], bool]:
    return lambda: expected <= delivered_ids(api).keys()


@dataclass
class Tally:
    lost: list[str]
    duplicates: dict[str, int]  # user_id → extra deliveries
    unexpected: list[str]

    @property
    def duplicate_count(self) -> int:
        return sum(self.duplicates.values())


def tally(api: TrackApi, expected: Iterable[str]) -> Tally:
    counts = delivered_ids(api)
    expected = set(expected)
    return Tally(
        lost=sorted(expected - counts.keys()),
        duplicates={u: c - 1 for u, c in sorted(counts.items()) if c > 1},
        unexpected=sorted(counts.keys() - expected),
    )


def report(name: str, **figures: object) -> None:
    print(f"\nFAULT {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def dead_lettered(metrics: dict[str, float]) -> dict[str, float]:
    return {r: metrics.get(f'group_enriched_events_dead_lettered_total{{reason="{r}"}}', 0.0) for r in DLQ_REASONS}


def accepted_below_commit(
    offsets: dict[int, int], user_at: dict[tuple[int, int], str], accepted: set[str]
) -> list[tuple[int, int]]:
    """Committed positions whose record the API never accepted (must be empty)."""
    return [(p, o) for p, c in offsets.items() for o in range(max(c, 0)) if user_at[(p, o)] not in accepted]


def settled_count(api: TrackApi, quiet_s: float) -> int:
    """The stand-in's accepted-event count once it has not changed for `quiet_s`."""
    count, since = api.count(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.05)
        if (now := api.count()) != count:
            count, since = now, time.monotonic()
    return count


def owns_partitions(proc: ConsumerProcess) -> bool:
    """True once the process logged an assignment that gave it at least one partition."""
    return any(e.get("msg") == "partitions assigned" and e.get("partitions") for e in proc.log_entries())


def seconds_between(logs: str, first: str, then: str) -> float | None:
    """Seconds between the first log line whose msg starts with `first` and the next starting with `then`."""
    stamps: dict[str, datetime] = {}
    for entry in log_entries(logs):
        msg = str(entry.get("msg", ""))
        for key in (first, then):
            if msg.startswith(key) and key not in stamps and (key == first or first in stamps):
                stamps[key] = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
    if first in stamps and then in stamps:
        return (stamps[then] - stamps[first]).total_seconds()
    return None


def produce_records(
    bootstrap: str, topic: str, records: list[dict[str, Any]], partitions: int | None = PARTITIONS
) -> dict[tuple[int, int], str]:
    """Produce raw-Avro records spread over the partitions; returns (partition, offset) → user_id."""
    rows = [(r["group_id"].encode(), encode_raw(r)) for r in records]
    positions = kafkautil.produce(bootstrap, topic, rows, partitions)
    return {pos: r["user_id"] for pos, r in zip(positions, records, strict=True)}


# ---- 1. the Track API goes away for 10 s -----------------------------------------------------------


def test_api_down_10s_then_back(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Connection refused for 10 s while records keep arriving → 0 lost, offsets reach the end."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    first = [sample_record(i, "apidown") for i in range(3000)]
    during = [sample_record(i, "apidown") for i in range(3000, 4000)]
    user_at = produce_records(kafka_bootstrap, topic, first)
    api = TrackApi(delay_s=0.1).start()
    # RETRY_BACKOFF_MAX_S bounds how long after the API's return a backed-off worker tries again.
    env = consumer_env(
        kafka_bootstrap, topic, api, BATCH_MAX_EVENTS="100", MAX_INFLIGHT_REQUESTS="2", RETRY_BACKOFF_MAX_S="3"
    )
    group = env["KAFKA_GROUP_ID"]
    try:
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            assert api.wait_for(500, 60), proc.logs()[-2000:]
            at_kill = api.count()
            api.kill()
            down_at = time.monotonic()
            # A request cut by the kill may have been recorded without its answer reaching the consumer,
            # which then sends it again: those are the only duplicates this scenario allows.
            before = settled_count(api, quiet_s=api.delay_s + 0.5)
            unanswered_bound = before - at_kill
            user_at |= produce_records(kafka_bootstrap, topic, during)
            time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
            # Whatever was committed during the outage, the API had received.
            offsets = committed(kafka_bootstrap, group, topic)
            accepted = set(delivered_ids(api))
            assert accepted_below_commit(offsets, user_at, accepted) == []
            assert api.count() == before, "the stand-in was down: nothing can have been accepted"
            m = proc.metrics()
            assert m['group_enriched_http_requests_total{code="error"}'] > 0
            assert m['group_enriched_retries_total{reason="network"}'] > 0

            api.start()  # the same port
            up_at = time.monotonic()
            expected = set(user_at.values())
            recovered = wait_until(all_delivered(api, expected), 120, "every event after the API's return", proc.logs)
            wait_until(
                lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 60, "offsets at the end", proc.logs
            )
            assert proc.stop() == 0, proc.logs()[-2000:]
            errors = m['group_enriched_http_requests_total{code="error"}']
    finally:
        api.kill()
    t = tally(api, expected)
    report(
        "api_down_10s",
        produced=len(expected),
        delivered_before_outage=before,
        lost=len(t.lost),
        duplicates=t.duplicate_count,
        failed_requests_during_outage=int(errors),
        seconds_to_all_delivered_after_return=round(recovered, 2),
        duplicate_bound=unanswered_bound,
        outage_s=round(up_at - down_at, 1),
    )
    assert t.lost == [] and t.unexpected == []
    assert t.duplicate_count <= unanswered_bound


# ---- 2. 429 with Retry-After: 2 ----------------------------------------------------------------------


def test_429_retry_after_holds_every_request(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The first request gets 429 Retry-After: 2 → no request of any batch reaches the API for 2 s."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    first = [sample_record(0, "throttle")]
    rest = [sample_record(i, "throttle") for i in range(1, 2001)]
    throttled: list[float] = []

    def respond(events: list[dict[str, Any]], headers: dict[str, str]) -> tuple[int, dict[str, str]] | None:
        if not throttled:
            throttled.append(time.time())
            return 429, {"Retry-After": "2"}
        return None

    user_at = produce_records(kafka_bootstrap, topic, first)
    api = TrackApi(respond=respond).start()
    env = consumer_env(kafka_bootstrap, topic, api, BATCH_MAX_EVENTS="100", MAX_INFLIGHT_REQUESTS="8")
    try:
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            wait_until(lambda: any(r.status == 429 for r in api.requests), 60, "the 429", proc.logs)
            # While the gate is closed, more records arrive: their batches go to other workers and must wait too.
            produce_started = time.time()
            user_at |= produce_records(kafka_bootstrap, topic, rest)
            produced_s = time.time() - produce_started
            expected = set(user_at.values())
            wait_until(all_delivered(api, expected), 120, "every event", proc.logs)
            m = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
    finally:
        api.kill()
    requests = list(api.requests)
    throttle = next(r for r in requests if r.status == 429)
    gaps = sorted(r.at - throttle.at for r in requests if r is not throttle)
    t = tally(api, expected)
    report(
        "429_retry_after_2",
        produced=len(expected),
        lost=len(t.lost),
        duplicates=t.duplicate_count,
        requests=len(requests),
        first_request_after_429_s=round(gaps[0], 3),
        rest_produced_by_s_after_429=round(produce_started + produced_s - throttle.at, 2),
        throttled_retries=m['group_enriched_retries_total{reason="throttled"}'],
    )
    assert [r.status for r in requests].count(429) == 1
    assert gaps[0] >= 2 - 0.05, f"a request reached the API {gaps[0]:.3f}s after the 429 (Retry-After: 2)"
    assert t.lost == [] and t.unexpected == [] and t.duplicate_count == 0
    assert m['group_enriched_retries_total{reason="throttled"}'] == 1


# ---- 3. kill -9 mid-stream, then a new process -------------------------------------------------------


def test_kill_9_mid_stream_then_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    """SIGKILL while delivering; a new process in the same group finishes → 0 lost, duplicates bounded."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    records = [sample_record(i, "kill9") for i in range(6000)]
    user_at = produce_records(kafka_bootstrap, topic, records)
    expected = set(user_at.values())
    api = TrackApi(delay_s=0.2).start()  # ~1,000 events/s with 2 x 100-event requests in flight
    env = consumer_env(
        kafka_bootstrap,
        topic,
        api,
        BATCH_MAX_EVENTS="100",
        MAX_INFLIGHT_REQUESTS="2",
        COMMIT_INTERVAL_MS="1000",  # the default: up to a second of deliveries is uncommitted at any time
        # The killed member never leaves the group: the new one waits out its session (broker minimum 6 s).
        KAFKA_CFG_SESSION_TIMEOUT_MS="6000",
        KAFKA_CFG_HEARTBEAT_INTERVAL_MS="1000",
    )
    group = env["KAFKA_GROUP_ID"]
    try:
        first = ConsumerProcess(env, tmp_path / "first.log").start()
        try:
            first.wait_ready()
            assert api.wait_for(2000, 60), first.logs()[-2000:]
            time.sleep(0.1)  # land in the middle of the next requests, not between two
            at_kill = committed(kafka_bootstrap, group, topic)
        finally:
            first.kill()  # SIGKILL
        # Requests the stand-in was still answering when the process died are counted too: wait until quiet.
        delivered_before = settled_count(api, quiet_s=api.delay_s + 0.8)
        bound = delivered_before - committed_sum(at_kill)
        assert 0 < delivered_before < len(records), "the kill did not land mid-stream"
        with ConsumerProcess(env, tmp_path / "second.log") as second:
            second.wait_ready()
            resumed = wait_until(all_delivered(api, expected), 120, "every event after the restart", second.logs)
            wait_until(
                lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS),
                60,
                "offsets at the end",
                second.logs,
            )
            assert second.stop() == 0, second.logs()[-2000:]
    finally:
        api.kill()
    t = tally(api, expected)
    report(
        "kill_9",
        produced=len(expected),
        delivered_before_kill=delivered_before,
        committed_at_kill=committed_sum(at_kill),
        lost=len(t.lost),
        duplicates=t.duplicate_count,
        duplicate_bound=bound,
        seconds_to_finish_after_restart=round(resumed, 2),
    )
    assert t.lost == [] and t.unexpected == []
    assert t.duplicate_count <= bound


# ---- 4. rebalances: three processes join one at a time, one leaves ------------------------------------


class Streamer(threading.Thread):
    """Produces records at a steady rate in the background, as upstream would (one producer, even spread)."""

    def __init__(self, bootstrap: str, topic: str, records: list[dict[str, Any]], partitions: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.partitions, self.rate = bootstrap, topic, partitions, rate
        self.rows = [(r["group_id"].encode(), encode_raw(r)) for r in records]
        self.errors: list[str] = []

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 20, "acks": "all"})

        def report(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                self.errors.append(err.str())

        started = time.monotonic()
        try:
            for i, (key, value) in enumerate(self.rows):
                if i % 100 == 0:  # pace in steps of 100 records
                    time.sleep(max(0.0, started + i / self.rate - time.monotonic()))
                producer.produce(self.topic, value, key, partition=i % self.partitions, on_delivery=report)
                producer.poll(0)
            if producer.flush(60) != 0:
                self.errors.append("records not acknowledged within 60 s")
        except Exception as exc:
            self.errors.append(repr(exc))


def flowing(api: TrackApi, events: int, procs: list[ConsumerProcess]) -> None:
    """Let traffic flow between two steps of a scenario: `events` more accepted (not a fixed sleep)."""
    target = api.count() + events
    wait_until(lambda: api.count() >= target, 60, f"{events} more events", lambda: procs[0].logs())


def test_rebalances_three_join_one_leaves(kafka_bootstrap: str, tmp_path: Path) -> None:
    """6 partitions; 3 processes join one at a time while records stream in; one leaves (SIGTERM, exit 0)."""
    partitions = 6
    topic = new_topic(kafka_bootstrap, partitions)
    records = [sample_record(i, "rebal") for i in range(9000)]
    expected = {r["user_id"] for r in records}
    api = TrackApi(delay_s=0.05).start()
    env = consumer_env(kafka_bootstrap, topic, api, BATCH_MAX_EVENTS="100", MAX_INFLIGHT_REQUESTS="4")
    group = env["KAFKA_GROUP_ID"]
    procs = [ConsumerProcess(env, tmp_path / f"consumer-{n}.log") for n in (1, 2, 3)]
    streamer = Streamer(kafka_bootstrap, topic, records, partitions, rate=400)  # ~22 s of traffic
    timeline: list[str] = []
    started = time.monotonic()

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:.1f}s {what} (delivered {api.count()})")

    try:
        procs[0].start().wait_ready()
        mark("consumer 1 ready")
        streamer.start()
        for n in (1, 2):
            flowing(api, 500, procs)
            procs[n].start().wait_ready()
            wait_until(lambda: owns_partitions(procs[n]), 60, f"consumer {n + 1} owns partitions", procs[n].logs)  # noqa: B023
            mark(f"consumer {n + 1} owns partitions")
        flowing(api, 500, procs)
        leaving = procs[1].metrics()
        stop_started = time.monotonic()
        rc = procs[1].stop(signal.SIGTERM, 60)
        mark(f"consumer 2 left with exit {rc} after {time.monotonic() - stop_started:.1f}s")
        assert rc == 0, procs[1].logs()[-2000:]
        streamer.join(120)
        assert not streamer.is_alive() and streamer.errors == [], streamer.errors
        mark("all records produced")
        logs = lambda: "\n".join(p.logs()[-1500:] for p in procs)  # noqa: E731
        wait_until(all_delivered(api, expected), 120, "every event", logs)
        mark("all delivered")
        wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, partitions), 60, "offsets at the end", logs)
        final = {n: procs[n].metrics() for n in (0, 2)}
        for n in (0, 2):
            assert procs[n].stop(signal.SIGTERM, 60) == 0, procs[n].logs()[-2000:]
    finally:
        for p in procs:
            p.kill()
        api.kill()
    per_process = {1: final[0], 2: leaving, 3: final[2]}
    consumed = {n: int(m["group_enriched_records_consumed_total"]) for n, m in per_process.items()}
    rebalances = {
        n: {e: int(m[f'group_enriched_rebalances_total{{event="{e}"}}']) for e in ("assigned", "revoked", "lost")}
        for n, m in per_process.items()
    }
    t = tally(api, expected)
    report(
        "rebalances",
        produced=len(expected),
        lost=len(t.lost),
        duplicates=t.duplicate_count,
        duplicated_ids=list(t.duplicates)[:10],
        consumed_per_process=consumed,
        rebalances_per_process=rebalances,
        timeline=timeline,
    )
    assert t.lost == [] and t.unexpected == []
    assert consumed[2] > 0 and consumed[3] > 0, "every process took part"


# ---- 5. the broker stops for 10 s ---------------------------------------------------------------------


def test_broker_down_10s_same_process_recovers(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    """Broker stopped for 10 s and restarted → the same process catches up, commits to the end, exits 0."""
    bootstrap = kafka_broker.bootstrap
    topic = new_topic(bootstrap, PARTITIONS)
    first = [sample_record(i, "broker") for i in range(5000)]
    after = [sample_record(i, "broker") for i in range(5000, 8000)]
    user_at = produce_records(bootstrap, topic, first)
    api = TrackApi(delay_s=0.2).start()  # slow enough that deliveries are still going when the broker stops
    env = consumer_env(bootstrap, topic, api, BATCH_MAX_EVENTS="100", MAX_INFLIGHT_REQUESTS="2")
    group = env["KAFKA_GROUP_ID"]
    try:
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            pid = proc.proc.pid  # type: ignore[union-attr]
            assert api.wait_for(1500, 60), proc.logs()[-2000:]
            kafka_broker.stop()
            down_at = time.monotonic()
            at_stop = api.count()
            time.sleep(10)
            during = api.count() - at_stop
            assert proc.proc.poll() is None, f"the consumer exited during the outage:\n{proc.logs()[-3000:]}"  # type: ignore[union-attr]
            kafka_broker.start(timeout=120)
            up_at = time.monotonic()
            user_at |= produce_records(bootstrap, topic, after)
            expected = set(user_at.values())
            caught_up = wait_until(all_delivered(api, expected), 120, "every event after the restart", proc.logs)
            committed_s = wait_until(
                lambda: fully_committed(bootstrap, group, topic, PARTITIONS), 90, "offsets at the end", proc.logs
            )
            assert proc.proc.pid == pid and proc.proc.poll() is None  # type: ignore[union-attr]
            m = proc.metrics()
            rc = proc.stop(signal.SIGTERM, 60)
            assert rc == 0, proc.logs()[-3000:]
    finally:
        api.kill()
    t = tally(api, expected)
    report(
        "broker_down_10s",
        produced=len(expected),
        delivered_before_stop=at_stop,
        delivered_while_broker_down=during,
        lost=len(t.lost),
        duplicates=t.duplicate_count,
        broker_unavailable_s_incl_restart=round(up_at - down_at, 1),
        seconds_to_all_delivered_after_broker_back=round(caught_up, 2),
        further_seconds_to_commit_to_end=round(committed_s, 2),
        rebalances={e: m[f'group_enriched_rebalances_total{{event="{e}"}}'] for e in ("assigned", "revoked", "lost")},
        exit_code=rc,
    )
    assert t.lost == [] and t.unexpected == []
    if m['group_enriched_rebalances_total{event="lost"}'] == m['group_enriched_rebalances_total{event="revoked"}'] == 0:
        assert t.duplicate_count == 0, "the process kept its partitions throughout, yet delivered some records twice"


# ---- 6. poison records --------------------------------------------------------------------------------


def _poison_raw(rng: random.Random) -> list[tuple[str, bytes]]:
    """13 (reason, value) pairs that raw-Avro mode can never deliver."""

    def rec(i: int, **over: str) -> dict[str, Any]:
        return {**sample_record(10_000 + i, "poison"), **over}

    whole = encode_raw(rec(0))
    return [
        ("decode_error", b""),  # empty value (not a tombstone: that is a null value)
        ("decode_error", b"\xff" * 64),
        ("decode_error", b"this is not Avro at all"),
        ("decode_error", rng.randbytes(300)),
        ("decode_error", whole[:10]),  # truncated
        ("decode_error", whole[: len(whole) // 2]),
        ("decode_error", whole[:-1]),
        ("decode_error", whole + b"\x00\x02"),  # trailing bytes
        ("invalid_record", encode_raw(rec(1, user_id=""))),
        ("invalid_record", encode_raw(rec(2, user_id=""))),
        ("invalid_record", encode_raw(rec(3, user_id=""))),
        ("invalid_record", encode_raw(rec(4, group_id=""))),
        ("invalid_record", encode_raw(rec(5, group_id=""))),
    ]


def _poison_confluent(schema: dict[str, Any], schema_id: int) -> list[tuple[str, bytes]]:
    """13 (reason, value) pairs that Confluent mode can never deliver."""

    def rec(i: int, **over: str) -> dict[str, Any]:
        return {**sample_record(20_000 + i, "poison"), **over}

    whole = encode_confluent(rec(0), schema, schema_id)
    return [
        ("decode_error", encode_confluent(rec(1), schema, 999)),  # schema ids the registry does not know
        ("decode_error", encode_confluent(rec(2), schema, 424242)),
        ("decode_error", encode_confluent(rec(3), schema, 7)),
        ("decode_error", encode_confluent(rec(4), schema, 2**31 - 1)),
        ("decode_error", b"\x01" + whole[1:]),  # wrong magic byte
        ("decode_error", encode_raw(rec(5))),  # raw Avro without the framing
        ("decode_error", b"\x00\x00\x00"),  # shorter than the header
        ("decode_error", b""),
        ("decode_error", whole[:12]),  # truncated after the header
        ("decode_error", whole[:-1]),
        ("decode_error", whole + b"\x07"),  # trailing bytes
        ("invalid_record", encode_confluent(rec(6, user_id=""), schema, schema_id)),
        ("invalid_record", encode_confluent(rec(7, group_id=""), schema, schema_id)),
    ]


@pytest.mark.parametrize("mode", ["raw", "confluent"])
def test_poison_records_dead_lettered_exactly(kafka_bootstrap: str, tmp_path: Path, mode: str) -> None:
    """13 poison records among 2,000 → exactly those 13 in the DLQ, bytes and headers intact, offsets at the end."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    good = [sample_record(i, f"poison-{mode}") for i in range(2000 - 13)]
    schema = writer_schemas()["current"]
    with SchemaRegistry() as registry:
        extra: dict[str, str] = {}
        if mode == "raw":
            poison = _poison_raw(random.Random(6))
            encode: Callable[[dict[str, Any]], bytes] = encode_raw
        else:
            schema_id = registry.register(11, schema)
            poison = _poison_confluent(schema, schema_id)
            encode = lambda r: encode_confluent(r, schema, schema_id)  # noqa: E731
            extra["SCHEMA_REGISTRY_URL"] = registry.url
        assert len(poison) == 13
        # Spread the poison through the stream: one every ~150 records.
        rows: list[tuple[bytes | None, bytes | None]] = [(r["group_id"].encode(), encode(r)) for r in good]
        for n, (_reason, value) in enumerate(poison):
            rows.insert(n * 153 + 7, (f"poison-{n}".encode(), value))
        positions = kafkautil.produce(kafka_bootstrap, topic, rows, PARTITIONS)
        where = {key: pos for (key, _v), pos in zip(rows, positions, strict=True)}
        expected = {r["user_id"] for r in good}
        with TrackApi() as api:
            env = consumer_env(kafka_bootstrap, topic, api, **extra)
            group = env["KAFKA_GROUP_ID"]
            with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
                proc.wait_ready()
                wait_until(all_delivered(api, expected), 120, "every good event", proc.logs)
                wait_until(
                    lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS),
                    60,
                    "offsets at the end",
                    proc.logs,
                )
                m = proc.metrics()
                assert proc.stop() == 0, proc.logs()[-2000:]
    # Offsets are at the end, so every dead letter was acknowledged: ask for one more than expected to see no extra.
    letters = kafkautil.read_all(kafka_bootstrap, topic + ".dlq", len(poison) + 1, timeout_s=4)
    t = tally(api, expected)
    want = Counter(reason for reason, _v in poison)
    got = dead_lettered(m)
    report(
        f"poison_{mode}",
        produced=len(rows),
        good=len(expected),
        lost=len(t.lost),
        duplicates=t.duplicate_count,
        dead_letters=len(letters),
        metric=got,
        reasons=dict(Counter(d.headers.get("dlq.reason") for d in letters)),
    )
    assert t.lost == [] and t.unexpected == [] and t.duplicate_count == 0
    assert len(letters) == len(poison), [d.key for d in letters]
    by_key = {d.key: d for d in letters}
    assert len(by_key) == len(poison)
    for n, (reason, value) in enumerate(poison):
        key = f"poison-{n}".encode()
        d = by_key.get(key)
        assert d is not None, f"poison record {n} ({reason}) not dead-lettered"
        assert d.value == value, f"poison record {n}: value bytes changed"
        partition, offset = where[key]
        assert d.headers.get("dlq.reason") == reason, (n, d.headers)
        assert d.headers.get("dlq.error.message"), (n, d.headers)
        assert d.headers.get("dlq.source.topic") == topic, (n, d.headers)
        assert d.headers.get("dlq.source.partition") == str(partition), (n, d.headers)
        assert d.headers.get("dlq.source.offset") == str(offset), (n, d.headers)
    assert got == {"decode_error": want["decode_error"], "invalid_record": want["invalid_record"], "rejected": 0}
    assert m["group_enriched_records_consumed_total"] == len(rows)
    assert m["group_enriched_events_delivered_total"] == len(good)


# ---- 7. the Schema Registry is down for 5 s -------------------------------------------------------------


def test_schema_registry_outage_dead_letters_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Registry answers 503 for 5 s while records with not-yet-cached schema ids arrive → 0 DLQ, 0 lost."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    schemas = writer_schemas()
    before = [sample_record(i, "registry") for i in range(500)]
    during = [sample_record(i, "registry") for i in range(500, 2000)]
    with SchemaRegistry() as registry, TrackApi() as api:
        ids = {v: registry.register(n, schemas[v]) for n, v in enumerate(["current", "older", "newer"], 11)}
        # Spread evenly: keyless records could all land in one partition, which then has nothing to commit.
        first_wave = [(None, encode_confluent(r, schemas["current"], ids["current"])) for r in before]
        kafkautil.produce(kafka_bootstrap, topic, first_wave, PARTITIONS)
        env = consumer_env(kafka_bootstrap, topic, api, SCHEMA_REGISTRY_URL=registry.url)
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            wait_until(all_delivered(api, {r["user_id"] for r in before}), 60, "the first wave", proc.logs)
            registry.available = False
            down_at = time.monotonic()
            asked_before = registry.requests
            # Written by writers whose schema ids the consumer has not fetched yet: it must ask the registry.
            values = [
                encode_confluent(r, schemas[v], ids[v])
                for i, r in enumerate(during)
                for v in [("older", "newer")[i % 2]]
            ]
            kafkautil.produce(kafka_bootstrap, topic, [(None, v) for v in values], PARTITIONS)
            time.sleep(max(0.0, 5 - (time.monotonic() - down_at)))
            delivered_during = api.count() - len(before)
            asked_during = registry.requests - asked_before
            registry.available = True
            expected = {r["user_id"] for r in before + during}
            recovered = wait_until(all_delivered(api, expected), 90, "every event after the outage", proc.logs)
            wait_until(
                lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 60, "offsets at the end", proc.logs
            )
            m = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
    letters = kafkautil.read_all(kafka_bootstrap, topic + ".dlq", 1, timeout_s=3)
    t = tally(api, expected)
    report(
        "schema_registry_outage_5s",
        produced=len(expected),
        lost=len(t.lost),
        duplicates=t.duplicate_count,
        delivered_during_outage=delivered_during,
        registry_requests_during_outage=asked_during,
        registry_retries=m['group_enriched_retries_total{reason="schema_registry"}'],
        seconds_to_all_delivered_after_return=round(recovered, 2),
        dead_letters=len(letters),
    )
    assert asked_during > 0, "the outage was never noticed: the schema ids were cached already"
    assert delivered_during == 0
    assert letters == [] and sum(dead_lettered(m).values()) == 0
    assert t.lost == [] and t.unexpected == [] and t.duplicate_count == 0


# ---- 8. 401 until the token file is rotated ------------------------------------------------------------


def test_401_until_token_file_rotated(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Wrong token for 5 s: /readyz 503 and auth_failing 1; the file is replaced → delivery resumes, /readyz 200."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    records = [sample_record(i, "auth") for i in range(2000)]
    user_at = produce_records(kafka_bootstrap, topic, records)
    expected = set(user_at.values())
    token_file = tmp_path / "secret" / "token"
    token_file.parent.mkdir()
    token_file.write_text("wrong-token-0000\n")
    with TrackApi(token="right-token-1234") as api:
        env = consumer_env(kafka_bootstrap, topic, api, TRACK_API_TOKEN_FILE=str(token_file))
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:

            def stalled() -> bool:
                return proc.get("/readyz")[0] == 503 and proc.metrics().get("group_enriched_auth_failing") == 1

            wait_until(lambda: any(r.status == 401 for r in api.requests), 60, "the first 401", proc.logs)
            first_401 = time.monotonic()
            wait_until(stalled, 30, "/readyz 503 and auth_failing 1", proc.logs)
            time.sleep(max(0.0, 5 - (time.monotonic() - first_401)))
            assert stalled(), "still stalled after 5 s"
            assert proc.get("/healthz")[0] == 200, "a token stall is not a stuck loop"
            assert api.count() == 0
            refused = sum(r.status == 401 for r in api.requests)
            # Rotate as Kubernetes does: a new file moved into place in one step.
            fresh = token_file.with_name(".token.new")
            fresh.write_text("right-token-1234\n")
            os.replace(fresh, token_file)
            rotated_at = time.monotonic()
            resumed = wait_until(lambda: api.count() > 0, 30, "the first accepted request", proc.logs)
            wait_until(all_delivered(api, expected), 60, "every event", proc.logs)
            wait_until(lambda: proc.get("/readyz")[0] == 200, 30, "/readyz 200", proc.logs)
            wait_until(
                lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 60, "offsets at the end", proc.logs
            )
            m = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
            logs = proc.logs()
    t = tally(api, expected)
    report(
        "401_token_rotation",
        produced=len(expected),
        lost=len(t.lost),
        duplicates=t.duplicate_count,
        requests_refused_401=refused,
        stall_s=round(rotated_at - first_401, 1),
        seconds_from_rotation_to_first_accepted=round(resumed, 2),
        auth_retries=m['group_enriched_retries_total{reason="auth"}'],
    )
    assert m["group_enriched_auth_failing"] == 0
    assert sum(dead_lettered(m).values()) == 0
    assert t.lost == [] and t.unexpected == [] and t.duplicate_count == 0
    assert "wrong-token-0000" not in logs and "right-token-1234" not in logs, "a token reached the log"


# ---- 9. a 400 caused by one event in a batch of 500 -----------------------------------------------------


def test_400_isolates_the_one_bad_event(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The API refuses any batch holding "bad-user" with 400 → 499 delivered, 1 dead-lettered as rejected."""
    topic = new_topic(kafka_bootstrap, 1)
    records = [sample_record(i, "bisect") for i in range(500)]
    records[317]["user_id"] = "bad-user"
    rows = [(f"key-{i}".encode(), encode_raw(r)) for i, r in enumerate(records)]
    positions = kafkautil.produce(kafka_bootstrap, topic, rows)

    def respond(events: list[dict[str, Any]], headers: dict[str, str]) -> tuple[int, dict[str, str]] | None:
        return (400, {}) if any(e["user_id"] == "bad-user" for e in events) else None

    expected = {r["user_id"] for r in records} - {"bad-user"}
    with TrackApi(respond=respond) as api:
        env = consumer_env(kafka_bootstrap, topic, api, BATCH_MAX_EVENTS="500", BATCH_LINGER_MS="1000")
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            wait_until(all_delivered(api, expected), 60, "the 499 good events", proc.logs)
            wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, 1), 60, "offsets at the end", proc.logs)
            m = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
    letters = kafkautil.read_all(kafka_bootstrap, topic + ".dlq", 2, timeout_s=5)
    t = tally(api, expected)
    requests = list(api.requests)
    report(
        "400_one_bad_event",
        produced=len(records),
        delivered=len(api.events),
        lost=len(t.lost),
        duplicates=t.duplicate_count,
        requests=len(requests),
        first_request_events=requests[0].events,
        dead_letters=len(letters),
    )
    assert (requests[0].events, requests[0].status) == (500, 400), "the bad event was not in a batch of 500"
    assert t.lost == [] and t.unexpected == [] and t.duplicate_count == 0
    assert len(api.events) == 499
    assert len(letters) == 1
    d = letters[0]
    assert (d.key, d.value) == rows[317]
    assert d.headers["dlq.reason"] == "rejected"
    assert d.headers["dlq.http.status"] == "400"
    assert d.headers["dlq.error.message"]
    assert d.headers["dlq.source.topic"] == topic
    assert (d.headers["dlq.source.partition"], d.headers["dlq.source.offset"]) == tuple(map(str, positions[317]))
    assert dead_lettered(m) == {"decode_error": 0, "invalid_record": 0, "rejected": 1}
    assert m["group_enriched_events_delivered_total"] == 499


# ---- 10. SIGTERM while the API hangs ------------------------------------------------------------------


SHUTDOWN_TIMEOUT_S = 5


def _hanging_api_run(
    kafka_bootstrap: str, tmp_path: Path, tag: str, stop: Callable[[ConsumerProcess], tuple[int, float]]
) -> tuple[int, float, str]:
    """Deliver a first wave, make the API hang, stop the consumer with `stop`; then check commits and restart."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    wave1 = [sample_record(i, tag) for i in range(1000)]
    wave2 = [sample_record(i, tag) for i in range(1000, 2000)]
    user_at = produce_records(kafka_bootstrap, topic, wave1)
    api = TrackApi().start()
    env = consumer_env(
        kafka_bootstrap,
        topic,
        api,
        SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
        # A process that exits at once never leaves the group: the restart waits out its session (6 s minimum).
        KAFKA_CFG_SESSION_TIMEOUT_MS="6000",
        KAFKA_CFG_HEARTBEAT_INTERVAL_MS="1000",
    )
    group = env["KAFKA_GROUP_ID"]
    try:
        with ConsumerProcess(env, tmp_path / "first.log") as proc:
            proc.wait_ready()
            wait_until(all_delivered(api, set(user_at.values())), 60, "the first wave", proc.logs)
            wait_until(
                lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 60, "the first wave committed"
            )
            ends_wave1 = kafkautil.end_offsets(kafka_bootstrap, topic, PARTITIONS)
            api.delay_s = 60  # every request from now on hangs
            user_at |= produce_records(kafka_bootstrap, topic, wave2)
            arrived = api.arrived
            wait_until(
                lambda: proc.metrics().get("group_enriched_inflight_requests", 0) > 0 and api.arrived > arrived,
                30,
                "requests hanging at the stand-in",
                proc.logs,
            )
            rc, elapsed = stop(proc)
            accepted = set(delivered_ids(api))  # the hanging requests can no longer be accepted for this process
            first_logs = proc.logs()
        offsets = committed(kafka_bootstrap, group, topic)
        bad = accepted_below_commit(offsets, user_at, accepted)
        api.delay_s = 0
        # Nothing is lost: a new process delivers what the first one left uncommitted.
        expected = set(user_at.values())
        with ConsumerProcess(env, tmp_path / "second.log") as again:
            again.wait_ready()
            wait_until(all_delivered(api, expected), 60, "every event after the restart", again.logs)
            wait_until(
                lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 60, "offsets at the end", again.logs
            )
            assert again.stop() == 0, again.logs()[-2000:]
    finally:
        api.kill()
    t = tally(api, expected)
    report(
        f"sigterm_api_hanging_{tag}",
        exit_code=rc,
        exit_s=round(elapsed, 2),
        accepted_at_exit=len(accepted),
        committed_at_exit=committed_sum(offsets),
        committed_but_not_accepted=len(bad),
        lost_after_restart=len(t.lost),
        duplicates=t.duplicate_count,
    )
    assert bad == [], f"committed but never accepted: {bad[:10]}"
    assert offsets == ends_wave1, "the commits moved past what the API accepted, or fell behind the first wave"
    assert t.lost == [] and t.unexpected == [] and t.duplicate_count == 0
    return rc, elapsed, first_logs


def test_sigterm_with_api_hanging_exits_in_time(kafka_bootstrap: str, tmp_path: Path) -> None:
    """SIGTERM while every request hangs (SHUTDOWN_TIMEOUT_S=5) → exit 0 within 15 s, nothing undelivered committed."""

    def stop(proc: ConsumerProcess) -> tuple[int, float]:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.proc.wait(SHUTDOWN_TIMEOUT_S + 30)  # type: ignore[union-attr]
        except Exception:
            pytest.fail(f"no exit {SHUTDOWN_TIMEOUT_S + 30}s after SIGTERM:\n{proc.logs()[-3000:]}")
        return rc, time.monotonic() - started

    rc, elapsed, logs = _hanging_api_run(kafka_bootstrap, tmp_path, "term", stop)
    stopped = seconds_between(logs, "signal SIGTERM", "consumer stopped")
    report("sigterm_api_hanging_term_timing", exit_s=round(elapsed, 2), consumer_stopped_logged_after_s=stopped)
    assert rc == 0, logs[-3000:]
    assert elapsed <= SHUTDOWN_TIMEOUT_S + 10, f"exit took {elapsed:.1f}s"
    assert stopped is not None and stopped <= SHUTDOWN_TIMEOUT_S + 2, logs[-3000:]
    assert '"undelivered_left_uncommitted"' in logs


def test_second_sigterm_during_drain_exits_at_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A second SIGTERM during the drain exits at once (non-zero) and commits nothing undelivered."""

    def stop(proc: ConsumerProcess) -> tuple[int, float]:
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: '"signal SIGTERM: draining"' in proc.logs(), 30, "the drain", proc.logs)
        assert proc.proc.poll() is None, "exited before the second signal"  # type: ignore[union-attr]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.proc.wait(30)  # type: ignore[union-attr]
        except Exception:
            pytest.fail(f"no exit 30s after the second SIGTERM:\n{proc.logs()[-3000:]}")
        return rc, time.monotonic() - started

    rc, elapsed, logs = _hanging_api_run(kafka_bootstrap, tmp_path, "twice", stop)
    assert rc != 0
    assert elapsed <= 2.0, f"the second SIGTERM took {elapsed:.1f}s to end the process"
    assert "second signal" in logs


def test_sigterm_exit_bounded_by_shutdown_timeout_not_http_timeout(kafka_bootstrap: str, tmp_path: Path) -> None:
    """SHUTDOWN_TIMEOUT_S=2, HTTP_TIMEOUT_S=30, API hanging → the process should be gone a few seconds after 2 s."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    user_at = produce_records(kafka_bootstrap, topic, [sample_record(i, "slowexit") for i in range(400)])
    api = TrackApi(delay_s=60).start()
    env = consumer_env(kafka_bootstrap, topic, api, SHUTDOWN_TIMEOUT_S="2", HTTP_TIMEOUT_S="30")
    group = env["KAFKA_GROUP_ID"]
    budget = 2 + 5  # the drain, then closing the consumer and leaving the group
    try:
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            wait_until(lambda: api.arrived > 0, 30, "requests hanging at the stand-in", proc.logs)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                rc: int | None = proc.proc.wait(budget)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                rc = None  # still running: the context manager kills it
            elapsed = time.monotonic() - started
            logs = proc.logs()
    finally:
        api.kill()
    offsets = committed(kafka_bootstrap, group, topic)
    stopped = seconds_between(logs, "signal SIGTERM", "consumer stopped")
    report(
        "sigterm_exit_vs_http_timeout",
        exit_code=rc,
        waited_s=round(elapsed, 2),
        consumer_stopped_logged_after_s=stopped,
        committed=committed_sum(offsets),
    )
    assert accepted_below_commit(offsets, user_at, set()) == []  # nothing was accepted, nothing committed
    assert rc == 0, f"still running {elapsed:.1f}s after SIGTERM; 'consumer stopped' was logged after {stopped}s"
