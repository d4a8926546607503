"""Running the operator tools (`group-enriched-consumer inspect | dlq | offsets`) as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from consumer.config import Settings


def tool_env(env: dict[str, str]) -> dict[str, str]:
    """The test's settings only: none leak in from the caller's environment."""
    inherited = {
        k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields and not k.startswith("KAFKA_CFG_")
    }
    return {**inherited, **env}


def run_tool(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env=tool_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def start_tool(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "consumer", *args],
        env=tool_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


def read_topic(bootstrap: str, topic: str, isolation: str = "read_committed") -> list[Record]:
    """Every record of `topic` up to its current end (each partition's EOF), in the given isolation."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        todo, out = set(parts), []
        deadline = time.monotonic() + 60
        while todo and time.monotonic() < deadline:
            for m in c.consume(500, timeout=0.5):
                err = m.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    todo.discard(m.partition())
                    continue
                headers = {k: (v or b"").decode() for k, v in m.headers() or []}
                out.append(Record(m.partition(), m.offset(), m.key(), m.value(), headers))
        assert not todo, f"partitions {todo} of {topic} not read to the end"
        return out
    finally:
        c.close()
