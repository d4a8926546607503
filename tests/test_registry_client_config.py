"""Schema Registry behind basic auth / a bearer token and a private CA: SCHEMA_REGISTRY_CFG_* and secret files.

The registry stand-in sits behind `harness.authproxy` (HTTPS with a throwaway CA, 401 without
the right credentials). The secret file starts wrong: the consumer stalls (nothing delivered,
nothing dead-lettered, nothing committed past the records); the file is replaced, as a
Kubernetes Secret is, and every record is delivered. No secret in the log.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import kafkautil
from harness.authproxy import AuthProxy
from harness.certs import CertAuthority
from harness.process import ConsumerProcess
from harness.records import encode_confluent, reader_schema, sample_record
from harness.registry import SchemaRegistry
from harness.trackapi import TrackApi
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 2
SECRETS = {
    "basic": ("sr-user:wrong-pw-0000", "sr-user:right-pw-5678"),
    "bearer": ("wrong-bearer-0000", "right-bearer-5678"),
}


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_registry_behind_auth_and_private_ca_stalls_then_delivers(
    kafka_bootstrap: str, tmp_path: Path, auth: str
) -> None:
    wrong, right = SECRETS[auth]
    ca = CertAuthority(tmp_path / "pki", "registry-ca")
    cert = ca.issue("registry")
    topic = new_topic(kafka_bootstrap, PARTITIONS, prefix=f"srauth-{auth}")
    records = [sample_record(i, f"srauth-{auth}") for i in range(300)]
    secret = tmp_path / "secret" / "value"
    secret.parent.mkdir()
    secret.write_text(wrong + "\n")
    with SchemaRegistry() as registry, TrackApi() as api:
        schema_id = registry.register(7, reader_schema())
        rows = [(r["group_id"].encode(), encode_confluent(r, reader_schema(), schema_id)) for r in records]
        kafkautil.produce(kafka_bootstrap, topic, rows, PARTITIONS)
        kind = {"user_info": right} if auth == "basic" else {"bearer": right}
        with AuthProxy(registry.url, tls=cert.server_context(), **kind) as proxy:
            extra = {
                "SCHEMA_REGISTRY_URL": proxy.url,
                "SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION": str(ca.ca_pem),
            }
            if auth == "basic":
                extra["SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE"] = str(secret)
            else:
                extra["SCHEMA_REGISTRY_BEARER_AUTH_TOKEN_FILE"] = str(secret)
                extra["SCHEMA_REGISTRY_CFG_BEARER_AUTH_LOGICAL_CLUSTER"] = "lsrc-test"
            env = consumer_env(kafka_bootstrap, topic, api, **extra)
            group = env["KAFKA_GROUP_ID"]
            with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
                wait_until(lambda: proxy.refused >= 2, 60, "the registry refusing the wrong secret twice", proc.logs)
                m = proc.metrics()
                stalled = {
                    "delivered": api.count(),
                    "dead_lettered": sum(
                        v for k, v in m.items() if k.startswith("group_enriched_events_dead_lettered_total")
                    ),
                    "registry_retries": m.get('group_enriched_retries_total{reason="schema_registry"}', 0),
                    "refused": proxy.refused,
                    "tls_failures": proxy.tls_failures,
                }
                fresh = secret.with_name(".value.new")
                fresh.write_text(right + "\n")
                os.replace(fresh, secret)
                wait_until(lambda: api.count() >= len(records), 60, "every event after rotation", proc.logs)
                wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 60, "offsets", proc.logs)
                m = proc.metrics()
                assert proc.stop() == 0, proc.logs()[-2000:]
                logs = proc.logs()
    print(
        f"\nregistry {auth} + private CA: while wrong {stalled}; after rotation {api.count()} delivered, "
        f"proxy answers {sorted(set(proxy.statuses))}"
    )
    assert stalled["delivered"] == 0 and stalled["dead_lettered"] == 0 and stalled["tls_failures"] == 0
    assert stalled["registry_retries"] >= 1
    assert {e["user_id"] for e in api.events} == {r["user_id"] for r in records}
    assert sum(v for k, v in m.items() if k.startswith("group_enriched_events_dead_lettered_total")) == 0
    for s in (*SECRETS[auth], right.split(":")[-1], wrong.split(":")[-1]):
        assert s not in logs, "a registry secret reached the log"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCHEMA_REGISTRY_CFG_NO_SUCH_PROPERTY", "1"),
        ("SCHEMA_REGISTRY_CFG_MAX_RETRIES", "many"),
        ("SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
        ("SCHEMA_REGISTRY_CFG_BEARER_AUTH_CREDENTIALS_SOURCE", "NOT_A_SOURCE"),
    ],
)
def test_bad_registry_property_exits_2_naming_it(kafka_bootstrap: str, tmp_path: Path, name: str, value: str) -> None:
    with TrackApi() as api:
        topic = new_topic(kafka_bootstrap, 1, prefix="srcfg")
        env = consumer_env(kafka_bootstrap, topic, api, SCHEMA_REGISTRY_URL="http://127.0.0.1:9", **{name: value})
        proc = ConsumerProcess(env, tmp_path / "consumer.log").start()
        try:
            wait_until(lambda: proc.proc is not None and proc.proc.poll() is not None, 30, "exit", proc.logs)
        finally:
            proc.kill()
        code = proc.proc.returncode if proc.proc else None
        errors = [line for line in proc.logs().splitlines() if '"level":"error"' in line]
    assert code == 2, proc.logs()[-1500:]
    assert len(errors) == 1 and name in errors[0], errors
