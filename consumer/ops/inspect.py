"""`inspect`: a record's coordinates, key, decoded Avro, and the exact event JSON the consumer
would send for it, or the dead letter it would get (I/O edge around the consumer's own path).

The event comes from `consumer.convert.encode_event` with the app's decoder and the same size
limit and idempotency key the main loop uses, so its bytes are the bytes the Track API receives.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, TextIO

import orjson
from confluent_kafka import Message

from consumer import decode as dec
from consumer.config import Settings
from consumer.convert import Unconvertible, dead_letter_reason, encode_event
from consumer.ops import client
from consumer.ops.headers import VALUE_OMITTED
from consumer.ops.selection import iso


def max_event_bytes(settings: Settings) -> int:
    """The main loop's limit: an event must fit a request body on its own (the brackets take 2 bytes)."""
    return min(settings.max_event_bytes, settings.batch_max_bytes - 2)


def evaluate(
    decoder: dec.Decoder, settings: Settings, value: bytes | None, idempotency_key: str | None
) -> dict[str, Any]:
    """What the consumer does with one value: skip it, send an event, or dead-letter it."""
    if value is None:
        return {"outcome": "skipped", "reason": "tombstone"}
    try:
        return _evaluate(decoder, settings, value, idempotency_key)
    except dec.RegistryUnavailable as exc:  # the consumer would wait and retry: say so, decide nothing
        raise client.ToolError(f"{exc}; the consumer would retry this record, not dead-letter it") from None


def _evaluate(decoder: dec.Decoder, settings: Settings, value: bytes, idempotency_key: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with contextlib.suppress(dec.DecodeError):  # encode_event raises it again, as the consumer would see it
        out["avro"] = decoder.decode(value)
    try:
        event = encode_event(decoder, value, max_event_bytes(settings), idempotency_key)
    except Unconvertible as exc:
        out.update(outcome="dead_letter", reason=dead_letter_reason(exc), message=str(exc)[:1000])
        if (hint := framing_hint(value, settings)) is not None:
            out["hint"] = hint
    else:
        out.update(outcome="event", event=orjson.Fragment(event))
    return out


def framing_hint(value: bytes, settings: Settings) -> str | None:
    """Why an undecodable value may be in the other wire format than the settings expect."""
    if settings.schema_registry_url is None and len(value) > 5 and value[0] == 0:
        schema_id = int.from_bytes(value[1:5], "big")
        return (
            f"the value starts like Confluent framing (magic byte 0, schema id {schema_id}) but SCHEMA_REGISTRY_URL "
            "is unset, so it was read as raw Avro"
        )
    if settings.schema_registry_url is not None and value[:1] != b"\x00":
        return "the value has no Confluent framing (magic byte 0) although SCHEMA_REGISTRY_URL is set: raw Avro?"
    return None


def _text(b: bytes | None) -> str | None:
    if b is None:
        return None
    try:
        text = b.decode()
    except UnicodeDecodeError:
        return "0x" + b.hex()
    return text if text.isprintable() else "0x" + b.hex()


def render(record: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return orjson.dumps(record, default=str).decode()
    lines = []
    where = record.get("file") or f"{record['topic']}/{record['partition']}/{record['offset']}"
    head = [where]
    if "timestamp" in record:
        head.append(f"timestamp {record['timestamp']}")
    if "key" in record:
        head.append(f"key {record['key'] if record['key'] is not None else '-'}")
    head.append(f"value {record['value_bytes'] if record['value_bytes'] is not None else '-'} bytes")
    lines.append("  ".join(head))
    for name, value in record.get("headers") or []:
        lines.append(f"  header {name}: {value}")
    if "avro" in record:
        lines.append("  avro:  " + orjson.dumps(record["avro"], default=str).decode())
    if record["outcome"] == "event":
        lines.append("  event: " + orjson.dumps(record["event"]).decode())  # a Fragment: the exact bytes
    elif record["outcome"] == "dead_letter":
        lines.append(f"  dead letter: {record['reason']}: {record['message']}")
        if "hint" in record:
            lines.append(f"  hint: {record['hint']}")
    else:
        lines.append(f"  skipped: {record['reason']}")
    return "\n".join(lines)


def show(record: dict[str, Any], as_json: bool, out: TextIO) -> None:
    print(render(record, as_json), file=out, flush=True)


def from_message(m: Message, decoder: dec.Decoder, settings: Settings) -> dict[str, Any]:
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    key = f"{topic}/{partition}/{offset}" if settings.idempotency_key else None
    value = m.value()
    record: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": iso(m.timestamp()[1]),
        "key": _text(m.key()),
        "value_bytes": None if value is None else len(value),
        "headers": [(k, _text(v)) for k, v in m.headers() or []],
    }
    omitted = dict(m.headers() or []).get(VALUE_OMITTED)
    if value is None and omitted is not None:
        # A dead letter written without its (too large) value: not a tombstone.
        record.update(outcome="skipped", reason=f"value omitted from the dead letter ({omitted.decode()})")
    else:
        record.update(evaluate(decoder, settings, value, key))
    return record


def records(
    settings: Settings,
    overrides: dict[str, str],
    topic: str,
    partition: int,
    offset: int,
    count: int,
    as_json: bool,
    out: TextIO,
) -> int:
    from consumer.app import build_decoder  # the consumer's own decoder, schema files and registry

    decoder = build_decoder(settings)
    consumer = client.reader(settings, overrides)
    try:
        if partition not in client.partitions(consumer, topic):
            raise client.ToolError(f"topic {topic} has no partition {partition}")
        low, high = client.watermarks(consumer, topic, [partition])[partition]
        if not low <= offset < high:
            raise client.ToolError(f"{topic}/{partition} holds offsets {low} to {high - 1}; {offset} is not among them")
        for shown, m in enumerate(client.read(consumer, topic, {partition: offset}), 1):
            show(from_message(m, decoder, settings), as_json, out)
            if shown >= count:
                break
    finally:
        consumer.close()
    return 0


def file(settings: Settings, path: Path, as_json: bool, out: TextIO) -> int:
    from consumer.app import build_decoder

    try:
        value = path.read_bytes()
    except OSError as exc:
        raise client.ToolError(f"cannot read {path}: {exc.strerror}") from None
    record: dict[str, Any] = {"file": str(path), "value_bytes": len(value)}
    record.update(evaluate(build_decoder(settings), settings, value, None))
    show(record, as_json, out)
    return 0
