"""A Schema Registry the consumer cannot use (down, wrong credentials) is visible: gauge, /readyz, then back.

While records wait on the registry nothing can progress: `group_enriched_schema_registry_failing`
is 1 and /readyz 503 (the alert SchemaRegistryFailing and its runbook name the cause); when the
registry answers again both clear and every record is delivered, none dead-lettered.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import encode_confluent, reader_schema, sample_record
from harness.registry import SchemaRegistry
from harness.trackapi import TrackApi
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 2
GAUGE = "group_enriched_schema_registry_failing"


def test_registry_outage_sets_the_gauge_and_readyz_then_clears(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic(kafka_bootstrap, PARTITIONS, prefix="srvis")
    records = [sample_record(i, "srvis") for i in range(300)]
    with SchemaRegistry() as registry, TrackApi() as api:
        schema_id = registry.register(5, reader_schema())
        registry.available = False
        rows = [(r["group_id"].encode(), encode_confluent(r, reader_schema(), schema_id)) for r in records]
        kafkautil.produce(kafka_bootstrap, topic, rows, PARTITIONS)
        env = consumer_env(kafka_bootstrap, topic, api, SCHEMA_REGISTRY_URL=registry.url)
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            wait_until(lambda: registry.requests >= 2, 60, "the consumer asking the registry twice", proc.logs)

            def seen() -> tuple[int, float | None]:
                return proc.get("/readyz")[0], proc.metrics().get(GAUGE)

            during = seen()
            wait_until(lambda: seen() == (503, 1.0), 30, f"/readyz 503 and {GAUGE} 1 (saw {during})", proc.logs)
            registry.available = True
            wait_until(lambda: api.count() >= len(records), 90, "every event once the registry is back", proc.logs)
            wait_until(lambda: seen() == (200, 0.0), 30, f"/readyz 200 and {GAUGE} 0", proc.logs)
            wait_until(
                lambda: fully_committed(kafka_bootstrap, env["KAFKA_GROUP_ID"], topic, PARTITIONS),
                60,
                "offsets",
                proc.logs,
            )
            m = proc.metrics()
            assert proc.stop() == 0
    print(f"\nregistry down: /readyz and {GAUGE} were {during} at the 2nd failure; back: {api.count()} delivered")
    assert sum(v for k, v in m.items() if k.startswith("group_enriched_events_dead_lettered_total")) == 0
