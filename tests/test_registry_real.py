"""A real Schema Registry (Apicurio Registry 3.0.9, Confluent-compatible API) and confluent-kafka's own AvroSerializer.

Records are written the way a production producer writes them: `AvroSerializer` registers the
schema itself (auto-registration) and frames each value with the registry's schema id. Each
test runs the same records through the raw-Avro path too (a second consumer, records written
with the reader schema) and requires the two deliveries to be identical, event for event.

- two compatible versions of the writer schema, and a third, incompatible one that the
  registry refuses (subject compatibility BACKWARD);
- a writer schema with references (Company registered as its own subject);
- the registry behind an HTTPS + basic-auth proxy with a private CA (harness.authproxy):
  without the CA, or without credentials, the consumer stalls (nothing delivered,
  dead-lettered or committed); with both it delivers; no secret in any output.

Needs `../shared/tools/apicurio-registry` beside the repo, Java 17 and Maven (the build is
cached after the first, ~4 minute, run); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import signal
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from harness import kafkautil
from harness.apicurio import Apicurio, build, unavailable
from harness.authproxy import AuthProxy
from harness.certs import CertAuthority
from harness.process import ConsumerProcess
from harness.records import as_written_by, encode_raw, sample_record, writer_schemas
from harness.registry import referencing_schemas
from harness.trackapi import TrackApi
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 2
COMPANY = "ai.thrivestack.enrichment.Company"
USER_INFO = "registry-user:Apicurio-s3cret-pw"
RETRIES = 'group_enriched_retries_total{reason="schema_registry"}'


@pytest.fixture(scope="session")
def apicurio() -> Iterator[Apicurio]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    jar = build(log=lambda line: print(line, flush=True))
    with Apicurio(jar) as registry:
        print(f"\napicurio: Apicurio Registry 3.0.9 up in {registry.started_in_s:.1f}s at {registry.url}")
        yield registry


def _dead(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.startswith("group_enriched_events_dead_lettered_total"))


def _deliver(bootstrap: str, topic: str, n: int, tmp_path: Path, name: str, **extra: str) -> tuple[dict, dict]:
    """Run the consumer over `topic` until `n` events arrived and offsets are at the end: (events by user, metrics)."""
    with TrackApi() as api:
        env = consumer_env(bootstrap, topic, api, **extra)
        with ConsumerProcess(env, tmp_path / f"{name}.log") as proc:
            wait_until(lambda: api.count() >= n, 120, f"{n} events ({name})", proc.logs)
            wait_until(
                lambda: fully_committed(bootstrap, env["KAFKA_GROUP_ID"], topic, PARTITIONS), 60, "offsets", proc.logs
            )
            m = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
    events = {e["user_id"]: e for e in api.events}
    assert len(events) == len(api.events) == n, "duplicates or missing events"
    return events, m


def _produce_both(
    bootstrap: str, sr_rows: list[tuple[bytes, bytes]], raw_records: list[dict[str, Any]]
) -> tuple[str, str]:
    """The registry-framed values to one topic, the same records as raw Avro (reader schema) to another."""
    sr_topic = new_topic(bootstrap, PARTITIONS, "real-sr")
    raw_topic = new_topic(bootstrap, PARTITIONS, "real-raw")
    kafkautil.produce(bootstrap, sr_topic, sr_rows, PARTITIONS)
    kafkautil.produce(bootstrap, raw_topic, [(r["group_id"].encode(), encode_raw(r)) for r in raw_records], PARTITIONS)
    return sr_topic, raw_topic


def _schema_id(value: bytes) -> int:
    assert value[0] == 0
    return struct.unpack(">i", value[1:5])[0]


def test_auto_registered_versions_deliver_exactly_the_raw_path_and_an_incompatible_one_is_refused(
    apicurio: Apicurio, kafka_bootstrap: str, tmp_path: Path
) -> None:
    writers = writer_schemas()
    client = SchemaRegistryClient({"url": apicurio.url})
    serializers = {
        v: AvroSerializer(client, json.dumps(writers[v]), conf={"auto.register.schemas": True})
        for v in ("older", "current")
    }
    topic_hint = new_topic(kafka_bootstrap, 1, "real-subject")  # only its name: the subject is <topic>-value
    ctx = SerializationContext(topic_hint, MessageField.VALUE)
    records = [sample_record(i, "real") for i in range(2000)]
    versions = ["older" if i < 1000 else "current" for i in range(len(records))]
    sr_rows = [(r["group_id"].encode(), serializers[v](r, ctx)) for r, v in zip(records, versions, strict=True)]
    subject = f"{topic_hint}-value"
    registered = client.get_versions(subject)
    ids = {client.get_version(subject, v).schema_id for v in registered}

    # A third version that old data cannot be read with (a new field without a default): refused.
    client.set_compatibility(subject, "BACKWARD")
    incompatible = json.loads(json.dumps(writers["current"]))
    incompatible["fields"].append({"name": "region", "type": "string"})
    with pytest.raises(SchemaRegistryError) as refused:
        AvroSerializer(client, json.dumps(incompatible), conf={"auto.register.schemas": True})(records[0], ctx)
    after = client.get_versions(subject)

    raw_records = [as_written_by(r, v) for r, v in zip(records, versions, strict=True)]
    sr_topic, raw_topic = _produce_both(kafka_bootstrap, sr_rows, raw_records)
    via_registry, m_sr = _deliver(
        kafka_bootstrap, sr_topic, len(records), tmp_path, "registry", SCHEMA_REGISTRY_URL=apicurio.url
    )
    via_raw, m_raw = _deliver(kafka_bootstrap, raw_topic, len(records), tmp_path, "raw")
    exact = sum(via_registry[u] == via_raw.get(u) for u in via_registry)
    framed_ids = sorted({_schema_id(v) for _, v in sr_rows})
    print(
        f"\nreal registry: subject {subject} versions {registered} (ids {sorted(ids)}), values framed with ids "
        f"{framed_ids}; incompatible v3 refused: HTTP {refused.value.http_status_code} "
        f"(error {refused.value.error_code}), versions after {after}; delivered {len(via_registry)} of "
        f"{len(records)}, {exact} identical to the raw path, dead-lettered {_dead(m_sr):.0f}/{_dead(m_raw):.0f}"
    )
    assert registered == [1, 2] and len(ids) == 2 and framed_ids == sorted(ids)
    assert refused.value.http_status_code == 409 and after == [1, 2]
    assert exact == len(records) and via_registry.keys() == via_raw.keys()
    assert _dead(m_sr) == 0 and _dead(m_raw) == 0


def test_schema_with_references_delivers_exactly_the_raw_path(
    apicurio: Apicurio, kafka_bootstrap: str, tmp_path: Path
) -> None:
    split = referencing_schemas(writer_schemas()["current"])
    client = SchemaRegistryClient({"url": apicurio.url})
    topic_hint = new_topic(kafka_bootstrap, 1, "real-refs")
    company_subject = f"{topic_hint}-company"
    company_id = client.register_schema(company_subject, Schema(json.dumps(split["company"]), "AVRO"))
    company_version = client.get_latest_version(company_subject).version
    top = Schema(
        json.dumps(split["top"]), "AVRO", references=[SchemaReference(COMPANY, company_subject, company_version)]
    )
    serializer = AvroSerializer(client, top, conf={"auto.register.schemas": True})
    ctx = SerializationContext(topic_hint, MessageField.VALUE)
    records = [sample_record(i, "real-refs") for i in range(1000)]
    sr_rows = [(r["group_id"].encode(), serializer(r, ctx)) for r in records]
    top_id = _schema_id(sr_rows[0][1])
    stored = client.get_schema(top_id)
    assert [(r.name, r.subject, r.version) for r in stored.references] == [(COMPANY, company_subject, company_version)]
    assert COMPANY in stored.schema_str and '"annual_revenue"' not in stored.schema_str  # Company is not inline

    sr_topic, raw_topic = _produce_both(kafka_bootstrap, sr_rows, records)
    via_registry, m_sr = _deliver(
        kafka_bootstrap, sr_topic, len(records), tmp_path, "registry", SCHEMA_REGISTRY_URL=apicurio.url
    )
    via_raw, _ = _deliver(kafka_bootstrap, raw_topic, len(records), tmp_path, "raw")
    exact = sum(via_registry[u] == via_raw.get(u) for u in via_registry)
    print(
        f"\nreal registry, references: {company_subject} v{company_version} (id {company_id}) "
        f"referenced by id {top_id}; "
        f"delivered {len(via_registry)} of {len(records)}, {exact} identical to the raw path, "
        f"dead-lettered {_dead(m_sr):.0f}"
    )
    assert exact == len(records) and _dead(m_sr) == 0


def test_registry_behind_basic_auth_and_a_private_ca(apicurio: Apicurio, kafka_bootstrap: str, tmp_path: Path) -> None:
    """Without the CA, or without credentials: a stall (nothing delivered, dead-lettered or committed).

    With both: every record delivered. No secret in any log or metrics output.
    """
    ca = CertAuthority(tmp_path / "pki", "registry-ca")
    cert = ca.issue("registry-proxy")
    secret = tmp_path / "secret" / "user-info"
    secret.parent.mkdir()
    secret.write_text(USER_INFO + "\n")
    records = [sample_record(i, "real-auth") for i in range(500)]
    with AuthProxy(apicurio.url, user_info=USER_INFO, tls=cert.server_context()) as proxy:
        writer = SchemaRegistryClient(
            {"url": proxy.url, "basic.auth.user.info": USER_INFO, "ssl.ca.location": str(ca.ca_pem)}
        )
        topic_hint = new_topic(kafka_bootstrap, 1, "real-auth")
        serializer = AvroSerializer(
            writer, json.dumps(writer_schemas()["current"]), conf={"auto.register.schemas": True}
        )
        ctx = SerializationContext(topic_hint, MessageField.VALUE)
        topic = new_topic(kafka_bootstrap, PARTITIONS, "real-auth-data")
        kafkautil.produce(
            kafka_bootstrap, topic, [(r["group_id"].encode(), serializer(r, ctx)) for r in records], PARTITIONS
        )
        outputs: list[str] = []
        stalls = {}
        for case, extra in {
            "no CA": {"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE": str(secret)},
            "no credentials": {"SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION": str(ca.ca_pem)},
        }.items():
            before = (proxy.tls_failures, proxy.refused)
            with TrackApi() as api:
                env = consumer_env(kafka_bootstrap, topic, api, SCHEMA_REGISTRY_URL=proxy.url, **extra)
                with ConsumerProcess(env, tmp_path / f"{case}.log") as proc:
                    wait_until(
                        lambda: proc.get("/readyz")[0] and proc.metrics().get(RETRIES, 0) >= 2,
                        60,
                        f"registry retries ({case})",
                        proc.logs,
                    )
                    ready = proc.get("/readyz")[0]
                    m = proc.metrics()
                    outputs.append(proc.get("/metrics")[1])
                    assert proc.stop(signal.SIGTERM) == 0
                    outputs.append(proc.logs())
            committed = kafkautil.committed_offsets(kafka_bootstrap, env["KAFKA_GROUP_ID"], topic, PARTITIONS)
            stalls[case] = {
                "delivered": api.count(),
                "dead_lettered": _dead(m),
                "registry_retries": m[RETRIES],
                "committed": sum(max(o, 0) for o in committed.values()),
                "readyz": ready,
                "tls_failures": proxy.tls_failures - before[0],
                "refused_401": proxy.refused - before[1],
            }
        env_extra = {
            "SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION": str(ca.ca_pem),
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE": str(secret),
        }
        with TrackApi() as api:
            env = consumer_env(kafka_bootstrap, topic, api, SCHEMA_REGISTRY_URL=proxy.url, **env_extra)
            with ConsumerProcess(env, tmp_path / "with-both.log") as proc:
                wait_until(lambda: api.count() >= len(records), 90, "every event with CA and credentials", proc.logs)
                wait_until(
                    lambda: fully_committed(kafka_bootstrap, env["KAFKA_GROUP_ID"], topic, PARTITIONS),
                    60,
                    "offsets",
                    proc.logs,
                )
                m = proc.metrics()
                outputs.append(proc.get("/metrics")[1])
                assert proc.stop() == 0
                outputs.append(proc.logs())
        delivered = {e["user_id"]: e for e in api.events}
    expected = {r["user_id"]: orjson.loads(orjson.dumps(_raw_event(r))) for r in records}
    exact = sum(delivered.get(u) == e for u, e in expected.items())
    leaks = [o for o in outputs if USER_INFO in o or USER_INFO.split(":")[1] in o]
    print(
        f"\nreal registry behind HTTPS + basic auth: {stalls}; with CA and credentials: {len(delivered)} of "
        f"{len(records)} delivered, {exact} identical to the raw path, dead-lettered {_dead(m):.0f}; "
        f"outputs containing the secret: {len(leaks)} of {len(outputs)}"
    )
    assert stalls["no CA"]["tls_failures"] > 0 and stalls["no credentials"]["refused_401"] > 0
    for figures in stalls.values():
        assert figures["delivered"] == 0 and figures["dead_lettered"] == 0 and figures["committed"] == 0
        assert figures["readyz"] == 503
    assert exact == len(records) and _dead(m) == 0
    assert leaks == []


def _raw_event(record: dict[str, Any]) -> dict[str, Any]:
    """The event the raw-Avro path makes of `record` (decode with the reader schema, then transform)."""
    from consumer.decode import RawDecoder, load_schema
    from consumer.transform import to_event

    return to_event(RawDecoder(load_schema()).decode(encode_raw(record)))
