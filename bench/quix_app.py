"""The same job written idiomatically with Quix Streams (pinned in bench/requirements-quix.txt).

    python bench/quix_app.py BOOTSTRAP TOPIC GROUP URL TOKEN COMMIT_INTERVAL_S

Runs in its own virtualenv (.cache/bench-venv): Quix Streams 3.28.1 pins
confluent-kafka < 2.13, the consumer pins 2.16.1. The repository root is on PYTHONPATH
for `consumer.transform` (pure, stdlib only) and `consumer.decode` (fastavro).

Values are decoded by a custom Deserializer with fastavro (the consumer's RawDecoder),
mapped with `to_event`, and delivered by a BatchingSink: Quix hands it the records of
each topic-partition at every checkpoint (every `commit_interval`), it POSTs them as JSON
arrays of at most 500 events, and Quix commits the offsets after `write()` returns.
Prints `BENCH_START <epoch ms>` when the first value is deserialized.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
import orjson
from quixstreams import Application
from quixstreams.models import Deserializer, SerializationContext
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from consumer.decode import RawDecoder, load_schema
from consumer.transform import to_event

MAX_EVENTS = 500  # per POST, as BATCH_MAX_EVENTS


class AvroValue(Deserializer):
    def __init__(self) -> None:
        super().__init__()
        self._decoder = RawDecoder(load_schema())
        self._started = False

    def __call__(self, value: bytes, ctx: SerializationContext) -> dict[str, Any]:
        if not self._started:
            self._started = True
            print(f"BENCH_START {int(time.time() * 1000)}", flush=True)
        return self._decoder.decode(value)


class TrackApiSink(BatchingSink):
    def __init__(self, url: str, token: str) -> None:
        super().__init__()
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.client: httpx.Client | None = None

    def setup(self) -> None:
        self.client = httpx.Client(timeout=10)

    def write(self, batch: SinkBatch) -> None:
        assert self.client is not None
        for chunk in batch.iter_chunks(MAX_EVENTS):
            body = orjson.dumps([item.value for item in chunk])
            try:
                response = self.client.post(self.url, content=body, headers=self.headers)
            except httpx.HTTPError:
                raise SinkBackpressureError(retry_after=1.0) from None
            if response.status_code == 429 or response.status_code >= 500:
                raise SinkBackpressureError(retry_after=float(response.headers.get("Retry-After", 1)))
            response.raise_for_status()


def main() -> int:
    bootstrap, topic_name, group, url, token, commit_interval = sys.argv[1:7]
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=float(commit_interval),
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    topic = app.topic(topic_name, value_deserializer=AvroValue(), key_deserializer="bytes")
    sdf = app.dataframe(topic)
    sdf = sdf.apply(to_event)
    sdf.sink(TrackApiSink(url, token))
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
