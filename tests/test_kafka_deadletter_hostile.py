"""Dead letters under hostile conditions, on a real broker: oversized records, a dead-letter topic that refuses.

Each test builds its topics with the admin client (size limits as topic configs), runs the real
CLI as a child process against a loopback Track API stand-in, and prints a `DLQ ...` line of
figures (`pytest -s` shows them).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from harness import kafkautil
from harness.kafka import KafkaBroker
from harness.process import ConsumerProcess
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.support import consumer_env, wait_until

pytestmark = pytest.mark.integration

FAILED = "dead-letter write failed"  # the start of the log line a refused dead letter writes
STUCK = "group_enriched_dead_letters_stuck"
FAILURES = "group_enriched_dead_letter_failures_total"
TINY = "64"  # a dead-letter topic's max.message.bytes no dead letter fits, even without its value
DEFAULT_LIMIT = "1048588"  # the broker's default max.message.bytes


# ---- helpers ---------------------------------------------------------------------------------------


def report(name: str, **figures: object) -> None:
    print(f"\nDLQ {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def create_topic(bootstrap: str, name: str, partitions: int, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, config=config)])[name].result(timeout=30)


def set_max_message_bytes(bootstrap: str, topic: str, value: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("max.message.bytes", value, incremental_operation=AlterConfigOpType.SET)],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def topic_config(bootstrap: str, topic: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return entries[name].value


def produce(bootstrap: str, topic: str, rows: list[tuple[bytes, bytes, int]]) -> list[tuple[int, int]]:
    """Produce (key, value, partition) rows, values up to 8 MB; returns their (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20, "message.max.bytes": 8 << 20})
    positions: dict[int, tuple[int, int]] = {}

    def report_to(index: int):  # type: ignore[no-untyped-def]
        def cb(err: KafkaError | None, msg) -> None:  # type: ignore[no-untyped-def]
            assert err is None, err
            positions[index] = (msg.partition(), msg.offset())

        return cb

    for i, (key, value, partition) in enumerate(rows):
        producer.produce(topic, value=value, key=key, partition=partition, on_delivery=report_to(i))
        producer.poll(0)
    assert producer.flush(60) == 0
    return [positions[i] for i in range(len(rows))]


def good_rows(tag: str, n: int, partition: int) -> list[tuple[bytes, bytes, int]]:
    return [(f"{tag}-{i}".encode(), encode_raw(sample_record(i, tag)), partition) for i in range(n)]


def user_ids(rows: list[tuple[bytes, bytes, int]], tag: str) -> set[str]:
    return {f"{tag}-user-{i}" for i in range(len(rows))}


def delivered(api: TrackApi) -> Counter[str]:
    return Counter(e["user_id"] for e in list(api.events))


def alive(proc: ConsumerProcess) -> bool:
    return proc.proc is not None and proc.proc.poll() is None


def exited(proc: ConsumerProcess) -> str:
    code = proc.proc.poll() if proc.proc is not None else None
    return f"consumer exited with {code}:\n{proc.logs()[-3000:]}"


def stuck(proc: ConsumerProcess) -> float:
    """The stuck gauge; 0 when absent or when the process is gone."""
    status, _ = proc.get("/metrics")
    return proc.metrics().get(STUCK, 0) if status == 200 else 0


def refusing(proc: ConsumerProcess) -> bool:
    """The consumer has seen its dead letter refused (the stuck gauge, or a few failure lines)."""
    if not alive(proc):
        return True
    return stuck(proc) >= 1 or len(proc.log_entries(FAILED)) >= 3


def attempts(proc: ConsumerProcess) -> float:
    """Refused attempts so far: the failure metric, or the log lines where there is no metric."""
    failures = [v for k, v in proc.metrics().items() if k.startswith(FAILURES)]
    return sum(failures) if failures else len(proc.log_entries(FAILED))


# ---- item 3: oversized records -------------------------------------------------------------------------


