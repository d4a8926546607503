"""consumer.decode: raw and Confluent-framed Avro, schema resolution, bad bytes, the registry fetcher."""

from __future__ import annotations

import copy
import socket
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.decode import (
    ConfluentDecoder,
    DecodeError,
    RawDecoder,
    RegistryUnavailable,
    WriterSchema,
    load_schema,
    registry_fetcher,
    schema_path,
)
from consumer.transform import to_event
from harness.records import SEED, as_written_by, encode_confluent, encode_raw, sample_record, writer_schemas
from harness.registry import SchemaRegistry, referencing_schemas
from tests.contract_expect import expected_event, records

VERSIONS = ("older", "current", "newer")
# Keep the real client, but do not sleep a second between its retries.
FAST_CLIENT = {"retries.wait.ms": 1, "retries.max.wait.ms": 5}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _as_decoded(record: dict[str, Any]) -> dict[str, Any]:
    """What the reader returns for `record`: enriched_at as epoch millis (logical type not applied)."""
    out = copy.deepcopy(record)
    if isinstance(out["enriched_at"], datetime):
        out["enriched_at"] = (out["enriched_at"] - EPOCH) // timedelta(milliseconds=1)
    return out


def _with_newer_fields(record: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(record)
    out["source"] = "enricher-v2"
    out["company"]["linkedin_handle"] = "example-co"
    return out


@pytest.fixture(scope="module")
def reader() -> dict[str, Any]:
    return load_schema()


@pytest.fixture(scope="module")
def writers() -> dict[str, dict[str, Any]]:
    return writer_schemas()


def test_bundled_schema_is_the_projects_schema(reader: dict[str, Any]) -> None:
    assert schema_path().exists()
    assert reader == writer_schemas()["current"]
    assert f"{reader['namespace']}.{reader['name']}" == "ai.thrivestack.enrichment.GroupEnrichment"


# ---- raw Avro --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_raw_decoder_resolves_each_writer(version: str, reader: dict[str, Any], writers: dict[str, Any]) -> None:
    writer = writers[version]
    record = _with_newer_fields(SEED) if version == "newer" else SEED
    decoded = RawDecoder(reader, writer).decode(encode_raw(record, writer))
    assert decoded == _as_decoded(as_written_by(SEED, version))
    assert "source" not in decoded and "linkedin_handle" not in decoded["company"]


def test_older_writer_gets_the_reader_defaults(reader: dict[str, Any], writers: dict[str, Any]) -> None:
    decoded = RawDecoder(reader, writers["older"]).decode(encode_raw(SEED, writers["older"]))
    assert decoded["plan_name"] is None
    assert decoded["company"]["traffic_rank"] is None
    assert decoded["company"]["tech_categories"] == []
    assert decoded["company"]["domain_aliases"] is None


def test_raw_decoder_default_writer_is_the_reader(reader: dict[str, Any]) -> None:
    assert RawDecoder(reader).decode(encode_raw(SEED)) == _as_decoded(SEED)


def test_raw_bytes_of_another_writer_without_that_writer_fail_or_differ(
    reader: dict[str, Any], writers: dict[str, Any]
) -> None:
    """Raw Avro carries no schema: older bytes read with the current schema must not silently equal the record."""
    try:
        decoded = RawDecoder(reader).decode(encode_raw(SEED, writers["older"]))
    except DecodeError:
        return
    assert decoded != _as_decoded(as_written_by(SEED, "older"))


@pytest.mark.parametrize("i", range(12))
def test_sample_records_round_trip(i: int, reader: dict[str, Any]) -> None:
    rec = sample_record(i)
    assert RawDecoder(reader).decode(encode_raw(rec)) == _as_decoded(rec)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_round_trip_then_transform_matches_the_contract(record: dict[str, Any]) -> None:
    decoded = RawDecoder(load_schema()).decode(encode_raw(record))
    assert decoded == _as_decoded(record)
    if decoded["company"]["tech"] != [""]:  # known transform bug, see test_unit_transform
        assert to_event(decoded) == expected_event(record)


# ---- bad bytes -------------------------------------------------------------------------------------


def test_every_truncation_is_a_decode_error(reader: dict[str, Any]) -> None:
    data = encode_raw(SEED)
    dec = RawDecoder(reader)
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            dec.decode(data[:n])


@pytest.mark.parametrize("garbage", [b"\x00", b"\xff", b"trailing"])
def test_trailing_garbage_is_a_decode_error(garbage: bytes, reader: dict[str, Any]) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        RawDecoder(reader).decode(encode_raw(SEED) + garbage)


def test_invalid_utf8_string_is_a_decode_error(reader: dict[str, Any]) -> None:
    rec = copy.deepcopy(SEED)
    rec["user_id"] = "A" * 5
    data = encode_raw(rec)
    i = data.index(b"AAAAA")
    with pytest.raises(DecodeError):
        RawDecoder(reader).decode(data[:i] + b"\xff\xfe\xfd\xfc\xfb" + data[i + 5 :])


def test_out_of_range_timestamp_is_an_invalid_record(reader: dict[str, Any]) -> None:
    """It decodes (a long), but no ISO-8601 date can say it: dead-lettered as invalid_record."""
    from consumer.convert import dead_letter_reason, encode_event
    from consumer.transform import InvalidRecord

    rec = copy.deepcopy(SEED)
    rec["enriched_at"] = 2**62
    with pytest.raises(InvalidRecord) as info:
        encode_event(RawDecoder(reader), encode_raw(rec), 1 << 20)
    assert dead_letter_reason(info.value) == "invalid_record"
    assert "enriched_at" in str(info.value)


def test_bad_union_branch_is_a_decode_error(reader: dict[str, Any]) -> None:
    # user_id "", group_id "", then group_type with union index 5 (zigzag 10), which does not exist.
    with pytest.raises(DecodeError):
        RawDecoder(reader).decode(b"\x00\x00\x0a")


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_decode_error_raw(data: bytes) -> None:
    try:
        out = RawDecoder(load_schema()).decode(data)
    except DecodeError:
        return
    assert isinstance(out, dict) and set(out) >= {"user_id", "group_id", "company", "enriched_at"}


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_decode_error_confluent(data: bytes) -> None:
    dec = ConfluentDecoder(load_schema(), lambda _id: load_schema())
    for value in (data, b"\x00\x00\x00\x00\x01" + data):
        try:
            out = dec.decode(value)
        except DecodeError:
            continue
        assert isinstance(out, dict)


@given(st.data())
def test_mutated_valid_records_decode_or_raise_decode_error(data: st.DataObject) -> None:
    good = bytearray(encode_raw(sample_record(data.draw(st.integers(0, 50)))))
    for _ in range(data.draw(st.integers(1, 4))):
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    try:
        out = RawDecoder(load_schema()).decode(bytes(good))
    except DecodeError:
        return
    assert isinstance(out, dict)


# ---- Confluent framing -----------------------------------------------------------------------------


class _Fetcher:
    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self.schemas = schemas
        self.calls: list[int] = []

    def __call__(self, schema_id: int) -> dict[str, Any]:
        self.calls.append(schema_id)
        if schema_id not in self.schemas:
            raise DecodeError(f"schema id {schema_id} is unknown")
        return self.schemas[schema_id]


@pytest.fixture
def fetcher(writers: dict[str, Any]) -> _Fetcher:
    return _Fetcher({1: writers["older"], 2: writers["current"], 3: writers["newer"], 2**31 - 1: writers["current"]})


@pytest.mark.parametrize(("schema_id", "version"), [(1, "older"), (2, "current"), (3, "newer")])
def test_confluent_resolves_each_writer(
    schema_id: int, version: str, reader: dict[str, Any], writers: dict[str, Any], fetcher: _Fetcher
) -> None:
    record = _with_newer_fields(SEED) if version == "newer" else SEED
    value = encode_confluent(record, writers[version], schema_id)
    assert ConfluentDecoder(reader, fetcher).decode(value) == _as_decoded(as_written_by(SEED, version))


def test_fetch_is_called_once_per_id(reader: dict[str, Any], writers: dict[str, Any], fetcher: _Fetcher) -> None:
    dec = ConfluentDecoder(reader, fetcher)
    for i in range(30):
        version = VERSIONS[i % 3]
        rec = sample_record(i)
        out = dec.decode(encode_confluent(rec, writers[version], VERSIONS.index(version) + 1))
        assert out == _as_decoded(as_written_by(rec, version))
    assert sorted(fetcher.calls) == [1, 2, 3]


def test_largest_schema_id(reader: dict[str, Any], writers: dict[str, Any], fetcher: _Fetcher) -> None:
    value = encode_confluent(SEED, writers["current"], 2**31 - 1)
    assert value[1:5] == b"\x7f\xff\xff\xff"
    assert ConfluentDecoder(reader, fetcher).decode(value)["user_id"] == SEED["user_id"]
    assert fetcher.calls == [2**31 - 1]


def test_unknown_id_raises_the_fetchers_decode_error(reader: dict[str, Any], fetcher: _Fetcher) -> None:
    dec = ConfluentDecoder(reader, fetcher)
    with pytest.raises(DecodeError, match="99"):
        dec.decode(b"\x00" + struct.pack(">I", 99) + encode_raw(SEED))


def test_registry_unavailable_is_not_cached(reader: dict[str, Any], writers: dict[str, Any]) -> None:
    state = {"up": False, "calls": 0}

    def fetch(schema_id: int) -> dict[str, Any]:
        state["calls"] += 1
        if not state["up"]:
            raise RegistryUnavailable("down")
        return writers["current"]

    dec = ConfluentDecoder(reader, fetch)
    value = encode_confluent(SEED, writers["current"], 5)
    with pytest.raises(RegistryUnavailable):
        dec.decode(value)
    with pytest.raises(RegistryUnavailable):
        dec.decode(value)
    state["up"] = True
    assert dec.decode(value) == _as_decoded(SEED)
    assert dec.decode(value) == _as_decoded(SEED)
    assert state["calls"] == 3


def test_registry_unavailable_is_not_a_decode_error() -> None:
    assert not issubclass(RegistryUnavailable, DecodeError)
    assert not issubclass(DecodeError, RegistryUnavailable)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00", id="1-byte"),
        pytest.param(b"\x00\x00\x00\x02", id="4-bytes"),
        pytest.param(b"\x01\x00\x00\x00\x02" + encode_raw(SEED), id="magic-byte-1"),
        pytest.param(b"\xff\x00\x00\x00\x02" + encode_raw(SEED), id="magic-byte-ff"),
        pytest.param(encode_raw(SEED), id="raw-avro-without-framing"),
    ],
)
def test_bad_framing(value: bytes, reader: dict[str, Any], fetcher: _Fetcher) -> None:
    with pytest.raises(DecodeError):
        ConfluentDecoder(reader, fetcher).decode(value)
    assert fetcher.calls == [], "no registry lookup for bytes that are not framed"


