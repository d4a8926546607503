"""The consumer's main loop without I/O: the ceiling's work plus the consumer's bookkeeping.

    python -m bench.mainloop N      (consumer settings from the environment; Kafka is not read)

Builds the same N raw Avro values the broker holds as in-memory `confluent_kafka.Message`s
over 8 partitions, and feeds them 1,000 at a time (`consume()`'s batch size) through the
consumer's own `App._convert`: decode, map, encode, offset tracking, batching. A closed batch
is acked through `App._apply` once 8 more are waiting, as if each had been delivered by one of
8 requests in flight. No Kafka fetch, no HTTP, no threads. Prints one JSON line: events,
seconds, main-thread CPU seconds.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import deque

import orjson
from confluent_kafka import Message

from bench.data import Templates
from bench.env import PARTITIONS
from bench.nohttp import ack_as_delivered
from consumer import config
from consumer.app import CONSUME_MAX, App
from consumer.batcher import Batch

IN_FLIGHT = 8


def main() -> int:
    n = int(sys.argv[1])
    tpl = Templates.build()
    now_ms = int(time.time() * 1000)
    messages = [
        Message(
            topic="bench",
            partition=i % PARTITIONS,
            offset=i // PARTITIONS,
            value=tpl.value("mainlp", i, now_ms),
            key=None,
            timestamp=(1, now_ms),
        )
        for i in range(n)
    ]
    gc.freeze()  # the consumer never holds N messages: keep them out of every collection
    settings, overrides = config.load()
    app = App(settings, overrides)
    for partition in range(PARTITIONS):
        app.tracker.assign(partition)
    delivering: deque[Batch] = deque()
    started, cpu = time.perf_counter(), time.thread_time()
    for i in range(0, n, CONSUME_MAX):
        app._convert(messages[i : i + CONSUME_MAX], time.monotonic())
        while app.ready:
            delivering.append(app.ready.popleft())
        while len(delivering) > IN_FLIGHT:
            ack_as_delivered(app, delivering.popleft())
    seconds, cpu = time.perf_counter() - started, time.thread_time() - cpu
    print(orjson.dumps({"events": n, "seconds": seconds, "cpu": cpu}).decode(), flush=True)
    app.server.shutdown()
    app.delivery.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
