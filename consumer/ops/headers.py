"""Dead-letter and redrive header names, and what a dead letter carries from its record. Pure.

Shared by the consumer (which writes dead letters) and `dlq redrive` (which reads them and
publishes their records again), so both sides agree on every name.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[str, bytes | None]]

PREFIX = "dlq."
REASON = "dlq.reason"
MESSAGE = "dlq.error.message"
SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
HTTP_STATUS = "dlq.http.status"
# Written by the consumer when a dead letter could not carry its (oversized) value.
VALUE_OMITTED = "dlq.value.omitted"
VALUE_SIZE = "dlq.value.size"
# Set by `dlq redrive` on a record it publishes again: the dead letter it came from
# (`<topic>/<partition>/<offset>`) and how many times the record has failed so far.
REDRIVE_FROM = "dlq.redrive.from"
ATTEMPTS = "dlq.attempts"


def attempts(headers: Iterable[tuple[str, bytes | None]] | None) -> int:
    """How many times the record has failed: its `dlq.attempts` header, 1 when absent or unreadable."""
    for name, value in headers or ():
        if name == ATTEMPTS and value:
            try:
                return max(int(value), 1)
            except ValueError:
                return 1
    return 1


def carried(original: Headers | None) -> Headers:
    """The headers a dead letter copies from its record: the record's own ones (not `dlq.*`),
    and, for a record `dlq redrive` published again, where it came from and its failure count
    plus this failure (so `--max-attempts` can stop a record that keeps failing)."""
    if not original:
        return []
    out: Headers = [(k, v) for k, v in original if not k.startswith(PREFIX)]
    redriven = dict((k, v) for k, v in original if k in (REDRIVE_FROM, ATTEMPTS))
    if REDRIVE_FROM in redriven or ATTEMPTS in redriven:
        if redriven.get(REDRIVE_FROM) is not None:
            out.append((REDRIVE_FROM, redriven[REDRIVE_FROM]))
        out.append((ATTEMPTS, str(attempts(original) + 1).encode()))
    return out


def republished(dead_letter: Headers | None, coordinates: str) -> Headers:
    """The headers `dlq redrive` publishes a dead letter's record with: its original headers
    (without `dlq.*`), `dlq.redrive.from` and the failure count so far."""
    kept: Headers = [(k, v) for k, v in dead_letter or () if not k.startswith(PREFIX)]
    return [*kept, (REDRIVE_FROM, coordinates.encode()), (ATTEMPTS, str(attempts(dead_letter)).encode())]