def test_header_only_is_truncated_avro(reader: dict[str, Any], fetcher: _Fetcher) -> None:
    with pytest.raises(DecodeError):
        ConfluentDecoder(reader, fetcher).decode(b"\x00\x00\x00\x00\x02")


def test_confluent_truncated_and_trailing(reader: dict[str, Any], writers: dict[str, Any], fetcher: _Fetcher) -> None:
    dec = ConfluentDecoder(reader, fetcher)
    value = encode_confluent(SEED, writers["older"], 1)
    for n in range(5, len(value)):
        with pytest.raises(DecodeError):
            dec.decode(value[:n])
    with pytest.raises(DecodeError, match="trailing"):
        dec.decode(value + b"\x00")
    assert dec.decode(value)["user_id"] == SEED["user_id"]  # the cache survived the failures


@pytest.mark.parametrize(
    "writer",
    [
        pytest.param({"type": "bogus"}, id="unparsable"),
        pytest.param("string", id="not-a-record"),
        pytest.param({**writer_schemas()["current"], "name": "Other"}, id="other-record-name"),
    ],
)
def test_incompatible_writer_schema_is_a_decode_error(writer: Any, reader: dict[str, Any]) -> None:
    dec = ConfluentDecoder(reader, lambda _id: writer)
    with pytest.raises(DecodeError):
        dec.decode(encode_confluent(SEED, writer_schemas()["current"], 4))


