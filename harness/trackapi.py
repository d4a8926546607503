"""A Track API stand-in: a real HTTP server on loopback that checks and records what it receives.

Behaviour is scripted per request with `respond` (status, headers) so tests can play an API
that is slow, throttles, refuses a token or rejects one bad event. `kill()` closes the
listening socket and every open connection (clients then see "connection refused");
`start()` brings it back on the same port. With `tls` (a server-side `ssl.SSLContext`) it
serves HTTPS; handshakes the client refuses are counted in `tls_failures`, not served.
`auth` picks the credential the API accepts: "bearer" (`Authorization: Bearer <token>`,
the page this project was built from) or "x-api-key" (`x-api-key: <token>`, the current
public API reference); anything else gets 401.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

Answer = tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]
Responder = Callable[[list[dict[str, Any]], dict[str, str]], Answer | None]
"""Gets the parsed events and request headers; returns (status, headers) or (status, headers, body),
or None for the default. A `Content-Type` among the headers replaces the JSON one (a web page, say)."""


@dataclass
class Request:
    at: float  # time.time() of receipt
    status: int
    events: int
    auth: str  # the credential header as received: "Authorization: ..." or "x-api-key: ..."


@dataclass
class TrackApi:
    token: str = "test-token"
    auth: str = "bearer"  # or "x-api-key": which header must carry the token
    port: int = 0
    delay_s: float = 0.0
    on_event: Callable[[dict[str, Any]], None] | None = None
    respond: Responder | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    serialize: bool = False  # answer one request at a time (backpressure tests)
    log: Callable[[str], None] | None = None  # told one line per request
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server-side context
    tls_failures: list[str] = field(default_factory=list)  # failed TLS handshakes, why
    arrived: int = 0  # requests whose body was read, answered or not (a hanging one counts at once)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._conns: set[socket.socket] = set()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/api/track"

    def start(self) -> TrackApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real API

            def setup(self) -> None:
                if api.tls is not None:  # handshake here, on the connection's thread, not in accept()
                    try:
                        self.request.do_handshake()
                    except (ssl.SSLError, OSError) as exc:
                        with api._lock:
                            api.tls_failures.append(f"{type(exc).__name__}: {exc}")
                        raise
                super().setup()
                with api._lock:
                    api._conns.add(self.connection)

            def finish(self) -> None:
                with api._lock:
                    api._conns.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with api._lock:
                    api.arrived += 1
                if api.serialize:
                    with api._one_at_a_time:
                        self._handle(body)
                else:
                    self._handle(body)

            def _handle(self, body: bytes) -> None:
                if api.delay_s:
                    time.sleep(api.delay_s)
                bearer, api_key = self.headers.get("Authorization"), self.headers.get("x-api-key")
                auth = "; ".join(
                    f"{name}: {value}" for name, value in (("Authorization", bearer), ("x-api-key", api_key)) if value
                )
                try:
                    events = orjson.loads(body)
                    assert isinstance(events, list) and all(isinstance(e, dict) for e in events)
                    assert self.headers.get("Content-Type") == "application/json"
                except (orjson.JSONDecodeError, AssertionError):
                    return self._reply(400, [], auth, b'{"error":"body must be a JSON array of events"}')
                accepted = (
                    bearer == f"Bearer {api.token}" and api_key is None
                    if api.auth == "bearer"
                    else api_key == api.token and bearer is None
                )
                if not accepted:
                    return self._reply(401, events, auth, b'{"error":"invalid token"}')
                scripted = api.respond(events, dict(self.headers)) if api.respond else None
                status, headers, *custom = scripted or (200, {})
                if 200 <= status < 300:
                    now = time.time()
                    with api._lock:
                        api.events.extend(events)
                        api.received_at.extend([now] * len(events))
                    if api.on_event:
                        for e in events:
                            api.on_event(e)
                default = b'{"status":"ok"}' if status < 300 else b'{"error":"refused"}'
                self._reply(status, events, auth, custom[0] if custom else default, headers)

            def _reply(self, status: int, events: list, auth: str, body: bytes, headers: dict | None = None) -> None:
                with api._lock:
                    api.requests.append(Request(time.time(), status, len(events), auth))
                    total = len(api.events)
                if api.log:
                    api.log(f"POST {len(events)} events → {status} (accepted so far: {total})")
                self.send_response(status)
                headers = headers or {}
                for k, v in headers.items():
                    self.send_header(k, v)
                if not any(k.lower() == "content-type" for k in headers):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                if not isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
                    super().handle_error(request, client_address)  # a refused handshake is no server bug

        self._server = Server(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def kill(self) -> None:
        """Stop listening and drop every connection: clients get connection refused/reset."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def count(self) -> int:
        with self._lock:
            return len(self.events)

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.count() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def __enter__(self) -> TrackApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
