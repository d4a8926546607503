"""Drive the bench sink as hard as one process can, to show it is not the limit.

    python -m bench.sinkload PORT EVENTS_PER_REQUEST SECONDS

One keep-alive connection, requests pipelined 64 at a time (the sink's responses have a
fixed size, so reading them back is a byte count). Prints one JSON line: requests,
events, seconds.
"""

from __future__ import annotations

import socket
import sys
import time

import orjson

from bench.data import Templates
from consumer.decode import RawDecoder, load_schema
from consumer.transform import to_event

WINDOW = 64
RESPONSE_LEN = len(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n") + 15


def main() -> int:
    port, per_request, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    tpl = Templates.build()
    decode = RawDecoder(load_schema()).decode
    now = int(time.time() * 1000)
    events = [to_event(decode(tpl.value("sinkld", i, now))) for i in range(per_request)]
    body = orjson.dumps(events)
    request = (
        b"POST /api/track HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    window = WINDOW if per_request == 1 else 4
    burst = request * window
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        sock.sendall(burst)
        need = RESPONSE_LEN * window
        while need:
            chunk = sock.recv(min(need, 1 << 20))
            if not chunk:
                raise ConnectionError("sink closed the connection")
            need -= len(chunk)
        sent += window
    taken = time.perf_counter() - started
    sock.close()
    print(orjson.dumps({"requests": sent, "events": sent * per_request, "seconds": taken}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