def test_writer_with_incompatible_field_type_is_a_decode_error(reader: dict[str, Any]) -> None:
    writer = copy.deepcopy(writer_schemas()["current"])
    writer["fields"][0]["type"] = "int"  # user_id as int: cannot resolve to string
    dec = ConfluentDecoder(reader, lambda _id: writer)
    rec = copy.deepcopy(SEED)
    rec["user_id"] = 7
    with pytest.raises(DecodeError):
        dec.decode(encode_confluent(rec, writer, 6))


# ---- registry_fetcher against the loopback stand-in ------------------------------------------------


@pytest.fixture(scope="module")
def _registry_server() -> Iterator[SchemaRegistry]:
    with SchemaRegistry() as reg:  # one server for the module: its shutdown polls every 0.5 s
        yield reg


@pytest.fixture
def registry(_registry_server: SchemaRegistry) -> SchemaRegistry:
    _registry_server.schemas.clear()
    _registry_server.references.clear()
    _registry_server.versions.clear()
    _registry_server.paths.clear()
    _registry_server.available = True
    _registry_server.unavailable_prefix = None
    _registry_server.requests = 0
    return _registry_server


def test_registry_known_id(registry: SchemaRegistry, writers: dict[str, Any]) -> None:
    registry.register(11, writers["older"])
    fetch = registry_fetcher(registry.url, FAST_CLIENT)
    assert fetch(11) == WriterSchema(writers["older"])


