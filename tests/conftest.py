"""Shared fixtures: a real Kafka broker (see ``harness.kafka``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.kafka import KafkaBroker


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: talks to a real Kafka broker and HTTP servers on loopback")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers: ``$KAFKA_BOOTSTRAP_SERVERS`` if set, else a broker shared by the session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = KafkaBroker(Path(tmp_path_factory.mktemp("kafka-session")))
    broker.start(timeout=120)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A started broker of this test's own, free to stop, kill and restart."""
    broker = KafkaBroker(tmp_path / "kafka")
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()
