"""A fast Track API stand-in for benchmarks: raw HTTP/1.1 keep-alive on asyncio, in its own process.

`python -m bench.sink --port P` (the bench starts it). It answers `POST <any path>` with 200
and records only what the benchmark needs: requests, events, the set of unique user_ids
(pulled out of the body with one regex, no JSON parsing) and, per event, the latency from
the Kafka timestamp carried in the user_id (see bench/data.py) to the moment the whole
request body was here.

Control endpoints (GET, answered as JSON):
    /_reset?serialize=0|1&delay_ms=N   forget everything; in serialize mode requests are
                                       answered one at a time, each after delay_ms
    /_stats                            counters, first/last receipt time, busy seconds
    /_latency?since_ms=T               p50/p90/p99/max of events whose Kafka timestamp >= T
    /_received_since?t=EPOCH_S         how many events arrived at or after that wall time
    /_uids                             every unique user_id, one per line
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from array import array
from urllib.parse import parse_qs, urlsplit

import orjson

_UID = re.compile(rb'"user_id":\s*"([^"]*)"')
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n" + b'{"status":"ok"}'


class State:
    def __init__(self) -> None:
        self.reset(False, 0)

    def reset(self, serialize: bool, delay_ms: int) -> None:
        self.serialize = serialize
        self.delay_s = delay_ms / 1000
        self.requests = 0
        self.events = 0
        self.uids: set[bytes] = set()
        self.duplicates = 0
        self.ts = array("q")  # per event: Kafka timestamp (ms)
        self.lat = array("d")  # per event: receipt - Kafka timestamp (ms)
        self.arrivals: list[tuple[float, int]] = []  # per request: (receipt time, events)
        self.first = 0.0
        self.last = 0.0
        self.busy = 0.0  # seconds spent handling POSTs (parse + bookkeeping), for capacity
        self.max_batch = 0
        self.lock = asyncio.Lock()

    def accept(self, body: bytes) -> None:
        started = time.perf_counter()
        now = time.time()
        now_ms = now * 1000
        uids = _UID.findall(body)
        n = len(uids)
        self.requests += 1
        self.events += n
        if n > self.max_batch:
            self.max_batch = n
        if not self.first:
            self.first = now
        self.last = now
        seen = self.uids
        before = len(seen)
        seen.update(uids)
        self.duplicates += n - (len(seen) - before)
        ts = [int(u[-13:]) for u in uids]
        self.ts.extend(ts)
        self.lat.extend([now_ms - t for t in ts])
        self.arrivals.append((now, n))
        self.busy += time.perf_counter() - started

    def stats(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "events": self.events,
            "unique": len(self.uids),
            "duplicates": self.duplicates,
            "first": self.first,
            "last": self.last,
            "busy_s": self.busy,
            "max_batch": self.max_batch,
        }

    def latency(self, since_ms: int) -> dict[str, object]:
        lat = sorted(v for v, t in zip(self.lat, self.ts, strict=True) if t >= since_ms)
        if not lat:
            return {"count": 0}

        def q(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))]

        return {"count": len(lat), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": lat[-1]}


STATE = State()


class Conn(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = bytearray()
        self.busy = False  # a delayed request is being answered: hold the rest (HTTP/1.1 order)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            method, target = head.split(" ", 2)[:2]
            if method == "GET":
                self._control(target)
            elif STATE.serialize:
                self.busy = True
                self.t.pause_reading()
                self.task = asyncio.ensure_future(self._slow(body))
                return
            else:
                STATE.accept(body)
                self.t.write(_OK)

    async def _slow(self, body: bytes) -> None:
        async with STATE.lock:
            await asyncio.sleep(STATE.delay_s)
            STATE.accept(body)
            if not self.t.is_closing():
                self.t.write(_OK)
        self.busy = False
        if not self.t.is_closing():
            self.t.resume_reading()
            self._drain()

    def _control(self, target: str) -> None:
        url = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/_reset":
            STATE.reset(q.get("serialize") == "1", int(q.get("delay_ms", "0")))
            self._reply(b'{"ok":true}')
        elif url.path == "/_stats":
            self._reply(orjson.dumps(STATE.stats()))
        elif url.path == "/_latency":
            self._reply(orjson.dumps(STATE.latency(int(q.get("since_ms", "0")))))
        elif url.path == "/_received_since":
            since = float(q.get("t", "0"))
            self._reply(orjson.dumps({"count": sum(n for t, n in STATE.arrivals if t >= since)}))
        elif url.path == "/_uids":
            self._reply(b"\n".join(STATE.uids), b"text/plain")
        else:
            self.t.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def _reply(self, body: bytes, ctype: bytes = b"application/json") -> None:
        self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (ctype, len(body), body))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=1024, reuse_address=True)
    print(f"sink listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sink")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