@pytest.mark.parametrize("dlq", ["created", "existing_default_limit"])
def test_oversized_records_are_dead_lettered_not_fatal(kafka_bootstrap: str, tmp_path: Path, dlq: str) -> None:
    """A source topic holding 4 MB records: a 2 MB undecodable record and a valid 1.5 MB one among 198 good ones.

    `created`: the consumer creates the dead-letter topic to match the source; both dead letters keep
    their values. `existing_default_limit`: the dead-letter topic exists with the broker's default
    limit; both dead letters are written without their values (key and headers kept, the size said).
    """
    topic = f"big-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1, **{"max.message.bytes": str(4 << 20)})
    if dlq == "existing_default_limit":
        create_topic(kafka_bootstrap, topic + ".dlq", 1)
    rows = good_rows("big", 198, 0)
    garbage = os.urandom(2 << 20)
    huge = sample_record(1000, "big")
    huge["company"]["description"] = "x" * 1_500_000
    huge_value = encode_raw(huge)
    rows.insert(50, (b"huge-garbage", garbage, 0))
    rows.insert(120, (b"huge-valid", huge_value, 0))
    positions = produce(kafka_bootstrap, topic, rows)
    expected = {f"big-user-{i}" for i in range(198)}
    with TrackApi() as api:
        env = consumer_env(kafka_bootstrap, topic, api)
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            wait_until(
                lambda: not alive(proc) or expected <= delivered(api).keys(), 60, "the 198 good events", proc.logs
            )
            assert alive(proc), f"{len(expected & delivered(api).keys())} of 198 delivered; " + exited(proc)
            wait_until(
                lambda: not alive(proc) or kafkautil.committed_offsets(kafka_bootstrap, group, topic, 1) == {0: 200},
                60,
                "offsets at the end",
                proc.logs,
            )
            assert alive(proc), exited(proc)
            m = proc.metrics()
            code = proc.stop()
    letters = {d.key: d for d in kafkautil.read_all(kafka_bootstrap, topic + ".dlq", 3, timeout_s=5)}
    dlq_limit = topic_config(kafka_bootstrap, topic + ".dlq", "max.message.bytes")
    report(
        f"oversized_{dlq}",
        delivered=len(expected & delivered(api).keys()),
        exit_code=code,
        dead_letters=len(letters),
        dlq_max_message_bytes=dlq_limit,
        value_headers={k.decode(): {h: v for h, v in d.headers.items() if "value" in h} for k, d in letters.items()},
        value_sizes={k.decode(): None if d.value is None else len(d.value) for k, d in letters.items()},
    )
    assert code == 0
    assert set(letters) == {b"huge-garbage", b"huge-valid"}
    for key, value, reason in ((b"huge-garbage", garbage, "decode_error"), (b"huge-valid", huge_value, "rejected")):
        d = letters[key]
        partition, offset = positions[[r[0] for r in rows].index(key)]
        assert d.headers["dlq.reason"] == reason, d.headers
        assert d.headers["dlq.error.message"]
        assert d.headers["dlq.source.topic"] == topic
        assert (d.headers["dlq.source.partition"], d.headers["dlq.source.offset"]) == (str(partition), str(offset))
        if dlq == "created":
            assert d.value == value, f"{key!r}: value changed"
            assert "dlq.value.omitted" not in d.headers
        else:
            assert d.value is None
            assert d.headers["dlq.value.omitted"] == "too_large", d.headers
            assert d.headers["dlq.value.size"] == str(len(value)), d.headers
    if dlq == "created":
        assert int(dlq_limit) >= 4 << 20
    assert m['group_enriched_events_dead_lettered_total{reason="decode_error"}'] == 1
    assert m['group_enriched_events_dead_lettered_total{reason="rejected"}'] == 1


# ---- item 4: a dead-letter topic that refuses writes -----------------------------------------------------


