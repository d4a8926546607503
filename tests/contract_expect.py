"""An independent reading of the contract (shared/contract/group-enrichment.md §2), for tests.

`expected_event(record)` builds the `group_enriched` event a GroupEnrichment record must
become. It is written from the contract's rules, generically (one loop over the Company
fields with a small rule table), on purpose in a different style from
`consumer/transform.py`, which spells the mapping out key by key: two readings of the same
table that must agree.

`records()` is a hypothesis strategy of decoded records, derived from the Avro schema
`schemas/avro/GroupEnrichment.avsc` by walking its types (so a field added to the schema is
generated without touching this file). Integration tests reuse both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "avro" / "GroupEnrichment.avsc"
EVENT_NAME = "group_enriched"

# Company fields, in the order of the contract's "Company fields" table.
COMPANY_FIELDS: tuple[str, ...] = (
    "annual_revenue",
    "city", "country", "country_code", "crunchbase_handle", "description", "domain",
    "domain_aliases",
    "email_addresses",
    "email_provider",
    "employees",
    "employees_range", "facebook_handle",
    "founded_year",
    "industry", "industry_group", "legal_name", "location", "logo",
    "market_cap",
    "name", "phone",
    "phone_numbers",
    "postal_code",
    "raised",
    "sector", "state", "state_code", "street_address", "street_name", "street_number", "sub_industry",
    "tags", "tech", "tech_categories",
    "time_zone",
    "traffic_rank",
    "twitter_handle", "type",
)  # fmt: skip

# The contract's conversion rules, as data.
LONG_AS_DECIMAL_STRING = frozenset({"annual_revenue", "market_cap", "raised", "traffic_rank"})
RENAMED = {"founded_year": "founder_year"}
JOINED = {"tech": ", "}  # array → one string; an empty array → null
TOP_LEVEL_PROPERTIES = {"group_type": "group_type", "name": "name", "planId": "plan_id", "planName": "plan_name"}

PROPERTY_KEYS: frozenset[str] = frozenset(
    [f"enrichment_{RENAMED.get(f, f)}" for f in COMPANY_FIELDS] + list(TOP_LEVEL_PROPERTIES)
)
assert len(PROPERTY_KEYS) == 43, len(PROPERTY_KEYS)

REQUIRED_NON_EMPTY = ("user_id", "group_id")

# timestamp-millis values a Python datetime can hold (years 1..9999).
MIN_MILLIS = -62_135_596_800_000
MAX_MILLIS = 253_402_300_799_999


class ContractViolation(ValueError):
    """The record breaks a rule of the contract: it must be dead-lettered as invalid_record."""


def _convert(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field in LONG_AS_DECIMAL_STRING:
        return f"{value:d}"
    if field in JOINED:
        return JOINED[field].join(value) if len(value) > 0 else None
    if isinstance(value, list):
        return list(value)
    return value


def expected_timestamp(enriched_at: int | datetime) -> str:
    """ISO-8601 UTC, 6 fractional digits, 'Z', assembled field by field."""
    if isinstance(enriched_at, datetime):
        if enriched_at.tzinfo is None:
            raise TypeError("timestamp-millis decodes to an aware datetime; a naive one is ambiguous")
        moment = enriched_at.astimezone(UTC)
    else:
        seconds, millis = divmod(enriched_at, 1000)
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=millis * 1000)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def expected_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """The event the contract requires for `record`; `ContractViolation` if it must be dead-lettered."""
    for required in REQUIRED_NON_EMPTY:
        if not record.get(required):
            raise ContractViolation(f"{required} is empty")
    company = record["company"]
    properties: dict[str, Any] = {}
    for field in COMPANY_FIELDS:
        properties[f"enrichment_{RENAMED.get(field, field)}"] = _convert(field, company.get(field))
    for prop, source in TOP_LEVEL_PROPERTIES.items():
        properties[prop] = record.get(source)
    return {
        "user_id": record["user_id"],
        "event_name": EVENT_NAME,
        "properties": properties,
        "context": {"group_id": record["group_id"]},
        "timestamp": expected_timestamp(record["enriched_at"]),
    }


# ---- hypothesis strategies, derived from the Avro schema -------------------------------------------

_INT32 = st.integers(-(2**31), 2**31 - 1)
_INT64 = st.integers(-(2**63), 2**63 - 1)
# Short lists of short strings keep examples small; the alphabet still includes any non-surrogate code point.
_TEXT = st.text(max_size=12)


def enriched_at_values() -> st.SearchStrategy[int | datetime]:
    """Plain millis (a writer without the logicalType) or an aware UTC datetime at ms precision (fastavro)."""
    millis = st.one_of(
        st.integers(MIN_MILLIS, MAX_MILLIS),
        st.sampled_from([0, -1, 1, 1729439495059, MIN_MILLIS, MAX_MILLIS]),
    )
    return st.one_of(millis, millis.map(lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)))


def _strategy(avro_type: Any, overrides: Mapping[str, st.SearchStrategy[Any]], path: str) -> st.SearchStrategy[Any]:
    if isinstance(avro_type, list):  # a union
        return st.one_of(*(_strategy(branch, overrides, path) for branch in avro_type))
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if avro_type.get("logicalType") == "timestamp-millis":
            return enriched_at_values()
        if kind == "array":
            return st.lists(_strategy(avro_type["items"], overrides, path), max_size=4)
        if kind == "record":
            fields = {}
            for f in avro_type["fields"]:
                sub = f"{path}.{f['name']}" if path else f["name"]
                fields[f["name"]] = overrides[sub] if sub in overrides else _strategy(f["type"], overrides, sub)
            return st.fixed_dictionaries(fields)
        return _strategy(kind, overrides, path)
    return {
        "null": st.none(),
        "string": _TEXT,
        "int": _INT32,
        "long": _INT64,
        "boolean": st.booleans(),
    }[avro_type]


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def records(valid: bool = True, schema: dict[str, Any] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Decoded GroupEnrichment records (as fastavro returns them); `valid` makes the required ids non-empty."""
    overrides: dict[str, st.SearchStrategy[Any]] = {}
    if valid:
        overrides = {name: st.text(min_size=1, max_size=12) for name in REQUIRED_NON_EMPTY}
    return _strategy(schema or load_schema(), overrides, "")
