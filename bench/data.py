"""Benchmark records: raw Avro values built from a pool of varied templates, produced fast.

Every value is the Avro binary of a `harness.records.sample_record` template whose
`user_id` is replaced by a fixed-width id that carries the record's index and its Kafka
timestamp:

    <tag:6>-<index:09d>-<kafka timestamp ms:013d>      e.g. b"k3f9a1-000001234-1761571234567"

`user_id` is the first field of the schema and Avro strings are length-prefixed, so with a
fixed width a value is `prefix + user_id + rest[template]`: no Avro encoding in the
produce loop. The sink reads the timestamp back out of the user_id, which gives an exact
Kafka-timestamp → sink-receipt latency per event without any lookup table.

Record `i` goes to partition `i % partitions`; with an idempotent producer on a fresh
topic its offset is `i // partitions`, which is how the backpressure phase maps committed
offsets back to user_ids.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Producer
from fastavro import parse_schema, schemaless_writer

from harness.records import reader_schema, sample_record

TAG_LEN = 6
UID_LEN = TAG_LEN + 1 + 9 + 1 + 13
TEMPLATES = 257  # distinct record shapes (nulls, empty arrays, description lengths vary)


def uid(tag: str, i: int, ts_ms: int) -> bytes:
    return b"%s-%09d-%013d" % (tag.encode(), i, ts_ms)


def uid_index(u: bytes) -> int:
    return int(u[TAG_LEN + 1 : TAG_LEN + 10])


def uid_ts(u: bytes) -> int:
    return int(u[-13:])


def _zigzag_long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass
class Templates:
    prefix: bytes  # the Avro length of the fixed-width user_id
    rests: list[bytes]  # each template's bytes after the user_id
    keys: list[bytes]  # each template's Kafka key (its group_id, as the contract says)

    @classmethod
    def build(cls, count: int = TEMPLATES) -> Templates:
        parsed = parse_schema(reader_schema())
        prefix = _zigzag_long(UID_LEN)
        rests, keys = [], []
        placeholder = "x" * UID_LEN
        for k in range(count):
            rec = sample_record(k, tag="bench")
            rec["user_id"] = placeholder
            buf = io.BytesIO()
            schemaless_writer(buf, parsed, rec)
            raw = buf.getvalue()
            head = prefix + placeholder.encode()
            assert raw.startswith(head), "user_id must be the first field"
            rests.append(raw[len(head) :])
            keys.append(rec["group_id"].encode())
        return cls(prefix, rests, keys)

    def value(self, tag: str, i: int, ts_ms: int) -> bytes:
        return self.prefix + uid(tag, i, ts_ms) + self.rests[i % len(self.rests)]

    def key(self, i: int) -> bytes:
        return self.keys[i % len(self.keys)]


def bulk_producer(bootstrap: str, linger_ms: int = 50) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,  # librdkafka's ceiling for one message set (message.max.bytes)
            "batch.num.messages": 100_000,
            "compression.type": "none",
            "acks": "all",
            "enable.idempotence": True,  # in-order, no duplicates: offset of record i is i // partitions
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )


class DeliveryErrors:
    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def __call__(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self.count += 1
            self.first = self.first or err.str()


def produce_backlog(
    bootstrap: str, topic: str, tpl: Templates, tag: str, start: int, count: int, partitions: int
) -> float:
    """Produce records start..start+count-1 as fast as the client goes; returns seconds until all acked."""
    producer = bulk_producer(bootstrap)
    errors = DeliveryErrors()
    produce = producer.produce
    prefix, rests, keys = tpl.prefix, tpl.rests, tpl.keys
    nt, nk = len(rests), len(keys)
    started = time.monotonic()
    for i in range(start, start + count):
        ts = int(time.time() * 1000)
        value = prefix + b"%s-%09d-%013d" % (tag.encode(), i, ts) + rests[i % nt]
        while True:
            try:
                produce(topic, value, keys[i % nk], i % partitions, errors, ts)
                break
            except BufferError:
                producer.poll(0.05)
        if not i & 1023:
            producer.poll(0)
    if producer.flush(120) != 0 or errors.count:
        raise RuntimeError(f"produce failed: {errors.count} errors ({errors.first}) or unacked after 120 s")
    return time.monotonic() - started


class PacedProducer:
    """Produce at a fixed rate (records/s) with the current time as timestamp, until stopped."""

    def __init__(
        self, bootstrap: str, topic: str, tpl: Templates, tag: str, start: int, partitions: int, linger_ms: int = 5
    ) -> None:
        self.producer = bulk_producer(bootstrap, linger_ms)
        self.topic, self.tpl, self.tag, self.partitions = topic, tpl, tag, partitions
        self.next_index = start
        self.errors = DeliveryErrors()

    def run(self, rate: float, seconds: float, should_stop: Callable[[], bool] = lambda: False) -> tuple[int, float]:
        """Returns (records produced, seconds taken)."""
        produce, tag, tpl = self.producer.produce, self.tag.encode(), self.tpl
        first = self.next_index
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds and not should_stop():
            due = first + int(rate * elapsed)
            while self.next_index < due:
                i = self.next_index
                ts = int(time.time() * 1000)
                value = tpl.prefix + b"%s-%09d-%013d" % (tag, i, ts) + tpl.rests[i % len(tpl.rests)]
                try:
                    produce(self.topic, value, tpl.keys[i % len(tpl.keys)], i % self.partitions, self.errors, ts)
                except BufferError:
                    break
                self.next_index += 1
            self.producer.poll(0)
            time.sleep(0.002)
        taken = time.monotonic() - started
        self.producer.flush(60)
        return self.next_index - first, taken
