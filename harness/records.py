"""Sample GroupEnrichment records and their wire encodings, for tests, the demo and benchmarks.

Three writer schemas exercise Avro schema resolution: `older` lacks fields the reader has
(they resolve to the reader's defaults), `newer` carries fields the reader does not know.
"""

from __future__ import annotations

import copy
import io
import json
import random
import struct
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_writer

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "avro" / "GroupEnrichment.avsc"

# The Track API page's example, as the upstream record that produces it.
SEED: dict[str, Any] = {
    "user_id": "d4e8f7a2-6789-4abc-bc03-12cd345ef678",
    "group_id": "group_456",
    "group_type": "Product",
    "name": "Tech Innovators Group",
    "plan_id": "a1b2c3d4-e5f6-7g8h-9i0j-k1l2m3n4o5p6",
    "plan_name": "Enterprise Plan",
    "enriched_at": 1729439495059,
    "company": {
        "annual_revenue": 500000,
        "city": "Austin",
        "country": "United States",
        "country_code": "US",
        "crunchbase_handle": "example-company",
        "description": "Innovative solutions for a digital world, specializing in cloud services and analytics.",
        "domain": "examplecompany.com",
        "domain_aliases": None,
        "email_addresses": ["info@examplecompany.com"],
        "email_provider": "Gmail",
        "employees": 50,
        "employees_range": "51-100",
        "facebook_handle": "exampleco.fb",
        "founded_year": 2018,
        "industry": "Technology",
        "industry_group": "Software",
        "legal_name": "Example Company LLC",
        "location": "123 Tech Lane, Austin, Texas 78701, US",
        "logo": "https://example.com/logo.png",
        "market_cap": 3000000,
        "name": "Example Company",
        "phone": "+1-512-555-0199",
        "phone_numbers": ["+1-512-555-0199"],
        "postal_code": "78701",
        "raised": 1500000,
        "sector": "Tech Services",
        "state": "Texas",
        "state_code": "TX",
        "street_address": "123 Tech Lane",
        "street_name": "Tech Lane",
        "street_number": "123",
        "sub_industry": "Cloud Computing",
        "tags": ["SaaS", "Cloud", "Analytics"],
        "tech": ["AWS", "Azure"],
        "tech_categories": ["Cloud Computing", "Data Analytics"],
        "time_zone": "America/Chicago",
        "traffic_rank": 50000,
        "twitter_handle": "@exampleco",
        "type": "Private",
    },
}

# Fields the older writer does not have yet, and fields only the newer writer has.
OLDER_LACKS = {"top": ("plan_name",), "company": ("traffic_rank", "tech_categories", "domain_aliases")}
NEWER_ADDS = {
    "top": ({"name": "source", "type": ["null", "string"], "default": None},),
    "company": ({"name": "linkedin_handle", "type": ["null", "string"], "default": None},),
}


def reader_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def writer_schemas() -> dict[str, dict[str, Any]]:
    """`older`, `current` (the reader schema) and `newer` writer schemas."""
    current = reader_schema()
    older = copy.deepcopy(current)
    older["fields"] = [f for f in older["fields"] if f["name"] not in OLDER_LACKS["top"]]
    company = next(f for f in older["fields"] if f["name"] == "company")["type"]
    company["fields"] = [f for f in company["fields"] if f["name"] not in OLDER_LACKS["company"]]
    newer = copy.deepcopy(current)
    newer["fields"].insert(2, *NEWER_ADDS["top"])
    company = next(f for f in newer["fields"] if f["name"] == "company")["type"]
    company["fields"].append(*NEWER_ADDS["company"])
    return {"older": older, "current": current, "newer": newer}


def as_written_by(record: dict[str, Any], version: str) -> dict[str, Any]:
    """The record as the reader sees it after resolution from `version`'s writer schema."""
    out = copy.deepcopy(record)
    if version == "older":
        out["plan_name"] = None
        out["company"].update(traffic_rank=None, tech_categories=[], domain_aliases=None)
    return out


def sample_record(i: int, tag: str = "r", rng: random.Random | None = None) -> dict[str, Any]:
    """A varied record whose `user_id` is unique per (tag, i): nulls, empty arrays, long strings."""
    rng = rng or random.Random(i)
    rec = copy.deepcopy(SEED)
    rec["user_id"] = f"{tag}-user-{i}"
    rec["group_id"] = f"group-{i % 97}"
    rec["enriched_at"] = 1729439495059 + i * 1000
    c = rec["company"]
    if i % 3 == 0:
        rec["plan_id"] = rec["plan_name"] = None
        c["annual_revenue"] = None
        c["tech"] = []
    if i % 5 == 0:
        c["domain_aliases"] = [f"alias{i}.example", f"alias{i}.example.org"]
        c["tags"] = []
    if i % 7 == 0:
        c["employees"] = c["founded_year"] = c["market_cap"] = None
    c["raised"] = rng.randrange(0, 2**40) if i % 2 else None
    c["description"] = f"company {i} " + "x" * rng.randrange(0, 400)
    return rec


_PARSED: dict[int, Any] = {}


def _parsed(schema: dict[str, Any]) -> Any:
    key = id(schema)
    if key not in _PARSED:
        _PARSED[key] = parse_schema(schema)
    return _PARSED[key]


def encode_raw(record: dict[str, Any], schema: dict[str, Any] | None = None) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, _parsed(schema or _reader()), record)
    return buf.getvalue()


def encode_confluent(record: dict[str, Any], schema: dict[str, Any], schema_id: int) -> bytes:
    return b"\x00" + struct.pack(">i", schema_id) + encode_raw(record, schema)


_READER: list[dict[str, Any]] = []


def _reader() -> dict[str, Any]:
    if not _READER:
        _READER.append(reader_schema())
    return _READER[0]
