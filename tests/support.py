"""Helpers shared by the integration tests: consumer settings, topics, waiting, offsets."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from harness import kafkautil
from harness.trackapi import TrackApi


def consumer_env(bootstrap: str, topic: str, api: TrackApi, **extra: str) -> dict[str, str]:
    """Settings for a test consumer: short linger and commit interval, frequent lag statistics."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": f"{topic}-group",
        "TRACK_API_URL": api.url,
        "BATCH_LINGER_MS": "50",
        "COMMIT_INTERVAL_MS": "200",
        "KAFKA_CFG_STATISTICS_INTERVAL_MS": "500",
        **extra,
    }
    if "TRACK_API_TOKEN_FILE" not in env:
        env.setdefault("TRACK_API_TOKEN", api.token)
    return env


def new_topic(bootstrap: str, partitions: int, prefix: str = "enrich") -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kafkautil.create_topic(bootstrap, topic, partitions)
    return topic


def wait_until(
    condition: Callable[[], object], timeout_s: float, what: str, logs: Callable[[], str] | None = None
) -> float:
    """Poll `condition` until true; returns the seconds it took, or fails with the consumer's log tail."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            tail = f"\n--- consumer log tail ---\n{logs()[-3000:]}" if logs else ""
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}{tail}")
        time.sleep(0.1)
    return time.monotonic() - started


def fully_committed(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    """The group's committed offsets equal the topic's end offsets on every partition."""
    ends = kafkautil.end_offsets(bootstrap, topic, partitions)
    return kafkautil.committed_offsets(bootstrap, group, topic, partitions) == ends