def test_registry_unknown_id_is_a_decode_error(registry: SchemaRegistry) -> None:
    fetch = registry_fetcher(registry.url, FAST_CLIENT)
    with pytest.raises(DecodeError, match="12"):
        fetch(12)


def test_registry_outage_is_unavailable_not_decode_error(registry: SchemaRegistry, writers: dict[str, Any]) -> None:
    registry.register(13, writers["current"])
    registry.available = False
    fetch = registry_fetcher(registry.url, FAST_CLIENT)
    with pytest.raises(RegistryUnavailable) as info:
        fetch(13)
    assert not isinstance(info.value, DecodeError)
    assert "503" in str(info.value)
    registry.available = True
    assert fetch(13).schema == writers["current"]


def test_registry_unreachable_is_unavailable() -> None:
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fetch = registry_fetcher(f"http://127.0.0.1:{port}", FAST_CLIENT)
    with pytest.raises(RegistryUnavailable):
        fetch(1)


def test_registry_decoder_end_to_end(registry: SchemaRegistry, writers: dict[str, Any], reader: dict[str, Any]) -> None:
    for sid, version in ((21, "older"), (22, "current"), (23, "newer")):
        registry.register(sid, writers[version])
    dec = ConfluentDecoder(reader, registry_fetcher(registry.url, FAST_CLIENT))
    for i in range(9):
        sid, version = [(21, "older"), (22, "current"), (23, "newer")][i % 3]
        rec = sample_record(i)
        value = encode_confluent(_with_newer_fields(rec) if version == "newer" else rec, writers[version], sid)
        assert dec.decode(value) == _as_decoded(as_written_by(rec, version))
    requests = registry.requests
    dec.decode(encode_confluent(SEED, writers["older"], 21))
    assert registry.requests == requests, "a cached id does not go back to the registry"
    assert requests <= 3


def test_registry_outage_then_recovery_through_the_decoder(
    registry: SchemaRegistry, writers: dict[str, Any], reader: dict[str, Any]
) -> None:
    registry.register(31, writers["current"])
    registry.available = False
    dec = ConfluentDecoder(reader, registry_fetcher(registry.url, FAST_CLIENT))
    value = encode_confluent(SEED, writers["current"], 31)
    with pytest.raises(RegistryUnavailable):
        dec.decode(value)
    registry.available = True
    assert dec.decode(value) == _as_decoded(SEED)


def test_registry_wrong_base_path_is_not_a_decode_error(registry: SchemaRegistry, writers: dict[str, Any]) -> None:
    registry.register(41, writers["current"])
    fetch = registry_fetcher(registry.url + "/wrong-prefix", FAST_CLIENT)
    with pytest.raises(RegistryUnavailable):
        fetch(41)


# ---- writer schemas registered with references ---------------------------------------------------

COMPANY = "ai.thrivestack.enrichment.Company"
META = "ai.thrivestack.enrichment.Meta"


def _ref(name: str, subject: str, version: int) -> dict[str, Any]:
    return {"name": name, "subject": subject, "version": version}


def _with_meta(record: dict[str, Any], i: int) -> dict[str, Any]:
    return {
        **record,
        "company": {**record["company"], "meta": {"source": f"s{i}", "confidence": 0.25} if i % 2 else None},
    }


