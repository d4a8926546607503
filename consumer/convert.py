"""One record value → one JSON-encoded event, or the reason it can never become one. Pure.

Every failure is one of three exceptions, each with its dead-letter reason; anything
else escaping the mapping is an `InvalidRecord` too, so no input can stop a partition.
`RegistryUnavailable` (from the decoder) is the one transient failure: retry later.
"""

from __future__ import annotations

from typing import Any

import orjson

from consumer.decode import DecodeError, Decoder
from consumer.transform import InvalidRecord, to_event


class EventTooLarge(ValueError):
    """The encoded event exceeds the size one request may carry."""


Unconvertible = (DecodeError, InvalidRecord, EventTooLarge)  # what dead-letters
_REASONS: dict[type[Exception], str] = {
    DecodeError: "decode_error",
    InvalidRecord: "invalid_record",
    EventTooLarge: "rejected",
}


def dead_letter_reason(exc: Exception) -> str:
    return _REASONS[type(exc)]


def encode_event(decoder: Decoder, value: bytes, max_bytes: int, idempotency_key: str | None = None) -> bytes:
    record = decoder.decode(value)
    try:
        event = to_event(record)
        if idempotency_key is not None:
            event["context"]["idempotency_key"] = idempotency_key
        # orjson's peak memory is ~12x its output: refuse a huge event before encoding it.
        # Typical records are far below the limit, so most never pay for the estimate.
        if len(value) > max_bytes // 8 and (at_least := _json_size_at_least(event)) > max_bytes:
            raise EventTooLarge(
                f"event is at least {at_least} bytes, above the maximum of {max_bytes} (MAX_EVENT_BYTES)"
            )
        # orjson leaves ~16 KiB allocated behind a 2 KB result: fine here, because the batcher
        # keeps an event only until its batch closes and joins it into the body (batcher.py).
        encoded = orjson.dumps(event)
    except (InvalidRecord, EventTooLarge):
        raise
    except Exception as exc:  # a mapping surprise must not stop the partition
        raise InvalidRecord(f"{type(exc).__name__}: {exc}") from None
    if len(encoded) > max_bytes:
        raise EventTooLarge(f"event is {len(encoded)} bytes, above MAX_EVENT_BYTES ({max_bytes})")
    return encoded


def _json_size_at_least(event: dict[str, Any]) -> int:
    """A lower bound of the encoded size: every string's characters and quotes (escaping only adds)."""
    total = 0
    for value in (event["user_id"], event["timestamp"], *event["properties"].values(), *event["context"].values()):
        if isinstance(value, str):
            total += len(value) + 2
        elif isinstance(value, list):
            total += sum(len(item) + 2 for item in value)
    return total
