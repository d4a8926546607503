"""The decode ceiling: decode + map + encode over pre-encoded values in memory, no I/O.

    python -m bench.ceiling N

Builds the same N raw Avro values the broker holds (bench/data.py), then times the loop
the consumer runs per record: `RawDecoder.decode` (fastavro.schemaless_reader), `to_event`,
`orjson.dumps`. Prints one JSON line: events, unique user_ids, seconds.
"""

from __future__ import annotations

import sys
import time

import orjson

from bench.data import Templates
from consumer.decode import RawDecoder, load_schema
from consumer.transform import to_event


def main() -> int:
    n = int(sys.argv[1])
    tpl = Templates.build()
    now = int(time.time() * 1000)
    values = [tpl.value("ceilng", i, now) for i in range(n)]
    decode = RawDecoder(load_schema()).decode
    dumps = orjson.dumps
    users: set[str] = set()
    add = users.add
    out = 0
    started = time.perf_counter()
    for value in values:
        event = to_event(decode(value))
        out += len(dumps(event))
        add(event["user_id"])
    seconds = time.perf_counter() - started
    print(orjson.dumps({"events": n, "unique": len(users), "seconds": seconds, "bytes": out}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
