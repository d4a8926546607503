"""The job as a user might first write it: one message at a time, one POST per event, a sync commit each.

    python -m bench.naive BOOTSTRAP TOPIC GROUP URL TOKEN

Runs until SIGTERM/SIGINT. Prints `BENCH_START <epoch ms>` when the first message arrives,
so the benchmark can time it from the start of consumption.
"""

from __future__ import annotations

import io
import signal
import sys
import time

import httpx
from confluent_kafka import Consumer
from fastavro import parse_schema, schemaless_reader

from consumer.decode import load_schema
from consumer.transform import to_event


def main() -> int:
    bootstrap, topic, group, url, token = sys.argv[1:6]
    schema = parse_schema(load_schema())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = False
    headers = {"Authorization": f"Bearer {token}"}
    while running:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        if not started:
            print(f"BENCH_START {int(time.time() * 1000)}", flush=True)
            started = True
        record = schemaless_reader(io.BytesIO(message.value()), schema, None)
        event = to_event(record)
        response = httpx.post(url, json=[event], headers=headers)
        response.raise_for_status()
        consumer.commit(message, asynchronous=False)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
