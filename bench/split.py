"""Where consumer x1's time goes beyond the ceiling, one layer at a time, on one broker.

    python -m bench.split                   # 200,000 records, each step 3 times (medians)
    python -m bench.split --records 50000 --repeat 1

Each step adds one layer to the one before and reports µs per record:

    ceiling                 decode + map + encode in memory (bench.ceiling)
    main loop, no I/O       + the consumer's bookkeeping: App._convert, batching, acking (bench.mainloop)
    consumer, no HTTP       + Kafka fetch, commits, the real main loop; batches acked at once (bench.nohttp)
    consumer x1             + HTTP delivery on the thread pool: the consumer as shipped (bench.run)

The steps run in turn, round after round, so a machine that drifts (it is shared) drifts for all of them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import uuid

import orjson

from bench.env import CACHE, ROOT, consumer_env, env_for_child, say
from bench.run import Bench, bench_env, machine_line, run_ceiling, run_consumer
from harness.kafka import free_port

STEPS = ("ceiling", "main loop, no I/O", "consumer, no HTTP", "consumer x1")


def child_rate(module: str, n: int, env: dict[str, str]) -> float:
    """Run `python -m <module> N` with the consumer's settings; its JSON line gives the rate."""
    out = subprocess.run(
        [sys.executable, "-m", module, str(n)],
        cwd=ROOT,
        env={**env_for_child(), **env},
        capture_output=True,
        timeout=600,
        check=True,
    ).stdout
    data = orjson.loads(out.strip().splitlines()[-1])
    return float(data["events"] / data["seconds"])


def one_round(b: Bench, n: int, round_: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    rates[STEPS[0]] = run_ceiling(b, n).rate or 0.0
    settings = {"METRICS_PORT": str(free_port())}
    unread = consumer_env(b.bootstrap, f"bench-unread-{b.tag}", "bench-unread", b.sink, **settings)
    rates[STEPS[1]] = child_rate("bench.mainloop", n, unread)
    topic, _ = b.topic_with_backlog(f"split{round_}", n)
    group = f"{topic}-nohttp-{uuid.uuid4().hex[:4]}"
    rates[STEPS[2]] = child_rate("bench.nohttp", n, consumer_env(b.bootstrap, topic, group, b.sink, **settings))
    rates[STEPS[3]] = run_consumer(b, topic, n, 1, timeout_s=300).rate or 0.0
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.split", description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bootstrap", help="use this broker (default: start one)")
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    say(machine_line())
    runs: list[dict[str, float]] = []
    with bench_env(args.bootstrap) as b:
        for i in range(args.repeat):
            runs.append(one_round(b, args.records, i))
            say(f"round {i + 1}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in runs[-1].items()))
    median = {step: statistics.median(r[step] for r in runs) for step in STEPS}
    say(f"\n{args.records:,} records, medians of {args.repeat} rounds\n")
    say("| step | events/s | µs per record | added by this layer | of the ceiling |")
    say("|---|---:|---:|---:|---:|")
    before = None
    for step in STEPS:
        us = 1e6 / median[step]
        added = "" if before is None else f"{us - before:+.1f} µs"
        say(f"| {step} | {median[step]:,.0f} | {us:.1f} | {added} | {median[step] / median[STEPS[0]]:.2f} |")
        before = us
    return 0


if __name__ == "__main__":
    sys.exit(main())
