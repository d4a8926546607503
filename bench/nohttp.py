"""Consumer x1 without its HTTP delivery: every batch is acked on the main thread as it closes.

    python -m bench.nohttp N        (consumer settings from the environment, like the consumer)

The consumer as shipped, reading the real topic and committing, except that `App._dispatch`
acks a ready batch at once instead of handing it to a delivery thread. What remains is Kafka
fetch + the main loop; what it gains over consumer x1 is what delivering over HTTP from
threads of the same process costs. When N records are consumed it prints one JSON line
(events, seconds from the first record, main-thread CPU seconds) and exits.
"""

from __future__ import annotations

import os
import sys
import time

import orjson
from confluent_kafka import Message

from consumer import app as app_module
from consumer.batcher import Batch
from consumer.cli import main as consumer_main
from consumer.delivery import Outcome


def ack_as_delivered(app: app_module.App, batch: Batch) -> None:
    """What `App._collect` does with a delivered batch's outcome, without the request."""
    app.in_batches -= len(batch.items)
    app._apply(Outcome(batch, delivered=list(batch.items)))


def main() -> int:
    n = int(sys.argv[1])
    clock = {"count": 0, "started": 0.0, "cpu": 0.0}
    convert = app_module.App._convert

    def timed_convert(self: app_module.App, messages: list[Message], now: float) -> None:
        if messages and not clock["started"]:
            clock["started"], clock["cpu"] = time.perf_counter(), time.thread_time()
        convert(self, messages, now)
        clock["count"] += len(messages)
        if clock["count"] >= n:
            seconds, cpu = time.perf_counter() - clock["started"], time.thread_time() - clock["cpu"]
            print(orjson.dumps({"events": clock["count"], "seconds": seconds, "cpu": cpu}).decode(), flush=True)
            os._exit(0)

    def dispatch(self: app_module.App) -> None:
        while self.ready:
            ack_as_delivered(self, self.ready.popleft())

    app_module.App._convert = timed_convert  # type: ignore[method-assign]
    app_module.App._dispatch = dispatch  # type: ignore[method-assign]
    return consumer_main([])


if __name__ == "__main__":
    sys.exit(main())
