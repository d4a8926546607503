"""Lifecycle on real parts: how the real CLI ends (a bug, a stop during a rebalance) on a real broker."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import kafkautil
from harness.process import ConsumerProcess, log_entries
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.support import consumer_env, new_topic, wait_until

pytestmark = pytest.mark.integration


def stamp(entry: dict[str, Any]) -> float:
    return datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# ---- item 7: an unexpected exception exits ------------------------------------------------------------


def test_unexpected_exception_exits_within_seconds_and_commits_what_was_delivered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A bug in the main loop while delivery threads retry a failing API: one traceback, exit 1, delivered committed.

    The API accepts the first 500 events and answers 503 after that, so the delivery
    threads are retrying when the exception hits. No timer commit runs (a 10-minute
    interval): only the exit path can commit the 500 delivered records.
    """
    topic = new_topic(kafka_bootstrap, 1)
    kafkautil.produce(kafka_bootstrap, topic, [(None, encode_raw(sample_record(i, "crash"))) for i in range(2000)])
    accepted = 0

    def respond(events: list[dict[str, Any]], _headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        nonlocal accepted
        if accepted + len(events) > 500:
            return 503, {}
        accepted += len(events)
        return 200, {}

    trigger = tmp_path / "crash-now"
    with TrackApi(respond=respond) as api:
        env = consumer_env(
            kafka_bootstrap,
            topic,
            api,
            BATCH_MAX_EVENTS="100",
            MAX_INFLIGHT_REQUESTS="1",  # one request at a time: the accepted events are offsets 0-499
            COMMIT_INTERVAL_MS="600000",
            CRASH_TRIGGER_FILE=str(trigger),
        )
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log", module="tests.crashing_consumer") as proc:
            proc.wait_ready()
            wait_until(lambda: sum(r.status == 503 for r in api.requests) >= 3, 60, "the API refusing", proc.logs)
            assert api.count() == 500
            trigger.touch()
            assert proc.proc is not None
            wait_until(lambda: proc.proc.poll() is not None, 60, "the process to exit after the exception", proc.logs)  # type: ignore[union-attr]
            exited_at = time.time()
            rc = proc.proc.returncode
    entries = log_entries(proc.logs())
    injected = [e for e in entries if e.get("msg") == "injecting an exception into the main loop"]
    tracebacks = [e for e in entries if "RuntimeError: injected failure" in str(e.get("error", ""))]
    seconds = exited_at - stamp(injected[0])
    committed = kafkautil.committed_offsets(kafka_bootstrap, group, topic, 1)
    print(f"\nLIFECYCLE crash: exit={rc} seconds_from_exception_to_exit={seconds:.2f} committed={committed}")
    assert rc == 1, proc.logs()[-2000:]
    assert len(tracebacks) == 1 and tracebacks[0]["level"] == "error", tracebacks
    assert committed == {0: 500}, committed


# ---- item 5: a stop during a rebalance ----------------------------------------------------------------


def stop_line(logs: str) -> dict[str, Any]:
    lines = [e for e in log_entries(logs) if e.get("msg") == "consumer stopped"]
    assert len(lines) == 1, logs[-2000:]
    return lines[0]


def test_stop_during_rebalance_commits_what_was_delivered(kafka_bootstrap: str, tmp_path: Path) -> None:
    """SIGTERM while a second consumer joins: the final commit completes, its next owner re-sends at most a batch.

    A small buffer keeps the drain short, so the final commit lands in the rebalance's second
    round, when the broker refuses a commit of the old generation (`generation id is not valid`).
    """
    partitions, n, batch = 4, 20_000, 100
    topic = new_topic(kafka_bootstrap, partitions)
    records = [sample_record(i, "stoprebal") for i in range(n)]
    positions = kafkautil.produce(kafka_bootstrap, topic, [(None, encode_raw(r)) for r in records], partitions)
    at = {r["user_id"]: pos for r, pos in zip(records, positions, strict=True)}
    with TrackApi() as api:
        env = consumer_env(
            kafka_bootstrap,
            topic,
            api,
            BATCH_MAX_EVENTS=str(batch),
            MAX_INFLIGHT_REQUESTS="2",
            BUFFER_MAX_EVENTS="1000",
        )
        group = env["KAFKA_GROUP_ID"]
        first = ConsumerProcess(env, tmp_path / "first.log").start()
        # librdkafka's default heartbeat: the newcomer takes up to 3 s to notice the second round.
        second = ConsumerProcess({**env, "KAFKA_CFG_HEARTBEAT_INTERVAL_MS": "3000"}, tmp_path / "second.log")
        try:
            first.wait_ready()
            assert api.wait_for(500, 60), first.logs()[-2000:]
            second.start()
            # The newcomer's join took partitions from the first consumer, which rejoins at once:
            # the group's second round is under way. A fast drain lands the final commit inside it.
            wait_until(lambda: '"partitions revoked"' in first.logs(), 60, "the first revoke", first.logs)
            rc = first.stop()
            assert rc == 0, first.logs()[-2000:]
            wait_until(lambda: len({e["user_id"] for e in list(api.events)}) == n, 120, "every event", second.logs)
            wait_until(
                lambda: (
                    kafkautil.committed_offsets(kafka_bootstrap, group, topic, partitions)
                    == kafkautil.end_offsets(kafka_bootstrap, topic, partitions)
                ),
                60,
                "offsets at the end",
                second.logs,
            )
            assert second.stop() == 0, second.logs()[-2000:]
        finally:
            first.kill()
            second.kill()
    counts = Counter(at[e["user_id"]] for e in list(api.events))
    duplicates = sum(c - 1 for c in counts.values())
    stopped = stop_line(first.logs())
    failed = first.logs().count("offset commit failed")
    figures = {k: v for k, v in stopped.items() if k not in ("ts", "logger", "level", "msg")}
    print(f"\nLIFECYCLE stop-during-rebalance: duplicates={duplicates} stop_line={figures} commit_failures={failed}")
    assert len(counts) == n
    assert duplicates <= batch, f"{duplicates} events re-sent by the next owner"
    assert stopped["delivered_left_uncommitted"] >= duplicates, stopped


def test_fatal_kafka_error_exits_1_at_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A second process with the same static `group.instance.id` fences the first (a fatal librdkafka error):
    the first logs it, exits 1 within seconds, and the newcomer delivers everything."""
    topic = new_topic(kafka_bootstrap, 1)
    n = 3000
    kafkautil.produce(kafka_bootstrap, topic, [(None, encode_raw(sample_record(i, "fenced"))) for i in range(n)])
    with TrackApi(delay_s=0.05) as api:
        env = consumer_env(
            kafka_bootstrap,
            topic,
            api,
            BATCH_MAX_EVENTS="50",
            MAX_INFLIGHT_REQUESTS="1",
            KAFKA_CFG_GROUP_INSTANCE_ID="pod-0",
        )
        first = ConsumerProcess(env, tmp_path / "first.log").start()
        second = ConsumerProcess(env, tmp_path / "second.log")
        try:
            first.wait_ready()
            assert api.wait_for(200, 60), first.logs()[-2000:]
            second.start()
            assert first.proc is not None
            wait_until(lambda: first.proc.poll() is not None, 60, "the fenced process to exit", first.logs)  # type: ignore[union-attr]
            exited_at = time.time()
            api.delay_s = 0.0
            wait_until(lambda: len({e["user_id"] for e in list(api.events)}) == n, 120, "every event", second.logs)
            assert second.stop() == 0, second.logs()[-2000:]
        finally:
            first.kill()
            second.kill()
    fatal = [e for e in log_entries(first.logs()) if str(e.get("msg", "")).startswith("fatal Kafka error")]
    seconds = exited_at - stamp(fatal[0]) if fatal else None
    print(f"\nLIFECYCLE fenced: exit={first.proc.returncode} seconds_from_fatal_error_to_exit={seconds}")
    assert first.proc.returncode == 1 and fatal, first.logs()[-2000:]
