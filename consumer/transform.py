"""GroupEnrichment record (as decoded by fastavro) → `group_enriched` Track API event. Pure.

The mapping is the contract's table (shared/contract/group-enrichment.md §2), written out
key by key so it can be read against the Track API page line by line.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

EVENT_NAME = "group_enriched"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_YEAR_1000_S = int((datetime(1000, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds())
_YEAR_10000_S = int((datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - _EPOCH).total_seconds()) + 1


class InvalidRecord(ValueError):
    """The record decoded, but breaks a rule of the contract (e.g. an empty required field)."""


def to_event(record: dict[str, Any]) -> dict[str, Any]:
    """Map one decoded record to one event; `InvalidRecord` when a required field is empty."""
    user_id = record["user_id"]
    group_id = record["group_id"]
    if not user_id:
        raise InvalidRecord("user_id is empty")
    if not group_id:
        raise InvalidRecord("group_id is empty")
    c = record["company"]
    return {
        "user_id": user_id,
        "event_name": EVENT_NAME,
        "properties": {
            "enrichment_annual_revenue": _decimal(c["annual_revenue"]),
            "enrichment_city": c["city"],
            "enrichment_country": c["country"],
            "enrichment_country_code": c["country_code"],
            "enrichment_crunchbase_handle": c["crunchbase_handle"],
            "enrichment_description": c["description"],
            "enrichment_domain": c["domain"],
            "enrichment_domain_aliases": c["domain_aliases"],
            "enrichment_email_addresses": c["email_addresses"],
            "enrichment_email_provider": c["email_provider"],
            "enrichment_employees": c["employees"],
            "enrichment_employees_range": c["employees_range"],
            "enrichment_facebook_handle": c["facebook_handle"],
            "enrichment_founder_year": c["founded_year"],  # renamed on the Track API side
            "enrichment_industry": c["industry"],
            "enrichment_industry_group": c["industry_group"],
            "enrichment_legal_name": c["legal_name"],
            "enrichment_location": c["location"],
            "enrichment_logo": c["logo"],
            "enrichment_market_cap": _decimal(c["market_cap"]),
            "enrichment_name": c["name"],
            "enrichment_phone": c["phone"],
            "enrichment_phone_numbers": c["phone_numbers"],
            "enrichment_postal_code": c["postal_code"],
            "enrichment_raised": _decimal(c["raised"]),
            "enrichment_sector": c["sector"],
            "enrichment_state": c["state"],
            "enrichment_state_code": c["state_code"],
            "enrichment_street_address": c["street_address"],
            "enrichment_street_name": c["street_name"],
            "enrichment_street_number": c["street_number"],
            "enrichment_sub_industry": c["sub_industry"],
            "enrichment_tags": c["tags"],
            "enrichment_tech": ", ".join(c["tech"]) if c["tech"] else None,
            "enrichment_tech_categories": c["tech_categories"],
            "enrichment_time_zone": c["time_zone"],
            "enrichment_traffic_rank": _decimal(c["traffic_rank"]),
            "enrichment_twitter_handle": c["twitter_handle"],
            "enrichment_type": c["type"],
            "group_type": record["group_type"],
            "name": record["name"],
            "planId": record["plan_id"],
            "planName": record["plan_name"],
        },
        "context": {"group_id": group_id},
        "timestamp": iso_timestamp(record["enriched_at"]),
    }


def iso_timestamp(enriched_at: int | datetime) -> str:
    """ISO-8601 UTC with 6 fractional digits and 'Z': 1729439495059 → '2024-10-20T15:51:35.059000Z'."""
    if isinstance(enriched_at, int):  # the decoder keeps timestamp-millis as epoch millis
        seconds, millis = divmod(enriched_at, 1000)
        if _YEAR_1000_S <= seconds < _YEAR_10000_S:  # gmtime+strftime is the fast path (%Y pads no further)
            return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}000Z"
        try:
            enriched_at = _EPOCH + timedelta(milliseconds=enriched_at)
        except OverflowError:
            raise InvalidRecord(f"enriched_at {enriched_at} is outside the years 1-9999") from None
    # isoformat zero-pads the year; UTC always ends in "+00:00".
    return enriched_at.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _decimal(value: int | None) -> str | None:
    return None if value is None else str(value)
