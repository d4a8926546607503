"""Kafka record value bytes → GroupEnrichment dict, in either wire format of the contract.

- Raw Avro: the value is the Avro binary of the record, written with the bundled
  schema or with `AVRO_WRITER_SCHEMA_FILE`.
- Confluent framing: 0x00, a big-endian int32 schema id, then Avro binary. The writer
  schema is fetched by id from the Schema Registry once and cached; every record is
  resolved into the bundled reader schema, so older and newer writers both decode.
  A writer schema registered with references (a named type that is its own subject,
  e.g. `Company`) has its referenced schemas fetched by subject and version, recursively
  and once each, and parsed as named types before it.

Errors: `DecodeError` is permanent (dead-letter as decode_error);
`RegistryUnavailable` is transient (retry later, never dead-letter).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import to_parsing_canonical_form

READER_SCHEMA_NAME = "GroupEnrichment.avsc"
MAGIC_BYTE = 0
SCHEMA_NOT_FOUND = 40403


class DecodeError(ValueError):
    """The bytes are not a GroupEnrichment record and never will be."""


class RegistryUnavailable(Exception):
    """The Schema Registry could not answer now; the same record may decode later."""


class Decoder(Protocol):
    def decode(self, value: bytes) -> dict[str, Any]: ...


def schema_path() -> Path:
    """The bundled reader schema: inside the installed package, or `schemas/avro/` in a checkout."""
    packaged = Path(__file__).parent / "schemas" / READER_SCHEMA_NAME
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas" / "avro" / READER_SCHEMA_NAME


def load_schema(path: Path | None = None) -> dict[str, Any]:
    return json.loads((path or schema_path()).read_text())


@dataclass(frozen=True)
class WriterSchema:
    """A writer schema and the schemas its references name, dependencies first."""

    schema: dict[str, Any]
    named: tuple[Any, ...] = ()


class _Resolver:
    """Reads Avro binary written with one writer schema into the reader schema."""

    def __init__(self, writer: dict[str, Any], reader: dict[str, Any], named: tuple[Any, ...] = ()) -> None:
        # Timestamps stay epoch millis: transform formats them faster than fastavro builds datetimes.
        writer, reader = _plain_timestamps(writer), _plain_timestamps(reader)
        named_schemas: dict[str, Any] = {}
        for schema in named:  # referenced types first, so the writer can name them
            parse_schema(_plain_timestamps(schema), named_schemas=named_schemas)
        self._writer = parse_schema(writer, named_schemas=named_schemas)
        same = to_parsing_canonical_form(self._writer) == to_parsing_canonical_form(parse_schema(reader))
        # Skipping resolution when the schemas are equal halves the decode time.
        self._reader = None if same else parse_schema(reader)

    def read(self, payload: bytes, start: int = 0) -> dict[str, Any]:
        buf = BytesIO(payload)
        buf.seek(start)
        try:
            record = schemaless_reader(buf, self._writer, self._reader)
        except Exception as exc:  # fastavro raises many types on bad bytes; all mean "not decodable"
            raise DecodeError(f"Avro decoding failed: {type(exc).__name__}: {exc}") from None
        if buf.tell() != len(payload):
            raise DecodeError(f"Avro decoding left {len(payload) - buf.tell()} trailing bytes")
        if not isinstance(record, dict):
            raise DecodeError("Avro value is not a record")
        return record


def _plain_timestamps(schema: Any) -> Any:
    """A copy of `schema` with timestamp-millis logical types read as plain longs."""
    if isinstance(schema, list):
        return [_plain_timestamps(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("logicalType") == "timestamp-millis" and schema.get("type") == "long":
        return "long"
    return {k: _plain_timestamps(v) for k, v in schema.items()}


class RawDecoder:
    """Raw Avro binary, no framing."""

    def __init__(self, reader: dict[str, Any], writer: dict[str, Any] | None = None) -> None:
        self._resolver = _Resolver(writer or reader, reader)

    def decode(self, value: bytes) -> dict[str, Any]:
        return self._resolver.read(value)


SchemaFetcher = Callable[[int], "dict[str, Any] | WriterSchema"]
"""Returns the writer schema for an id; raises DecodeError (unknown id) or RegistryUnavailable."""


class ConfluentDecoder:
    """Confluent wire format, writer schemas fetched by id and cached for the life of the process."""

    def __init__(self, reader: dict[str, Any], fetch: SchemaFetcher) -> None:
        self._reader = reader
        self._fetch = fetch
        self._resolvers: dict[int, _Resolver] = {}

    def decode(self, value: bytes) -> dict[str, Any]:
        if len(value) < 5 or value[0] != MAGIC_BYTE:
            raise DecodeError("value is not in Confluent framing (magic byte 0x00 and a schema id)")
        schema_id = int.from_bytes(value[1:5], "big")
        resolver = self._resolvers.get(schema_id)
        if resolver is None:
            writer = self._fetch(schema_id)
            if not isinstance(writer, WriterSchema):
                writer = WriterSchema(writer)
            try:
                resolver = _Resolver(writer.schema, self._reader, writer.named)
            except Exception as exc:  # an unparsable or unresolvable writer schema is permanent
                raise DecodeError(f"schema id {schema_id} cannot be read: {exc}") from None
            self._resolvers[schema_id] = resolver
        return resolver.read(value, 5)


def registry_fetcher(
    url: str | None = None, client_config: dict[str, Any] | None = None, *, client: Callable[[], Any] | None = None
) -> SchemaFetcher:
    """Fetch writer schemas with confluent-kafka's Schema Registry client (it caches).

    `client` returns the client to use (consumer/registry.py rebuilds it when a secret file
    changes); without it, one is made from `url` and `client_config`.
    """
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if client is None:
        # No retries inside the client: each would block the main loop; the app retries with backoff.
        fixed = SchemaRegistryClient({"url": url, "max.retries": 0, **(client_config or {})})
        client = lambda: fixed  # noqa: E731

    # Referenced schemas by (subject, version): immutable once registered, so cached for good.
    referenced: dict[tuple[str, int], tuple[Any, list[Any]]] = {}

    def call(what: str, request: Callable[[], Any], not_found: tuple[int, ...]) -> Any:
        try:
            return request()
        except SchemaRegistryError as exc:
            # The registry's own "not found" codes are permanent; a bare 404 is more likely a wrong
            # SCHEMA_REGISTRY_URL, which must stall (and alert) rather than dead-letter everything.
            if exc.http_status_code == 404 and exc.error_code in not_found:
                raise DecodeError(f"{what} is unknown to the Schema Registry") from None
            raise RegistryUnavailable(f"Schema Registry error {exc.http_status_code}: {exc.error_message}") from None
        except Exception as exc:  # connection refused, timeout, TLS: the registry may come back
            raise RegistryUnavailable(f"Schema Registry unreachable: {type(exc).__name__}: {exc}") from None

    def avro(what: str, schema: Any) -> Any:
        if schema.schema_type not in (None, "AVRO"):
            raise DecodeError(f"{what} is {schema.schema_type}, not AVRO")
        try:
            return json.loads(schema.schema_str)
        except ValueError as exc:
            raise DecodeError(f"{what} is not valid JSON: {exc}") from None

    def resolve(references: list[Any], seen: set[tuple[str, int]], out: list[Any]) -> None:
        """Append the referenced schemas to `out`, each after its own references, each once."""
        for ref in references or ():
            key = (ref.subject, int(ref.version))
            if key in seen:
                continue
            seen.add(key)
            if key not in referenced:
                what = f"referenced schema {ref.subject} version {ref.version}"
                registered = call(what, lambda k=key: client().get_version(*k), (40401, 40402))
                referenced[key] = (avro(what, registered.schema), list(registered.schema.references or ()))
            schema, nested = referenced[key]
            resolve(nested, seen, out)
            out.append(schema)

    def fetch(schema_id: int) -> WriterSchema:
        what = f"schema id {schema_id}"
        schema = call(what, lambda: client().get_schema(schema_id), (SCHEMA_NOT_FOUND,))
        writer = avro(what, schema)
        named: list[Any] = []
        resolve(list(schema.references or ()), set(), named)
        return WriterSchema(writer, tuple(named))

    return fetch
