"""A reverse proxy on loopback that demands credentials and may serve HTTPS: a production-like front door.

Apicurio's own authentication needs an OIDC server, and the registry stand-in has none: this
proxy sits in front of either. It accepts a request only with `Authorization: Basic <user:pw>`
(when `user_info` is set) or `Authorization: Bearer <token>` (when `bearer` is set), answers
401 otherwise (as Confluent's and Apicurio's registries do), and forwards everything else to
`upstream` unchanged but for that header. With `tls` (a server-side `ssl.SSLContext`, e.g.
from `harness.certs`) it serves HTTPS; handshakes a client refuses are counted, not served.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "authorization", "content-length"}


@dataclass
class AuthProxy:
    upstream: str  # http://host:port[/prefix]
    user_info: str | None = None  # "user:password" to require Basic auth
    bearer: str | None = None  # a token to require Bearer auth
    tls: ssl.SSLContext | None = None
    statuses: list[int] = field(default_factory=list)  # every answer, in order
    refused: int = 0  # 401s for missing or wrong credentials
    tls_failures: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _allowed(self, header: str | None) -> bool:
        wanted = []
        if self.user_info is not None:
            wanted.append("Basic " + base64.b64encode(self.user_info.encode()).decode())
        if self.bearer is not None:
            wanted.append(f"Bearer {self.bearer}")
        return not wanted or header in wanted

    def start(self) -> AuthProxy:
        proxy = self
        up = urllib.parse.urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                if proxy.tls is not None:
                    try:
                        self.request.do_handshake()
                    except (ssl.SSLError, OSError):
                        with proxy._lock:
                            proxy.tls_failures += 1
                        raise
                super().setup()

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                if not proxy._allowed(self.headers.get("Authorization")):
                    with proxy._lock:
                        proxy.refused += 1
                    return self._reply(
                        401, {"Content-Type": "application/json"}, b'{"error_code":401,"message":"Unauthorized"}'
                    )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                try:
                    conn.request(self.command, up.path.rstrip("/") + self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
                    self._reply(resp.status, out, data)
                except OSError:
                    self._reply(
                        502, {"Content-Type": "application/json"}, b'{"error_code":502,"message":"upstream down"}'
                    )
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                with proxy._lock:
                    proxy.statuses.append(status)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                if not isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
                    super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> AuthProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
