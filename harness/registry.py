"""A Confluent-compatible Schema Registry stand-in on loopback: `GET /schemas/ids/{id}` only.

Enough for the consumer's real registry client; `available = False` answers 503 to
simulate an outage.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SchemaRegistry:
    def __init__(self, port: int = 0) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}
        self.available = True
        self.requests = 0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests += 1
                parts = self.path.split("?")[0].strip("/").split("/")
                if not registry.available:
                    self._reply(503, {"error_code": 50302, "message": "unavailable"})
                elif len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                    schema = registry.schemas.get(int(parts[2]))
                    if schema is None:
                        self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                    else:
                        self._reply(200, {"schema": json.dumps(schema)})
                else:
                    self._reply(404, {"error_code": 404, "message": "not found"})

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def register(self, schema_id: int, schema: dict[str, Any]) -> int:
        self.schemas[schema_id] = schema
        return schema_id

    def __enter__(self) -> SchemaRegistry:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
