"""consumer.transform.to_event: the contract's mapping, the Track API page's example, edge values."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.transform import EVENT_NAME, InvalidRecord, iso_timestamp, to_event
from harness.records import SEED, sample_record
from harness.reference import PAGE_FILE, page_example_event, page_example_payload, page_json_block
from tests.contract_expect import (
    COMPANY_FIELDS,
    MAX_MILLIS,
    MIN_MILLIS,
    PROPERTY_KEYS,
    ContractViolation,
    expected_event,
    records,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LONG_FIELDS = ("annual_revenue", "market_cap", "raised", "traffic_rank")
ARRAY_FIELDS = ("email_addresses", "phone_numbers", "tags", "tech_categories")


def _page() -> str:
    """The reference page itself: only beside the repo in the project's workspace."""
    if not PAGE_FILE.exists():
        pytest.skip(f"Track API reference page not beside the repo ({PAGE_FILE}): only the in-repo fixture is checked")
    return PAGE_FILE.read_text()


def _page_example() -> list[dict[str, Any]]:
    """The page's example payload, from the in-repo fixture (harness/fixtures/)."""
    return page_example_payload()


def _page_property_table() -> list[str]:
    section = _page().split("### Event Properties", 1)[1].split("###", 1)[0]
    return re.findall(r"^\|\s*([A-Za-z_]+)\s*\|\s*(?:String|Integer|Object|Array)\s*\|", section, re.MULTILINE)


def _json(event: dict[str, Any]) -> Any:
    return orjson.loads(orjson.dumps(event))


def _record(**company: Any) -> dict[str, Any]:
    rec = copy.deepcopy(SEED)
    rec["company"].update(company)
    return rec


def _props(**company: Any) -> dict[str, Any]:
    return to_event(_record(**company))["properties"]


def _millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


# ---- golden: the page's sample values → the page's example payload ------------------------------


def test_seed_record_gives_the_page_example_payload() -> None:
    example = _page_example()
    assert isinstance(example, list) and len(example) == 1
    assert _json(to_event(SEED)) == example[0]


def test_seed_record_decoded_as_avro_gives_the_page_example_payload() -> None:
    """The same, through real Avro decoding (enriched_at arrives as epoch millis)."""
    from consumer.decode import RawDecoder, load_schema
    from harness.records import encode_raw

    decoded = RawDecoder(load_schema()).decode(encode_raw(SEED))
    assert decoded["enriched_at"] == SEED["enriched_at"]
    assert _json(to_event(decoded)) == _page_example()[0]


def test_independent_reading_agrees_with_the_page() -> None:
    assert _json(expected_event(SEED)) == _page_example()[0]


def test_fixture_is_the_page_example_verbatim() -> None:
    """The in-repo fixture has not drifted from the page (when the page is there to compare)."""
    assert page_json_block(_page()) == page_example_payload()


def test_fixture_has_the_43_property_keys() -> None:
    assert set(page_example_event()["properties"]) == PROPERTY_KEYS


def test_property_keys_are_exactly_the_page_table() -> None:
    table = _page_property_table()
    assert len(table) == 43 and len(set(table)) == 43
    assert set(table) == PROPERTY_KEYS
    assert set(to_event(SEED)["properties"]) == set(table)


# ---- shape -------------------------------------------------------------------------------------------


def test_envelope() -> None:
    event = to_event(SEED)
    assert set(event) == {"user_id", "event_name", "properties", "context", "timestamp"}
    assert event["event_name"] == EVENT_NAME == "group_enriched"
    assert event["user_id"] == SEED["user_id"]
    assert event["context"] == {"group_id": SEED["group_id"]}


def test_all_sources_null_or_empty_gives_all_43_keys() -> None:
    rec = copy.deepcopy(SEED)
    rec.update(group_type=None, name=None, plan_id=None, plan_name=None)
    for f in COMPANY_FIELDS:
        rec["company"][f] = [] if f in (*ARRAY_FIELDS, "tech") else None
    props = to_event(rec)["properties"]
    assert set(props) == PROPERTY_KEYS
    for key, value in props.items():
        if key.removeprefix("enrichment_") in ARRAY_FIELDS:
            assert value == [], key  # arrays stay arrays: an empty source array is []
        else:
            assert value is None, key


