"""A Confluent-compatible Schema Registry stand-in on loopback: reads only.

`GET /schemas/ids/{id}` (with the schema's `references`) and
`GET /subjects/{subject}/versions/{version}` (for resolving references): enough for the
consumer's real registry client. `available = False` answers 503 to simulate an outage.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SchemaRegistry:
    def __init__(self, port: int = 0) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}
        self.references: dict[int, list[dict[str, Any]]] = {}  # id → [{name, subject, version}]
        self.versions: dict[tuple[str, int], int] = {}  # (subject, version) → id
        self.available = True
        self.unavailable_prefix: str | None = None  # only paths starting with it answer 503
        self.requests = 0
        self.paths: list[str] = []  # every GET, in order
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests += 1
                path = self.path.split("?")[0]
                registry.paths.append(path)
                parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
                prefix = registry.unavailable_prefix
                if not registry.available or (prefix is not None and path.startswith(prefix)):
                    self._reply(503, {"error_code": 50302, "message": "unavailable"})
                elif len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                    schema_id = int(parts[2])
                    if schema_id not in registry.schemas:
                        self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                    else:
                        self._reply(200, registry._body(schema_id))
                elif len(parts) == 4 and parts[0] == "subjects" and parts[2] == "versions" and parts[3].isdigit():
                    subject, version = parts[1], int(parts[3])
                    schema_id = registry.versions.get((subject, version))
                    if not any(s == subject for s, _ in registry.versions):
                        self._reply(404, {"error_code": 40401, "message": f"Subject '{subject}' not found."})
                    elif schema_id is None:
                        self._reply(404, {"error_code": 40402, "message": f"Version {version} not found."})
                    else:
                        body = {"subject": subject, "version": version, "id": schema_id, **registry._body(schema_id)}
                        self._reply(200, body)
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

    def _body(self, schema_id: int) -> dict[str, Any]:
        body: dict[str, Any] = {"schema": json.dumps(self.schemas[schema_id])}
        if self.references.get(schema_id):
            body["references"] = self.references[schema_id]
        return body

    def register(
        self,
        schema_id: int,
        schema: dict[str, Any],
        *,
        subject: str | None = None,
        version: int = 1,
        references: list[dict[str, Any]] | None = None,
    ) -> int:
        """Store a schema under `schema_id` (and as `subject`/`version`), with its references."""
        self.schemas[schema_id] = schema
        if references:
            self.references[schema_id] = references
        if subject is not None:
            self.versions[(subject, version)] = schema_id
        return schema_id

    def __enter__(self) -> SchemaRegistry:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


NAMESPACE = "ai.thrivestack.enrichment"


def referencing_schemas(writer: dict[str, Any], three_levels: bool = False) -> dict[str, dict[str, Any]]:
    """`writer` split the way a schema registered with references is: each named type its own subject.

    Returns `top` (GroupEnrichment whose `company` field names `ai.thrivestack.enrichment.Company`),
    `company` (Company on its own) and `full` (everything inline: what the records are written with).
    With `three_levels`, Company gains an optional field of record type `Meta` (the reader does not
    know it) that Company references in turn, and `meta` is that schema.
    """
    full = copy.deepcopy(writer)
    full.setdefault("namespace", NAMESPACE)
    field = next(f for f in full["fields"] if f["name"] == "company")
    company = field["type"]
    company["namespace"] = full["namespace"]
    out: dict[str, dict[str, Any]] = {}
    if three_levels:
        meta = {
            "type": "record",
            "name": "Meta",
            "namespace": full["namespace"],
            "fields": [{"name": "source", "type": "string"}, {"name": "confidence", "type": "double"}],
        }
        company["fields"].append({"name": "meta", "type": ["null", meta], "default": None})
        out["meta"] = copy.deepcopy(meta)
    out["full"] = copy.deepcopy(full)
    standalone = copy.deepcopy(company)
    if three_levels:
        standalone["fields"][-1]["type"] = ["null", f"{full['namespace']}.Meta"]
    out["company"] = standalone
    field["type"] = f"{full['namespace']}.Company"
    out["top"] = full
    return out