def test_refused_dead_letter_pauses_its_partition_and_alerts(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The dead-letter topic refuses every write (max.message.bytes 64) while partition 0 holds a poison record.

    Expected: backoff and a throttled log line, the failure metric and stuck gauge, /readyz 503,
    partition 0 paused (records produced after the refusal are not delivered), partition 1 flowing
    and committed; once the limit is raised, the dead letter is stored and partition 0 catches up.
    """
    topic = f"refuse-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    create_topic(kafka_bootstrap, topic + ".dlq", 2, **{"max.message.bytes": TINY})
    with TrackApi() as api:
        env = consumer_env(kafka_bootstrap, topic, api, RETRY_BACKOFF_MAX_S="2")
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            warmup = good_rows("warm", 50, 0) + good_rows("warm1", 50, 1)
            produce(kafka_bootstrap, topic, warmup)
            warm = user_ids(warmup[:50], "warm") | user_ids(warmup[50:], "warm1")
            wait_until(lambda: warm <= delivered(api).keys(), 60, "the warm-up events", proc.logs)
            (poison_at,) = produce(kafka_bootstrap, topic, [(b"poison", b"\xff\x00 not avro", 0)])
            wait_until(lambda: refusing(proc), 60, "the dead letter refused", proc.logs)
            assert alive(proc), exited(proc)
            refused_at = time.monotonic()
            after0, after1 = good_rows("after0", 500, 0), good_rows("after1", 500, 1)
            produce(kafka_bootstrap, topic, after0 + after1)
            ends = kafkautil.end_offsets(kafka_bootstrap, topic, 2)
            wait_until(
                lambda: (
                    user_ids(after1, "after1") <= delivered(api).keys()
                    and kafkautil.committed_offsets(kafka_bootstrap, group, topic, 2)[1] == ends[1]
                ),
                60,
                "partition 1 delivered and committed",
                proc.logs,
            )
            # Several rounds of attempts (each refused whole, without value, without key), so a retry
            # loop shows in the log and the metric.
            wait_until(lambda: attempts(proc) >= 12, 60, "a dozen refusals", proc.logs)
            window_s = time.monotonic() - refused_at
            lines = proc.log_entries(FAILED)
            ready_while_stuck = proc.get("/readyz")[0]
            m = proc.metrics()
            committed = kafkautil.committed_offsets(kafka_bootstrap, group, topic, 2)
            delivered0 = len(user_ids(after0, "after0") & delivered(api).keys())
            failures = {k: v for k, v in m.items() if k.startswith(FAILURES)}
            report(
                "refused_running",
                window_s=round(window_s, 1),
                failure_log_lines=len(lines),
                lines_per_s=round(len(lines) / window_s, 2),
                readyz=ready_while_stuck,
                failures=failures,
                stuck=m.get(STUCK),
                delivered_p0_after_refusal=delivered0,
                delivered_p1_after_refusal=len(user_ids(after1, "after1") & delivered(api).keys()),
                committed=committed,
                ends=ends,
                poison_at=poison_at,
            )
            assert ready_while_stuck == 503
            assert sum(failures.values()) >= 1 and m[STUCK] == 1
            assert delivered0 == 0, "partition 0 kept being read past a stuck dead letter"
            assert committed == {0: poison_at[1], 1: ends[1]}
            assert len(lines) <= 2, f"{len(lines)} failure lines in {window_s:.1f} s"

            # The limit is raised: the dead letter goes through at the next attempt, partition 0 resumes.
            fixed_at = time.monotonic()
            set_max_message_bytes(kafka_bootstrap, topic + ".dlq", DEFAULT_LIMIT)
            wait_until(
                lambda: kafkautil.committed_offsets(kafka_bootstrap, group, topic, 2) == ends,
                60,
                "every offset committed after the limit was raised",
                proc.logs,
            )
            recovered_s = time.monotonic() - fixed_at
            wait_until(lambda: proc.get("/readyz")[0] == 200, 30, "ready again", proc.logs)
            m = proc.metrics()
            assert proc.stop() == 0
    letters = kafkautil.read_all(kafka_bootstrap, topic + ".dlq", 2, timeout_s=5)
    counts = delivered(api)
    report("refused_recovered", seconds_to_commit=round(recovered_s, 1), stuck=m[STUCK], dead_letters=len(letters))
    assert m[STUCK] == 0
    assert [(d.key, d.value) for d in letters] == [(b"poison", b"\xff\x00 not avro")]
    assert user_ids(after0, "after0") | user_ids(after1, "after1") <= counts.keys()
    assert max(counts.values()) == 1, "a record was delivered twice"


def test_shutdown_gives_up_on_a_refused_dead_letter(kafka_bootstrap: str, tmp_path: Path) -> None:
    """SIGTERM while a dead letter is refused: exit 0 promptly, nothing committed past the record, no log flood."""
    topic = f"refuse-stop-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1)
    create_topic(kafka_bootstrap, topic + ".dlq", 1, **{"max.message.bytes": TINY})
    rows = good_rows("stop", 100, 0)
    rows.insert(50, (b"poison", b"\xff\x00 not avro", 0))
    positions = produce(kafka_bootstrap, topic, rows)
    poison_offset = positions[50][1]
    with TrackApi() as api:
        env = consumer_env(kafka_bootstrap, topic, api, SHUTDOWN_TIMEOUT_S="40", RETRY_BACKOFF_MAX_S="2")
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            wait_until(lambda: refusing(proc), 60, "the dead letter refused", proc.logs)
            assert alive(proc), exited(proc)
            lines_before = len(proc.log_entries(FAILED))
            stop_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.stop(timeout_s=120)
            stop_s = time.monotonic() - stop_at
            lines_during_stop = len(proc.log_entries(FAILED)) - lines_before
    committed = kafkautil.committed_offsets(kafka_bootstrap, group, topic, 1)
    report(
        "refused_shutdown",
        exit_code=code,
        seconds_to_exit=round(stop_s, 1),
        failure_lines_during_stop=lines_during_stop,
        committed=committed,
        poison_offset=poison_offset,
    )
    assert code == 0
    assert committed == {0: poison_offset}
    assert lines_during_stop <= 1
    assert stop_s < 20, "shutdown spent its drain budget on a refused dead letter"


def test_deleted_dead_letter_topic_holds_its_partition_until_recreated(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The dead-letter topic is deleted mid-run, then a poison record arrives on partition 0.

    Expected: once librdkafka gives up (message.timeout.ms), the dead letter is stuck: metric,
    /readyz 503, partition 0 held, partition 1 flowing. Recreated, the topic takes the dead letter
    at the next attempt and every offset reaches the end.
    """
    topic = f"deleted-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    with TrackApi() as api:
        env = consumer_env(kafka_bootstrap, topic, api, RETRY_BACKOFF_MAX_S="2")
        group = env["KAFKA_GROUP_ID"]
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()  # the consumer created the dead-letter topic
            assert kafkautil.topic_exists(kafka_bootstrap, topic + ".dlq")
            admin.delete_topics([topic + ".dlq"])[topic + ".dlq"].result(timeout=30)
            wait_until(lambda: not kafkautil.topic_exists(kafka_bootstrap, topic + ".dlq"), 30, "the DLQ deleted")
            deleted_at = time.monotonic()
            (poison_at,) = produce(kafka_bootstrap, topic, [(b"poison", b"\xff\x00 not avro", 0)])
            wait_until(
                lambda: not alive(proc) or stuck(proc) >= 1 or proc.log_entries(FAILED),
                120,
                "the dead letter refused",
                proc.logs,
            )
            assert alive(proc), exited(proc)
            refused_s = time.monotonic() - deleted_at
            after1 = good_rows("del1", 200, 1)
            produce(kafka_bootstrap, topic, after1)
            wait_until(lambda: user_ids(after1, "del1") <= delivered(api).keys(), 60, "partition 1 flowing", proc.logs)
            readyz = proc.get("/readyz")[0]
            m = proc.metrics()
            failures = {k: v for k, v in m.items() if k.startswith(FAILURES) and v}
            after0 = good_rows("del0", 200, 0)
            produce(kafka_bootstrap, topic, after0)
            ends = kafkautil.end_offsets(kafka_bootstrap, topic, 2)
            wait_until(
                lambda: kafkautil.committed_offsets(kafka_bootstrap, group, topic, 2)[1] == ends[1],
                60,
                "partition 1 committed",
                proc.logs,
            )
            delivered0 = len(user_ids(after0, "del0") & delivered(api).keys())
            report(
                "deleted_topic_stuck",
                seconds_to_refusal=round(refused_s, 1),
                readyz=readyz,
                failures=failures,
                stuck=m.get(STUCK),
                delivered_p0_after_refusal=delivered0,
                failure_log_lines=len(proc.log_entries(FAILED)),
            )
            assert readyz == 503
            assert m[STUCK] == 1 and sum(failures.values()) >= 1
            assert delivered0 == 0
            recreated_at = time.monotonic()
            create_topic(kafka_bootstrap, topic + ".dlq", 2)
            wait_until(
                lambda: kafkautil.committed_offsets(kafka_bootstrap, group, topic, 2) == ends,
                60,
                "every offset committed after the topic came back",
                proc.logs,
            )
            recovered_s = time.monotonic() - recreated_at
            wait_until(lambda: proc.get("/readyz")[0] == 200, 30, "ready again", proc.logs)
            assert proc.stop() == 0
    letters = kafkautil.read_all(kafka_bootstrap, topic + ".dlq", 2, timeout_s=5)
    report("deleted_topic_recovered", seconds_to_commit=round(recovered_s, 1), dead_letters=len(letters))
    assert [(d.key, d.headers["dlq.source.offset"]) for d in letters] == [(b"poison", str(poison_at[1]))]
    assert user_ids(after0, "del0") | user_ids(after1, "del1") <= delivered(api).keys()


def test_dead_letter_write_denied_by_acl_then_allowed(tmp_path: Path) -> None:
    """A broker with an authorizer: Write on the dead-letter topic is denied mid-run, then allowed again.

    Everyone may do anything where no ACL names a resource; the test gives the dead-letter topic an
    ALLOW-all ACL plus a DENY Write one, for the consumer's principal (User:ANONYMOUS on PLAINTEXT).
    """
    broker = KafkaBroker(
        tmp_path / "kafka-acl",
        extra_props={
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "true",
        },
    )
    broker.start(timeout=120)
    try:
        bootstrap = broker.bootstrap
        topic = f"acl-{uuid.uuid4().hex[:8]}"
        dlq = topic + ".dlq"
        create_topic(bootstrap, topic, 1)
        create_topic(bootstrap, dlq, 1)
        admin = AdminClient({"bootstrap.servers": bootstrap})

        def acl(operation: AclOperation, permission: AclPermissionType) -> AclBinding:
            return AclBinding(
                ResourceType.TOPIC, dlq, ResourcePatternType.LITERAL, "User:ANONYMOUS", "*", operation, permission
            )

        allow_all = acl(AclOperation.ALL, AclPermissionType.ALLOW)
        deny_write = acl(AclOperation.WRITE, AclPermissionType.DENY)
        with TrackApi() as api:
            env = consumer_env(bootstrap, topic, api, RETRY_BACKOFF_MAX_S="2")
            group = env["KAFKA_GROUP_ID"]
            with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
                proc.wait_ready()
                for future in admin.create_acls([allow_all, deny_write]).values():
                    future.result(timeout=30)
                rows = good_rows("acl", 20, 0)
                rows.insert(10, (b"poison", b"\xff\x00 not avro", 0))
                positions = produce(bootstrap, topic, rows)
                wait_until(lambda: refusing(proc), 90, "the dead letter refused", proc.logs)
                assert alive(proc), exited(proc)
                readyz = proc.get("/readyz")[0]
                m = proc.metrics()
                failures = {k: v for k, v in m.items() if k.startswith(FAILURES) and v}
                poison_offset = positions[10][1]
                wait_until(
                    lambda: kafkautil.committed_offsets(bootstrap, group, topic, 1)[0] >= poison_offset,
                    60,
                    "the records before the poison committed",
                    proc.logs,
                )
                committed = kafkautil.committed_offsets(bootstrap, group, topic, 1)
                report(
                    "acl_denied",
                    readyz=readyz,
                    failures=failures,
                    stuck=m.get(STUCK),
                    committed=committed,
                    failure_log_lines=len(proc.log_entries(FAILED)),
                )
                assert readyz == 503
                assert failures.get(f'{FAILURES}{{error="not_authorized"}}', 0) >= 1, failures
                assert committed == {0: poison_offset}
                deny_filter = AclBindingFilter(
                    ResourceType.TOPIC,
                    dlq,
                    ResourcePatternType.LITERAL,
                    "User:ANONYMOUS",
                    "*",
                    AclOperation.WRITE,
                    AclPermissionType.DENY,
                )
                for future in admin.delete_acls([deny_filter]).values():
                    future.result(timeout=30)
                wait_until(
                    lambda: kafkautil.committed_offsets(bootstrap, group, topic, 1) == {0: len(rows)},
                    60,
                    "every offset committed once Write was allowed",
                    proc.logs,
                )
                wait_until(lambda: proc.get("/readyz")[0] == 200, 30, "ready again", proc.logs)
                assert proc.stop() == 0
        letters = kafkautil.read_all(bootstrap, dlq, 2, timeout_s=5)
        assert [d.key for d in letters] == [b"poison"]
        assert user_ids(rows[:10] + rows[11:], "acl") <= delivered(api).keys()
    finally:
        broker.stop()