def test_two_level_reference_decodes_like_the_inline_schema(registry: SchemaRegistry, reader: dict[str, Any]) -> None:
    split = referencing_schemas(reader)
    registry.register(51, split["company"], subject="company-value", version=1)
    registry.register(52, split["top"], references=[_ref(COMPANY, "company-value", 1)])
    dec = ConfluentDecoder(reader, registry_fetcher(registry.url, FAST_CLIENT))
    for i in range(5):
        rec = sample_record(i)
        assert dec.decode(encode_confluent(rec, split["full"], 52)) == _as_decoded(rec)


def test_three_levels_resolved_recursively_and_each_subject_fetched_once(
    registry: SchemaRegistry, reader: dict[str, Any]
) -> None:
    split = referencing_schemas(reader, three_levels=True)
    registry.register(61, split["meta"], subject="meta-value", version=3)
    registry.register(
        62, split["company"], subject="company-value", version=2, references=[_ref(META, "meta-value", 3)]
    )
    # Two writer ids share the Company reference: the second needs no subject fetch.
    registry.register(63, split["top"], references=[_ref(COMPANY, "company-value", 2)])
    registry.register(64, split["top"], references=[_ref(COMPANY, "company-value", 2)])
    fetch = registry_fetcher(registry.url, FAST_CLIENT)
    written = fetch(63)
    assert [s["name"] for s in written.named] == ["Meta", "Company"]  # dependencies first
    dec = ConfluentDecoder(reader, fetch)
    for i in range(6):
        rec = sample_record(i)
        assert dec.decode(encode_confluent(_with_meta(rec, i), split["full"], 63 + i % 2)) == _as_decoded(rec)
    subjects = [p for p in registry.paths if p.startswith("/subjects/")]
    assert sorted(subjects) == ["/subjects/company-value/versions/2", "/subjects/meta-value/versions/3"]


def test_missing_referenced_subject_is_a_decode_error(registry: SchemaRegistry, reader: dict[str, Any]) -> None:
    split = referencing_schemas(reader)
    registry.register(71, split["top"], references=[_ref(COMPANY, "no-such-subject", 1)])
    with pytest.raises(DecodeError, match="no-such-subject"):
        registry_fetcher(registry.url, FAST_CLIENT)(71)
    registry.register(72, split["company"], subject="company-value", version=1)
    registry.register(73, split["top"], references=[_ref(COMPANY, "company-value", 9)])
    with pytest.raises(DecodeError, match="version 9"):
        registry_fetcher(registry.url, FAST_CLIENT)(73)


def test_outage_while_resolving_a_reference_is_transient(registry: SchemaRegistry, reader: dict[str, Any]) -> None:
    """The id answers but its reference's subject does not: unavailable (retry), then the same decoder recovers."""
    split = referencing_schemas(reader)
    registry.register(81, split["company"], subject="company-value", version=1)
    registry.register(82, split["top"], references=[_ref(COMPANY, "company-value", 1)])
    dec = ConfluentDecoder(reader, registry_fetcher(registry.url, FAST_CLIENT))
    value = encode_confluent(SEED, split["full"], 82)
    registry.unavailable_prefix = "/subjects/"
    try:
        with pytest.raises(RegistryUnavailable) as info:
            dec.decode(value)
        assert not isinstance(info.value, DecodeError)
    finally:
        registry.unavailable_prefix = None
    assert dec.decode(value) == _as_decoded(SEED)


def test_reference_cycle_does_not_loop(registry: SchemaRegistry, reader: dict[str, Any]) -> None:
    split = referencing_schemas(reader)
    registry.register(
        91, split["company"], subject="company-value", version=1, references=[_ref("x.Top", "top-value", 1)]
    )
    registry.register(92, split["top"], subject="top-value", version=1, references=[_ref(COMPANY, "company-value", 1)])
    written = registry_fetcher(registry.url, FAST_CLIENT)(92)
    assert len(written.named) == 2  # each subject once, then stop


def test_non_avro_referenced_schema_is_a_decode_error(registry: SchemaRegistry, reader: dict[str, Any]) -> None:
    split = referencing_schemas(reader)
    registry.register(95, {"not": "checked"}, subject="proto-value", version=1)
    registry.register(96, split["top"], references=[_ref(COMPANY, "proto-value", 1)])
    dec = ConfluentDecoder(reader, registry_fetcher(registry.url, FAST_CLIENT))
    with pytest.raises(DecodeError):
        dec.decode(encode_confluent(SEED, split["full"], 96))
