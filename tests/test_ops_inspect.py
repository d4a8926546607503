"""`group-enriched-consumer inspect` on a real broker: the event it shows is the event the consumer sends."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from harness import kafkautil
from harness.process import ConsumerProcess
from harness.records import encode_confluent, encode_raw, reader_schema, sample_record
from harness.registry import SchemaRegistry
from harness.trackapi import TrackApi
from tests.ops_support import run_tool
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

POISON = b"\x02\xff not avro"


def event_lines(stdout: str) -> list[bytes]:
    return [line.removeprefix("  event: ").encode() for line in stdout.splitlines() if line.startswith("  event: ")]


def test_inspect_shows_byte_for_byte_the_event_the_consumer_sends(kafka_bootstrap: str, tmp_path: Path) -> None:
    """6 records (one undecodable, one tombstone) delivered by the real consumer with idempotency keys;
    `inspect --count 6` shows the 4 events byte for byte as the API received them, the dead letter's
    reason and message as the consumer wrote them, and the tombstone as skipped."""
    topic = new_topic(kafka_bootstrap, 1, "inspect")
    rows = [(f"key-{i}".encode(), encode_raw(sample_record(i, "insp"))) for i in range(4)]
    rows.insert(2, (b"poison", POISON))
    rows.append((b"gone", None))
    kafkautil.produce(kafka_bootstrap, topic, rows)
    with TrackApi() as api:
        env = consumer_env(kafka_bootstrap, topic, api, IDEMPOTENCY_KEY="true")
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            proc.wait_ready()
            wait_until(lambda: api.count() >= 4, 60, "4 events", proc.logs)
            group = env["KAFKA_GROUP_ID"]
            wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, 1), 60, "offsets at the end", proc.logs)
            assert proc.stop() == 0
        received = list(api.events)
    letters = kafkautil.read_all(kafka_bootstrap, topic + ".dlq", 1, timeout_s=10)

    human = run_tool(env, "inspect", "--partition", "0", "--offset", "0", "--count", "6")
    assert human.returncode == 0, human.stderr
    shown = event_lines(human.stdout)
    print(human.stdout[:600])
    assert len(shown) == 4
    assert shown == [orjson.dumps(e) for e in received]  # the exact bytes, idempotency keys included
    assert [orjson.loads(s) for s in shown] == received
    assert [orjson.loads(s)["context"]["idempotency_key"] for s in shown] == [f"{topic}/0/{o}" for o in (0, 1, 3, 4)]
    dead = [line for line in human.stdout.splitlines() if line.startswith("  dead letter: ")]
    assert dead == [f"  dead letter: decode_error: {letters[0].headers['dlq.error.message']}"]
    assert "  skipped: tombstone" in human.stdout

    as_json = run_tool(env, "inspect", "--partition", "0", "--offset", "2", "--count", "2", "--json")
    assert as_json.returncode == 0, as_json.stderr
    objects = [orjson.loads(line) for line in as_json.stdout.splitlines()]
    assert [(o["offset"], o["outcome"]) for o in objects] == [(2, "dead_letter"), (3, "event")]
    assert objects[0]["reason"] == "decode_error" and objects[0]["key"] == "poison"
    assert objects[1]["event"] == received[2] and objects[1]["avro"]["user_id"] == "insp-user-2"

    # The dead letter itself, on the dead-letter topic: its headers, and what it would become if redriven.
    dlq = run_tool(env, "inspect", "--topic", topic + ".dlq", "--partition", "0", "--offset", "0")
    assert dlq.returncode == 0, dlq.stderr
    assert "header dlq.reason: decode_error" in dlq.stdout and "dead letter: decode_error" in dlq.stdout

    out_of_range = run_tool(env, "inspect", "--partition", "0", "--offset", "99")
    assert out_of_range.returncode == 1
    assert "holds offsets 0 to 5; 99 is not among them" in out_of_range.stderr


def test_inspect_file_reads_confluent_framing_through_the_registry(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A value saved to a file, in Confluent framing: decoded with the writer schema from the registry."""
    record = sample_record(7, "file")
    with SchemaRegistry() as registry, TrackApi() as api:
        registry.register(42, reader_schema())
        env = consumer_env(kafka_bootstrap, "unused", api, SCHEMA_REGISTRY_URL=registry.url)
        framed = tmp_path / "value.bin"
        framed.write_bytes(encode_confluent(record, reader_schema(), 42))
        ok = run_tool(env, "inspect", "--file", str(framed), "--json")
        unknown = tmp_path / "unknown.bin"
        unknown.write_bytes(encode_confluent(record, reader_schema(), 43))
        bad = run_tool(env, "inspect", "--file", str(unknown))
    assert ok.returncode == 0, ok.stderr
    shown = orjson.loads(ok.stdout)
    assert shown["outcome"] == "event" and shown["event"]["user_id"] == "file-user-7"
    assert shown["avro"]["company"]["description"] == record["company"]["description"]
    assert bad.returncode == 0, bad.stderr
    assert "dead letter: decode_error: schema id 43 is unknown to the Schema Registry" in bad.stdout
    missing = run_tool(env, "inspect", "--file", str(tmp_path / "nope.bin"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
