"""The Track API page's example payload, kept in the repo so a fresh clone can compare against it.

`harness/fixtures/track-api-group-enriched.example.json` is the page's "Example JSON Payload"
block, verbatim. The page itself (`../shared/reference/track-api-group-enriched.md`) is only
beside the repo in the project's workspace; when it is, a unit test checks the fixture still
equals the page's block.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

EXAMPLE_FILE = Path(__file__).resolve().parent / "fixtures" / "track-api-group-enriched.example.json"
PAGE_FILE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "track-api-group-enriched.md"


def page_example_payload() -> list[dict[str, Any]]:
    """The example request body: a JSON array holding one `group_enriched` event."""
    return json.loads(EXAMPLE_FILE.read_text())


def page_example_event() -> dict[str, Any]:
    """The one event of the example payload."""
    return page_example_payload()[0]


def page_json_block(page_text: str) -> list[dict[str, Any]]:
    """The first ```json block of the reference page, parsed."""
    match = re.search(r"```json\s*\n(.*?)```", page_text, re.DOTALL)
    if match is None:
        raise ValueError("no ```json block in the Track API reference page")
    return json.loads(match.group(1))
