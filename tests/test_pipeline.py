"""End to end on real parts: Avro records in a real Kafka broker → the real CLI → a loopback Track API."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import as_written_by, encode_confluent, encode_raw, sample_record, writer_schemas
from harness.registry import SchemaRegistry
from harness.trackapi import TrackApi
from tests.contract_expect import expected_event
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
N = 5000


def lags(metrics: dict[str, float]) -> list[float]:
    return [v for k, v in metrics.items() if k.startswith("group_enriched_consumer_lag{")]


def by_user(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        out[e["user_id"]] = e
    return out


def assert_all_committed(bootstrap: str, group: str, topic: str) -> None:
    ends = kafkautil.end_offsets(bootstrap, topic, PARTITIONS)
    assert kafkautil.committed_offsets(bootstrap, group, topic, PARTITIONS) == ends
    assert sum(ends.values()) == N


@pytest.mark.parametrize("framing", ["raw-current", "raw-older", "raw-newer", "confluent-mixed"])
def test_every_record_delivered_mapped_and_committed(kafka_bootstrap: str, framing: str, tmp_path: Path) -> None:
    """5,000 records over 4 partitions → 5,000 events equal to the contract mapping, offsets at the end."""
    schemas = writer_schemas()
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    records = [sample_record(i, tag=framing) for i in range(N)]
    extra: dict[str, str] = {}
    versions = ["current"] * N
    with SchemaRegistry() as registry, TrackApi() as api:
        if framing == "confluent-mixed":
            ids = {v: registry.register(n, schemas[v]) for n, v in enumerate(["older", "current", "newer"], 11)}
            versions = [("older", "current", "newer")[i % 3] for i in range(N)]
            values = [encode_confluent(r, schemas[v], ids[v]) for r, v in zip(records, versions, strict=True)]
            extra["SCHEMA_REGISTRY_URL"] = registry.url
        else:
            version = framing.removeprefix("raw-")
            versions = [version] * N
            values = [encode_raw(r, schemas[version]) for r in records]
            if version != "current":
                schema_file = tmp_path / "writer.avsc"
                schema_file.write_text(json.dumps(schemas[version]))
                extra["AVRO_WRITER_SCHEMA_FILE"] = str(schema_file)
        kafkautil.produce(
            kafka_bootstrap, topic, [(r["group_id"].encode(), v) for r, v in zip(records, values, strict=True)]
        )
        env = consumer_env(kafka_bootstrap, topic, api, **extra)
        with ConsumerProcess(env) as proc:
            proc.wait_ready()
            assert api.wait_for(N, 120), f"{api.count()} of {N} delivered:\n{proc.logs()[-2000:]}"
            group = env["KAFKA_GROUP_ID"]
            wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 30, "offsets committed")
            wait_until(lambda: lags(proc.metrics()) == [0] * PARTITIONS, 30, "lag 0 on every partition")
            metrics = proc.metrics()
            assert proc.stop(signal.SIGTERM) == 0, proc.logs()[-2000:]
        # Logged once per assignment: the benchmark times consumption from this line.
        first = [line for line in proc.logs().splitlines() if '"first records after assignment"' in line]
        assert len(first) == 1 and orjson.loads(first[0])["after_ms"] >= 0, first

        delivered = by_user(api.events)
        assert len(api.events) == N  # nothing delivered twice in a clean run
        for record, version in zip(records, versions, strict=True):
            assert delivered[record["user_id"]] == expected_event(as_written_by(record, version))
        assert_all_committed(kafka_bootstrap, env["KAFKA_GROUP_ID"], topic)

        # The counters tell the truth: they equal what the API received.
        assert metrics["group_enriched_records_consumed_total"] == N
        assert metrics["group_enriched_events_delivered_total"] == N
        assert metrics['group_enriched_http_requests_total{code="200"}'] == len(api.requests)
        assert metrics["group_enriched_batch_events_count"] == len(api.requests)
        assert metrics["group_enriched_batch_events_sum"] == N
        assert metrics["group_enriched_end_to_end_latency_seconds_count"] == N
        assert sum(v for k, v in metrics.items() if k.startswith("group_enriched_events_dead_lettered_total")) == 0
        assert all(r.events <= 500 for r in api.requests)


def test_api_killed_mid_run_commits_nothing_undelivered(kafka_bootstrap: str) -> None:
    """The Track API goes away (connection refused): commits stay behind what it acknowledged."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    records = [sample_record(i, tag="kill") for i in range(N)]
    positions = kafkautil.produce(kafka_bootstrap, topic, [(None, encode_raw(r)) for r in records], PARTITIONS)
    user_at = {pos: r["user_id"] for pos, r in zip(positions, records, strict=True)}
    api = TrackApi(delay_s=0.02).start()
    env = consumer_env(kafka_bootstrap, topic, api, BATCH_MAX_EVENTS="100", MAX_INFLIGHT_REQUESTS="2")
    group = env["KAFKA_GROUP_ID"]
    with ConsumerProcess(env) as proc:
        proc.wait_ready()
        assert api.wait_for(1000, 60)
        api.kill()
        received_before = api.count()
        # The consumer has noticed (retries) and kept turning: whatever it would commit, it has.
        errors = 'group_enriched_http_requests_total{code="error"}'
        wait_until(lambda: proc.metrics().get(errors, 0) >= 6, 30, "retries against the dead API", proc.logs)
        committed = kafkautil.committed_offsets(kafka_bootstrap, group, topic, PARTITIONS)
        received = {e["user_id"] for e in api.events}
        below = [user_at[(p, o)] for p, c in committed.items() for o in range(max(c, 0))]
        assert below, "nothing committed before the API went away"
        assert set(below) <= received, "an offset was committed whose record the API never received"
        assert sum(max(c, 0) for c in committed.values()) <= received_before < N
        assert proc.metrics()['group_enriched_http_requests_total{code="error"}'] > 0

        api.start()  # back on the same port: the consumer catches up without a restart
        assert api.wait_for(N, 120), proc.logs()[-2000:]
        wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 30, "offsets committed")
        assert proc.stop() == 0
    assert {e["user_id"] for e in api.events} == {r["user_id"] for r in records}
    api.kill()


def test_tombstones_are_skipped_and_committed(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    rows = [(b"k", encode_raw(sample_record(0, "t"))), (b"k", None), (b"k", encode_raw(sample_record(1, "t")))]
    kafkautil.produce(kafka_bootstrap, topic, rows)
    with TrackApi() as api:
        env = consumer_env(kafka_bootstrap, topic, api)
        with ConsumerProcess(env) as proc:
            proc.wait_ready()
            assert api.wait_for(2, 30)
            wait_until(
                lambda: kafkautil.committed_offsets(kafka_bootstrap, env["KAFKA_GROUP_ID"], topic, 1) == {0: 3},
                30,
                "tombstone committed",
            )
            assert proc.metrics()['group_enriched_records_skipped_total{reason="tombstone"}'] == 1
            assert proc.stop() == 0
    assert [e["user_id"] for e in api.events] == ["t-user-0", "t-user-1"]
    assert orjson.dumps(api.events)  # what arrived is plain JSON
