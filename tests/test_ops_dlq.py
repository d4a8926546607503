"""`dlq stats | list | redrive` on a real broker: exactly once across SIGKILL, attempts, --max-attempts."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.ops.dlq import FAILPOINT_ENV
from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.ops_support import read_topic, run_tool, start_tool
from tests.support import consumer_env, new_topic, wait_until

pytestmark = pytest.mark.integration


def summary(stdout: str) -> dict[str, str]:
    """The redrive's summary lines: label → the rest ('9  rejected=9')."""
    lines = stdout.split("\nsummary", 1)[1].splitlines()[1:]
    out = {}
    for line in lines:
        label, rest = line[:21].strip(), line[21:].strip()
        out[label] = rest
    return out


def test_redrive_killed_with_sigkill_halfway_then_run_again_is_exactly_once(kafka_bootstrap: str) -> None:
    """45 dead letters on 2 partitions, 40 rejected and 5 decode_error among them. `redrive --reason rejected`
    in transactions of 5 is SIGKILLed inside its third transaction (its records already in the log); the re-run
    fences and aborts it and resumes. Counted by source coordinates: each of the 40 exactly once, none of the
    5 left out; a later `--reason decode_error` still finds those 5, and the same command again finds nothing."""
    source = new_topic(kafka_bootstrap, 2, "redrive")
    dlq = source + ".dlq"
    kafkautil.create_topic(kafka_bootstrap, dlq, 2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    reasons = {}
    for i in range(45):
        reason = "decode_error" if i % 9 == 4 else "rejected"
        partition, offset = i % 2, 1000 + i
        reasons[(partition, offset)] = reason
        headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.error.message", b"refused by the API" if reason == "rejected" else b"Avro decoding failed"),
            ("dlq.source.topic", source.encode()),
            ("dlq.source.partition", str(partition).encode()),
            ("dlq.source.offset", str(offset).encode()),
            ("trace-id", f"trace-{i}".encode()),
        ]
        value = encode_raw(sample_record(i, "dl"))
        producer.produce(dlq, key=f"key-{i}".encode(), value=value, headers=headers, partition=partition)
    assert producer.flush(30) == 0
    rejected = {c for c, r in reasons.items() if r == "rejected"}
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": source,
        "KAFKA_GROUP_ID": f"{source}-group",
        "TRACK_API_TOKEN": "unused",
    }
    args = ("dlq", "redrive", "--reason", "rejected", "--transaction-size", "5")

    killed = start_tool({**env, FAILPOINT_ENV: "redrive.before_commit:3"}, *args)
    assert killed.stderr is not None
    lines = []
    for line in killed.stderr:  # waits for the failpoint: two transactions committed, the third open
        lines.append(line)
        if "failpoint" in line:
            break
    assert any("transaction 2 committed" in line for line in lines), lines
    killed.send_signal(signal.SIGKILL)
    out, _ = killed.communicate(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    group = out.split("progress group ")[1].split(";")[0]
    # A stable read would wait for the open transaction; the offsets committed before it are 2 x 5.
    peek = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "isolation.level": "read_uncommitted"})
    after_kill = {tp.partition: tp.offset for tp in peek.committed([TopicPartition(dlq, p) for p in (0, 1)], 10)}
    peek.close()
    assert sum(max(o, 0) for o in after_kill.values()) == 10, after_kill

    rerun = run_tool(env, *args)
    print(rerun.stdout)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming with 35 dead letters to examine" in rerun.stdout

    committed = read_topic(kafka_bootstrap, source)
    by_source = Counter((r.partition, 1000 + int(r.headers["trace-id"].removeprefix("trace-"))) for r in committed)
    in_log = read_topic(kafka_bootstrap, source, "read_uncommitted")
    print(f"committed {len(committed)}, in the log {len(in_log)} (the killed transaction's records aborted)")
    assert set(by_source) == rejected, sorted(set(by_source) ^ rejected)  # nothing missed, no decode_error
    assert max(by_source.values()) == 1  # no duplicates
    assert len(in_log) > len(committed)  # the kill landed inside a transaction whose records were written
    first = committed[0]
    assert first.headers["dlq.attempts"] == "1" and set(first.headers) == {
        "trace-id",
        "dlq.redrive.from",
        "dlq.attempts",
    }
    assert all(r.partition == int(r.headers["dlq.redrive.from"].split("/")[1]) for r in committed)  # same partition
    assert kafkautil.committed_offsets(kafka_bootstrap, group, dlq, 2) == kafkautil.end_offsets(kafka_bootstrap, dlq, 2)

    copy = new_topic(kafka_bootstrap, 1, "scratch")
    scratch = run_tool(env, "dlq", "redrive", "--reason", "decode_error", "--to", copy)
    assert summary(scratch.stdout)["redriven"] == "5  decode_error=5", scratch.stdout + scratch.stderr
    assert len(read_topic(kafka_bootstrap, copy)) == 5
    other = run_tool(env, "dlq", "redrive", "--reason", "decode_error")  # a copy elsewhere is not a redrive
    assert other.returncode == 0, other.stderr
    assert summary(other.stdout)["redriven"] == "5  decode_error=5"
    again = run_tool(env, *args)
    assert summary(again.stdout)["redriven"] == "0" and "resuming with 0 dead letters" in again.stdout
    everything = run_tool(env, "dlq", "redrive")  # another selection: the ledger knows all 45 were redriven
    assert summary(everything.stdout)["redriven"] == "0"
    assert summary(everything.stdout)["already redriven"] == "45"
    assert len(read_topic(kafka_bootstrap, source)) == 45


