"""Hostile input through decode + transform + encode: an event or a classified dead letter, never a crash."""

from __future__ import annotations

import contextlib
import tracemalloc

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.convert import EventTooLarge, Unconvertible, dead_letter_reason, encode_event
from consumer.decode import ConfluentDecoder, DecodeError, RawDecoder, load_schema
from harness.records import SEED, encode_raw, sample_record

READER = load_schema()
RAW = RawDecoder(READER)
MAX = 1_048_576


def unknown(schema_id: int) -> dict:
    raise DecodeError(f"schema id {schema_id} is unknown")


CONFLUENT = ConfluentDecoder(READER, lambda i: READER if i == 1 else unknown(i))


@settings(max_examples=3000)
@given(st.binary(max_size=2000))
def test_any_bytes_give_an_event_or_a_classified_dead_letter(data: bytes) -> None:
    for decoder in (RAW, CONFLUENT):
        try:
            encoded = encode_event(decoder, data, MAX)
        except Unconvertible as exc:
            assert dead_letter_reason(exc) in ("decode_error", "invalid_record", "rejected")
            assert str(exc)
        else:
            assert isinstance(orjson.loads(encoded), dict)


@settings(max_examples=500)
@given(st.integers(0, 3000), st.binary(min_size=1, max_size=8))
def test_a_valid_record_with_bytes_flipped_never_crashes(position: int, junk: bytes) -> None:
    value = bytearray(encode_raw(sample_record(position)))
    at = position % len(value)
    value[at : at + len(junk)] = junk
    with contextlib.suppress(Unconvertible):
        encode_event(RAW, bytes(value), MAX)


def peak_mb(fn) -> float:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_a_5_mb_description_is_rejected_as_too_large_within_bounded_memory() -> None:
    record = {**SEED, "company": {**SEED["company"], "description": "d" * 5_000_000}}
    value = encode_raw(record)

    def run() -> None:
        with pytest.raises(EventTooLarge) as info:
            encode_event(RAW, value, MAX)
        assert dead_letter_reason(info.value) == "rejected"

    assert peak_mb(run) < 40  # value, decoded string, encoded JSON: ~15 MB; never a multiple of the input


def test_a_100000_element_array_is_delivered_when_it_fits() -> None:
    record = {**SEED, "company": {**SEED["company"], "tags": ["t"] * 100_000}}
    encoded = encode_event(RAW, encode_raw(record), 4 * MAX)
    assert len(orjson.loads(encoded)["properties"]["enrichment_tags"]) == 100_000
    assert peak_mb(lambda: encode_event(RAW, encode_raw(record), 4 * MAX)) < 40


def test_a_huge_array_count_in_garbage_fails_fast() -> None:
    # The Avro varint for a block of 2**62 strings, then nothing: must not loop or allocate.
    value = bytearray(encode_raw(SEED))
    with pytest.raises(DecodeError):
        RAW.decode(bytes(value[:40]) + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f")


def test_idempotency_key_is_added_to_the_context() -> None:
    event = orjson.loads(encode_event(RAW, encode_raw(SEED), MAX, "topic/3/42"))
    assert event["context"] == {"group_id": SEED["group_id"], "idempotency_key": "topic/3/42"}
