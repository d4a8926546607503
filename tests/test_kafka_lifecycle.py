"""Lifecycle on real parts: how the real CLI ends (a bug, a stop during a rebalance) on a real broker."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.support import consumer_env, new_topic, wait_until

pytestmark = pytest.mark.integration


def log_entries(logs: str) -> list[dict[str, Any]]:
    out = []
    for line in logs.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


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