def test_records_that_fail_again_carry_attempts_until_max_attempts(kafka_bootstrap: str, tmp_path: Path) -> None:
    """3 of 10 records are refused by the API (400). The real consumer dead-letters them with their own headers;
    two redrives fail again (dead letters with dlq.attempts 2, then 3), the third skips all 3 (max attempts 3).
    Once the API accepts them, `--max-attempts 4` redrives only the 3 newest dead letters: each event arrives
    once. `dlq stats` and `dlq list` show it all along the way."""
    topic = new_topic(kafka_bootstrap, 1, "attempts")
    records = [sample_record(i, "att") for i in range(10)]
    bad = {"att-user-2", "att-user-5", "att-user-8"}
    refuse = {"on": True}
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    for i, r in enumerate(records):
        producer.produce(topic, key=f"key-{i}".encode(), value=encode_raw(r), headers=[("trace-id", f"t{i}".encode())])
    assert producer.flush(30) == 0

    def respond(events: list[dict[str, Any]], _h: dict[str, str]) -> tuple[int, dict[str, str]] | None:
        return (400, {}) if refuse["on"] and any(e["user_id"] in bad for e in events) else None

    dlq = topic + ".dlq"
    with TrackApi(respond=respond) as api:
        env = consumer_env(kafka_bootstrap, topic, api)
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()

            def dead_letters(n: int) -> list[Any]:
                wait_until(lambda: len(read_topic(kafka_bootstrap, dlq)) >= n, 60, f"{n} dead letters", proc.logs)
                return read_topic(kafka_bootstrap, dlq)

            first = dead_letters(3)
            assert api.wait_for(7, 60)
            runs = []
            for expected_total in (6, 9):
                runs.append(run_tool(env, "dlq", "redrive"))
                letters = dead_letters(expected_total)
            runs.append(run_tool(env, "dlq", "redrive"))
            stats = run_tool(env, "dlq", "stats", "--json")
            listed = run_tool(env, "dlq", "list", "--reason", "rejected", "--json")
            refuse["on"] = False
            runs.append(run_tool(env, "dlq", "redrive", "--max-attempts", "4"))
            wait_until(lambda: api.count() >= 10, 60, "the 3 events delivered", proc.logs)
            assert proc.stop() == 0
        sent = Counter(e["user_id"] for e in api.events)
    for run in runs:
        print(run.stdout)
        assert run.returncode == 0, run.stderr
    assert [summary(r.stdout)["redriven"] for r in runs] == ["3  rejected=3", "3  rejected=3", "0", "3  rejected=3"]
    assert summary(runs[2].stdout)["skipped"] == "3  max_attempts=3"
    assert summary(runs[3].stdout)["already redriven"] == "6"

    assert {d.headers["trace-id"] for d in first} == {"t2", "t5", "t8"}  # the record's own headers ride along
    assert "dlq.attempts" not in first[0].headers
    by_attempts = Counter(d.headers.get("dlq.attempts", "1") for d in letters)
    assert by_attempts == {"1": 3, "2": 3, "3": 3}
    for d in letters[3:]:
        assert d.headers["dlq.redrive.from"].startswith(dlq + "/") and d.headers["dlq.reason"] == "rejected"
        assert d.headers["trace-id"] in {"t2", "t5", "t8"}
    assert sent == Counter({r["user_id"]: 1 for r in records})  # every event once, the 3 redriven included

    s = orjson.loads(stats.stdout)
    print(stats.stdout)
    assert (s["total"], s["by_reason"], s["by_attempts"]) == (9, {"rejected": 9}, {"1": 3, "2": 3, "3": 3})
    assert s["by_source_partition"] == {f"{topic}/0": 9}
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 9 and {r["http_status"] for r in rows} == {400}
    assert sorted(r["attempts"] for r in rows) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