@given(records())
def test_all_43_keys_always_present(record: dict[str, Any]) -> None:
    props = to_event(record)["properties"]
    assert set(props) == PROPERTY_KEYS
    assert len(props) == 43


def test_input_record_is_not_mutated() -> None:
    rec = sample_record(5)
    before = copy.deepcopy(rec)
    to_event(rec)
    assert rec == before


def test_top_level_properties_are_renamed_plan_fields() -> None:
    rec = copy.deepcopy(SEED)
    rec.update(group_type="Account", name="N", plan_id="pid", plan_name="pname")
    props = to_event(rec)["properties"]
    assert (props["group_type"], props["name"], props["planId"], props["planName"]) == ("Account", "N", "pid", "pname")
    assert "plan_id" not in props and "plan_name" not in props


def test_company_name_and_group_name_are_distinct() -> None:
    rec = copy.deepcopy(SEED)
    rec["name"] = "group name"
    rec["company"]["name"] = "company name"
    props = to_event(rec)["properties"]
    assert props["name"] == "group name"
    assert props["enrichment_name"] == "company name"


# ---- conversions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", LONG_FIELDS)
@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (-1, "-1"), (-500000, "-500000"), (500000, "500000"), (2**63 - 1, "9223372036854775807"),
     (-(2**63), "-9223372036854775808"), (None, None)],
)  # fmt: skip
def test_long_becomes_decimal_string(field: str, value: int | None, text: str | None) -> None:
    assert _props(**{field: value})[f"enrichment_{field}"] == text


def test_int_fields_stay_ints() -> None:
    props = _props(employees=0, founded_year=-1)
    assert props["enrichment_employees"] == 0 and isinstance(props["enrichment_employees"], int)
    assert props["enrichment_founder_year"] == -1


@pytest.mark.parametrize(
    ("tech", "joined"),
    [
        ([], None),
        (["AWS"], "AWS"),
        (["AWS", "Azure"], "AWS, Azure"),
        (["a, b", "c"], "a, b, c"),  # no escaping: the contract only says "joined with ', '"
        (["", ""], ", "),
        ([" x "], " x "),
    ],
)
def test_tech_is_joined(tech: list[str], joined: str | None) -> None:
    assert _props(tech=tech)["enrichment_tech"] == joined


def test_tech_single_empty_string_is_not_an_empty_array() -> None:
    assert _props(tech=[""])["enrichment_tech"] == ""


@pytest.mark.parametrize("aliases", [None, [], ["a.example"], ["a.example", "b.example"]])
def test_domain_aliases_null_vs_empty_vs_list(aliases: list[str] | None) -> None:
    value = _props(domain_aliases=aliases)["enrichment_domain_aliases"]
    assert value == aliases
    assert (value is None) == (aliases is None)


@pytest.mark.parametrize("field", ARRAY_FIELDS)
@pytest.mark.parametrize("value", [[], ["one"], ["one", "two", ""]])
def test_arrays_stay_arrays(field: str, value: list[str]) -> None:
    assert _props(**{field: value})[f"enrichment_{field}"] == value


@pytest.mark.parametrize("year", [None, 0, 1066, 2018])
def test_founded_year_is_renamed_founder_year(year: int | None) -> None:
    props = _props(founded_year=year)
    assert props["enrichment_founder_year"] == year
    assert "enrichment_founded_year" not in props


@pytest.mark.parametrize("field", [f for f in COMPANY_FIELDS if f not in (*LONG_FIELDS, "tech", "founded_year")])
def test_every_other_company_field_passes_through(field: str) -> None:
    value: Any = ["x", "y"] if field in (*ARRAY_FIELDS, "domain_aliases") else 7 if field == "employees" else "v"
    props = _props(**{field: value})
    assert props[f"enrichment_{field}"] == value
    empty: Any = [] if field in ARRAY_FIELDS else None
    assert _props(**{field: empty})[f"enrichment_{field}"] == empty


