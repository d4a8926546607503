"""The main job end to end on a laptop: `make demo` (or `python -m harness.demo`).

Starts a local Kafka broker (or uses $KAFKA_BOOTSTRAP_SERVERS), a Track API stand-in
that prints what it receives, produces sample records (the Track API page's seed sample
first, one undecodable record and one tombstone among them), runs the real
`group-enriched-consumer` until every event arrived, stops it with SIGTERM and prints a
summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from harness import kafkautil
from harness.kafka import KafkaBroker
from harness.process import ConsumerProcess
from harness.records import SEED, encode_raw, sample_record
from harness.reference import page_example_event
from harness.trackapi import TrackApi

PARTITIONS = 4


def say(msg: str) -> None:
    print(msg, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000, help="sample records to produce (default 20000)")
    args = parser.parse_args(argv)
    n = max(args.records, 1)

    with ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            say(f"kafka      using {bootstrap}")
        else:
            started = time.monotonic()
            broker = stack.enter_context(KafkaBroker(Path(tempfile.mkdtemp(prefix="demo-kafka-"))))
            bootstrap = broker.bootstrap
            say(f"kafka      Apache Kafka (KRaft) on {bootstrap}, up in {time.monotonic() - started:.1f}s")

        api = TrackApi(log=lambda line: say(f"track api  {line}"))
        stack.enter_context(api)
        say(f"track api  stand-in on {api.url}")

        topic = f"group-enrichment-demo-{uuid.uuid4().hex[:6]}"
        kafkautil.create_topic(bootstrap, topic, PARTITIONS)
        rows = [(SEED["group_id"].encode(), encode_raw(SEED))]
        rows += [(None, encode_raw(sample_record(i, tag="demo"))) for i in range(n - 1)]
        rows += [(b"poison", b"\x00not avro at all"), (b"deleted-group", None)]
        started = time.monotonic()
        kafkautil.produce(bootstrap, topic, rows, PARTITIONS)
        say(
            f"produce    {len(rows)} records to {topic} ({PARTITIONS} partitions) in {time.monotonic() - started:.1f}s:"
            f" {n} enrichments (the Track API page's sample first), 1 undecodable, 1 tombstone"
        )

        log_path = Path(tempfile.mkstemp(prefix="demo-consumer-", suffix=".log")[1])
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": f"{topic}-consumer",
            "TRACK_API_URL": api.url,
            "TRACK_API_TOKEN": api.token,
        }
        proc = stack.enter_context(ConsumerProcess(env, log_path))
        say(f"consumer   group-enriched-consumer started (logs: {log_path})")
        proc.wait_ready()
        if not api.wait_for(n, timeout_s=300):
            say(f"FAILED     only {api.count()} of {n} events arrived; consumer log tail:\n{proc.logs()[-3000:]}")
            return 1
        seed_event = next(e for e in api.events if e["user_id"] == SEED["user_id"])
        say("track api  the seed sample, as received:")
        say(json.dumps(seed_event, indent=2))
        time.sleep(1.5)  # a commit interval or so, so the dead letter and the tombstone are committed too
        metrics = proc.metrics()
        code = proc.stop(signal.SIGTERM)

        received = api.received_at
        span = max(received[-1] - received[0], 1e-3) if len(received) > 1 else 1e-3
        committed = kafkautil.committed_offsets(bootstrap, env["KAFKA_GROUP_ID"], topic, PARTITIONS)
        ends = kafkautil.end_offsets(bootstrap, topic, PARTITIONS)
        expected = page_example_event()  # the page's example payload, kept in the repo (harness/fixtures/)
        dead = {k.split('"')[1]: int(v) for k, v in metrics.items() if "dead_lettered_total{" in k and v}
        say("")
        say("summary")
        say(f"  records produced            {len(rows)}")
        say(f"  events delivered            {api.count()} in {len(api.requests)} requests")
        say(f"  throughput                  {api.count() / span:,.0f} events/s (first to last event at the API)")
        say(f"  dead-lettered               {sum(dead.values())} {dead or ''}")
        tombstones = metrics.get('group_enriched_records_skipped_total{reason="tombstone"}', 0)
        say(f"  tombstones skipped          {int(tombstones)}")
        say(f"  committed == end offsets    {committed == ends} ({sum(ends.values())} records)")
        say(f"  seed event == page example  {seed_event == expected}")
        say(f"  consumer exit code          {code} (SIGTERM → drain → commit → exit)")
        ok = code == 0 and committed == ends and api.count() == n and seed_event == expected
        say("  result                      " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
