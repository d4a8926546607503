"""Writer schemas registered with references decode: Company (and Company's Meta) as their own subjects.

The registry stand-in serves GroupEnrichment schemas whose `company` field names a type from another
subject: two levels (GroupEnrichment → Company) and three (GroupEnrichment → Company → Meta, a field
the reader does not know). Every record must be delivered exactly as the raw-Avro path would send
it, nothing dead-lettered, and each referenced subject version fetched once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.transform import to_event
from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import encode_confluent, reader_schema, sample_record
from harness.registry import SchemaRegistry, referencing_schemas
from harness.trackapi import TrackApi
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 2
N = 400


def test_schemas_with_references_decode_exactly(kafka_bootstrap: str, tmp_path: Path) -> None:
    two = referencing_schemas(reader_schema())
    three = referencing_schemas(reader_schema(), three_levels=True)
    topic = new_topic(kafka_bootstrap, PARTITIONS, prefix="refs")
    with SchemaRegistry() as registry, TrackApi() as api:
        registry.register(31, two["company"], subject="company-value", version=1)
        registry.register(32, three["meta"], subject="meta-value", version=1)
        meta_ref = [{"name": "ai.thrivestack.enrichment.Meta", "subject": "meta-value", "version": 1}]
        registry.register(33, three["company"], subject="company-value", version=2, references=meta_ref)
        top2 = registry.register(
            34,
            two["top"],
            references=[{"name": "ai.thrivestack.enrichment.Company", "subject": "company-value", "version": 1}],
        )
        top3 = registry.register(
            35,
            three["top"],
            references=[{"name": "ai.thrivestack.enrichment.Company", "subject": "company-value", "version": 2}],
        )
        records = [sample_record(i, "refs") for i in range(N)]
        rows = []
        for i, r in enumerate(records):
            if i % 2:
                written = {
                    **r,
                    "company": {**r["company"], "meta": {"source": f"s{i}", "confidence": 0.5} if i % 4 == 1 else None},
                }
                rows.append((r["group_id"].encode(), encode_confluent(written, three["full"], top3)))
            else:
                rows.append((r["group_id"].encode(), encode_confluent(r, two["full"], top2)))
        kafkautil.produce(kafka_bootstrap, topic, rows, PARTITIONS)
        env = consumer_env(kafka_bootstrap, topic, api, SCHEMA_REGISTRY_URL=registry.url)
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            wait_until(
                lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS),
                90,
                "offsets at the end",
                proc.logs,
            )
            m = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
        paths = list(registry.paths)
    dead = {k: v for k, v in m.items() if k.startswith("group_enriched_events_dead_lettered_total") and v}
    expected = {r["user_id"]: to_event(r) for r in records}
    got = {e["user_id"]: e for e in api.events}
    exact = sum(got.get(u) == _json(e) for u, e in expected.items())
    subject_fetches = {p: paths.count(p) for p in paths if p.startswith("/subjects/")}
    print(
        f"\nreferences: {len(got)} of {N} delivered, {exact} equal to the raw path, dead-lettered {dead or 0}, "
        f"subject fetches {subject_fetches}"
    )
    assert dead == {}
    assert exact == N and len(api.events) == N
    assert subject_fetches == {
        "/subjects/company-value/versions/1": 1,
        "/subjects/company-value/versions/2": 1,
        "/subjects/meta-value/versions/1": 1,
    }


def _json(event: dict) -> dict:
    import orjson

    return orjson.loads(orjson.dumps(event))