# ---- timestamp ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        (1729439495059, "2024-10-20T15:51:35.059000Z"),
        (0, "1970-01-01T00:00:00.000000Z"),
        (1, "1970-01-01T00:00:00.001000Z"),
        (-1, "1969-12-31T23:59:59.999000Z"),
        (-1000, "1969-12-31T23:59:59.000000Z"),
        (-86_400_001, "1969-12-30T23:59:59.999000Z"),
        (MIN_MILLIS, "0001-01-01T00:00:00.000000Z"),
        (MAX_MILLIS, "9999-12-31T23:59:59.999000Z"),
        (_millis(datetime(999, 3, 4, 5, 6, 7, 8000, tzinfo=UTC)), "0999-03-04T05:06:07.008000Z"),
        (_millis(datetime(99, 12, 31, tzinfo=UTC)), "0099-12-31T00:00:00.000000Z"),
    ],
)
def test_timestamp_from_millis(millis: int, text: str) -> None:
    assert iso_timestamp(millis) == text
    assert iso_timestamp(EPOCH + timedelta(milliseconds=millis)) == text
    rec = copy.deepcopy(SEED)
    rec["enriched_at"] = millis
    assert to_event(rec)["timestamp"] == text


def test_timestamp_from_aware_non_utc_datetime_is_converted_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert iso_timestamp(datetime(2024, 10, 20, 17, 51, 35, 59000, tzinfo=plus2)) == "2024-10-20T15:51:35.059000Z"
    minus5 = timezone(timedelta(hours=-5, minutes=-30))
    assert iso_timestamp(datetime(2024, 12, 31, 20, 0, tzinfo=minus5)) == "2025-01-01T01:30:00.000000Z"


def test_timestamp_keeps_microseconds_of_a_datetime() -> None:
    assert iso_timestamp(datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)) == "2024-01-02T03:04:05.123456Z"


@given(st.integers(MIN_MILLIS, MAX_MILLIS))
def test_timestamp_int_and_datetime_inputs_agree(millis: int) -> None:
    text = iso_timestamp(millis)
    assert text == iso_timestamp(EPOCH + timedelta(milliseconds=millis))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}000Z", text), text
    # It parses back to the same instant.
    assert _millis(datetime.fromisoformat(text)) == millis


# ---- required fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["user_id", "group_id"])
def test_empty_required_field_is_invalid(field: str) -> None:
    rec = copy.deepcopy(SEED)
    rec[field] = ""
    with pytest.raises(InvalidRecord, match=field):
        to_event(rec)
    with pytest.raises(ContractViolation):
        expected_event(rec)


def test_invalid_record_is_a_value_error() -> None:
    assert issubclass(InvalidRecord, ValueError)


@pytest.mark.parametrize("value", [" ", "0", "\u200b"])
def test_non_empty_ids_are_accepted_verbatim(value: str) -> None:
    rec = copy.deepcopy(SEED)
    rec["user_id"] = rec["group_id"] = value
    event = to_event(rec)
    assert event["user_id"] == value and event["context"]["group_id"] == value


# ---- the independent reading -------------------------------------------------------------------------


@given(records())
def test_to_event_matches_the_independent_reading(record: dict[str, Any]) -> None:
    event = to_event(record)
    assert event == expected_event(record)
    # And it survives JSON unchanged (what the API receives).
    assert _json(event) == expected_event(record)


@given(records(valid=False))
def test_to_event_and_the_independent_reading_agree_on_validity(record: dict[str, Any]) -> None:
    invalid = not record["user_id"] or not record["group_id"]
    if invalid:
        with pytest.raises(InvalidRecord):
            to_event(record)
        with pytest.raises(ContractViolation):
            expected_event(record)
    else:
        assert set(to_event(record)["properties"]) == set(expected_event(record)["properties"])


@pytest.mark.parametrize("i", range(0, 30))
def test_harness_sample_records_match_the_independent_reading(i: int) -> None:
    rec = sample_record(i)
    assert _json(to_event(rec)) == _json(expected_event(rec))
