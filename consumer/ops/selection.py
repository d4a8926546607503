"""Dead letters as operators see them: parsing, filters, statistics, redrive decisions, times. Pure."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from consumer.ops import headers as h

TOP_MESSAGES = 5
MESSAGE_CHARS = 160  # of an error message in `dlq stats` and `dlq list`


class UsageError(ValueError):
    """A command-line value is wrong; the message names it (exit code 2)."""


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, with its coordinates there."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: h.Headers = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return None if v is None else v.decode("utf-8", "replace")
        return None

    @property
    def reason(self) -> str:
        return self.header(h.REASON) or "unknown"

    @property
    def message(self) -> str:
        return self.header(h.MESSAGE) or ""

    @property
    def source_topic(self) -> str | None:
        return self.header(h.SOURCE_TOPIC)

    @property
    def source_partition(self) -> int | None:
        return _int(self.header(h.SOURCE_PARTITION))

    @property
    def source_offset(self) -> int | None:
        return _int(self.header(h.SOURCE_OFFSET))

    @property
    def attempts(self) -> int:
        return h.attempts(self.headers)

    @property
    def value_omitted(self) -> bool:
        return self.header(h.VALUE_OMITTED) is not None

    @property
    def coordinates(self) -> str:
        """Where the dead letter is: `<dlq topic>/<partition>/<offset>`."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def source(self) -> str:
        """Where its record was: `<topic>/<partition>/<offset>`."""
        return f"{self.source_topic or '?'}/{_or_q(self.source_partition)}/{_or_q(self.source_offset)}"


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _or_q(n: int | None) -> str:
    return "?" if n is None else str(n)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command works on; empty fields select everything."""

    reasons: tuple[str, ...] = ()
    since_ms: int | None = None  # dead-lettered at or after (the dead letter's timestamp)
    until_ms: int | None = None  # dead-lettered before
    source_partitions: tuple[int, ...] = ()

    def matches(self, d: DeadLetter) -> bool:
        if self.reasons and d.reason not in self.reasons:
            return False
        if self.since_ms is not None and d.timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and d.timestamp_ms >= self.until_ms:
            return False
        return not (self.source_partitions and d.source_partition not in self.source_partitions)

    def describe(self) -> str:
        parts = []
        if self.reasons:
            parts.append("reason " + ",".join(self.reasons))
        if self.since_ms is not None:
            parts.append("since " + iso(self.since_ms))
        if self.until_ms is not None:
            parts.append("until " + iso(self.until_ms))
        if self.source_partitions:
            parts.append("source partition " + ",".join(map(str, self.source_partitions)))
        return ", ".join(parts) or "all dead letters"


def redrive_group(base_group: str, selection: Selection, to_topic: str | None, max_attempts: int) -> str:
    """The consumer group holding one selection's redrive progress on the dead-letter topic.

    Derived from everything that decides which records a redrive publishes, so a redrive with
    another filter starts from the beginning (it must still find its records) while the same
    command run again resumes where the last run stopped. `--limit` and `--dry-run` do not
    select and are not part of it.
    """
    spec = orjson.dumps(
        {
            "reasons": sorted(selection.reasons),
            "since": selection.since_ms,
            "until": selection.until_ms,
            "source_partitions": sorted(selection.source_partitions),
            "to": to_topic,
            "max_attempts": max_attempts,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return f"{base_group}.redrive.{hashlib.sha256(spec).hexdigest()[:12]}"


def skip_reason(d: DeadLetter, max_attempts: int) -> str | None:
    """Why a selected dead letter must not be published again, or None to redrive it."""
    if d.value_omitted:
        return "value_omitted"  # the record was too large to keep: nothing to publish
    if d.value is None:
        return "no_value"
    if d.attempts >= max_attempts:
        return "max_attempts"
    return None


@dataclass
class Stats:
    """`dlq stats`: dead letters by reason, source partition, attempts; time range; top messages."""

    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_source_partition: Counter[str] = field(default_factory=Counter)
    by_attempts: Counter[int] = field(default_factory=Counter)
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)
    oldest: DeadLetter | None = None
    newest: DeadLetter | None = None
    value_omitted: int = 0

    def add(self, d: DeadLetter) -> None:
        self.total += 1
        self.by_reason[d.reason] += 1
        self.by_source_partition[f"{d.source_topic or '?'}/{_or_q(d.source_partition)}"] += 1
        self.by_attempts[d.attempts] += 1
        self.messages[(d.reason, short(d.message))] += 1
        self.value_omitted += d.value_omitted
        if self.oldest is None or d.timestamp_ms < self.oldest.timestamp_ms:
            self.oldest = d
        if self.newest is None or d.timestamp_ms >= self.newest.timestamp_ms:
            self.newest = d

    def as_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "by_reason": dict(self.by_reason.most_common()),
            "by_source_partition": dict(sorted(self.by_source_partition.items())),
            "by_attempts": {str(k): v for k, v in sorted(self.by_attempts.items())},
            "value_omitted": self.value_omitted,
            "oldest": _edge(self.oldest),
            "newest": _edge(self.newest),
            "top_messages": [
                {"reason": r, "message": m, "count": n} for (r, m), n in self.messages.most_common(TOP_MESSAGES)
            ],
        }

    def render(self, topic: str) -> str:
        if not self.total:
            return f"dead-letter topic {topic}: empty"
        w = max(16, *(len(p) for p in self.by_source_partition))
        lines = [f"dead-letter topic {topic}: {self.total} dead letters"]
        lines.append("by reason")
        lines += [f"  {r:<{w}} {n:>8}" for r, n in self.by_reason.most_common()]
        lines.append("by source partition")
        lines += [f"  {p:<{w}} {n:>8}" for p, n in sorted(self.by_source_partition.items(), key=_partition_order)]
        lines.append("by attempts")
        lines += [f"  {a:<{w}} {n:>8}" for a, n in sorted(self.by_attempts.items())]
        if self.value_omitted:
            lines.append(f"value omitted (too large to redrive): {self.value_omitted}")
        assert self.oldest is not None and self.newest is not None
        for label, d in (("oldest", self.oldest), ("newest", self.newest)):
            lines.append(f"{label}  {iso(d.timestamp_ms)}  {d.coordinates} (source {d.source})")
        lines.append("most frequent messages")
        lines += [f"  {n:>8}  {r:<14} {m}" for (r, m), n in self.messages.most_common(TOP_MESSAGES)]
        return "\n".join(lines)


def _partition_order(item: tuple[str, int]) -> tuple[str, int]:
    topic, _, p = item[0].rpartition("/")
    return (topic, int(p) if p.isdigit() else -1)


def _edge(d: DeadLetter | None) -> dict[str, object] | None:
    if d is None:
        return None
    return {"timestamp": iso(d.timestamp_ms), "dead_letter": d.coordinates, "source": d.source}


def short(message: str, limit: int = MESSAGE_CHARS) -> str:
    one_line = " ".join(message.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def list_line(d: DeadLetter) -> str:
    """One line of `dlq list`."""
    size = f"omitted({d.header(h.VALUE_SIZE) or '?'}B)" if d.value_omitted else _size(d.value)
    return (
        f"{iso(d.timestamp_ms)}  {d.coordinates:<24} source {d.source:<28} {d.reason:<14} "
        f"attempts {d.attempts}  key {_size(d.key)} value {size}  {short(d.message)}"
    )


def list_json(d: DeadLetter) -> dict[str, object]:
    """One object of `dlq list --json`."""
    return {
        "timestamp": iso(d.timestamp_ms),
        "dead_letter": {"topic": d.topic, "partition": d.partition, "offset": d.offset},
        "source": {"topic": d.source_topic, "partition": d.source_partition, "offset": d.source_offset},
        "reason": d.reason,
        "message": d.message,
        "attempts": d.attempts,
        "http_status": _int(d.header(h.HTTP_STATUS)),
        "key_bytes": None if d.key is None else len(d.key),
        "value_bytes": None if d.value is None else len(d.value),
        "value_omitted": d.value_omitted,
    }


def _size(b: bytes | None) -> str:
    return "-" if b is None else f"{len(b)}B"


def iso(ms: int) -> str:
    """Epoch milliseconds as UTC ISO 8601 with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)(ms|s|m|h|d)(?:\s*ago)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(text: str, now_ms: int) -> int:
    """A point in time as epoch milliseconds: ISO 8601 (UTC unless it says otherwise),
    epoch milliseconds, or a duration before now (`90m`, `-2h`, `1d ago`)."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    if m := _RELATIVE.match(t):
        return now_ms - int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    try:
        parsed = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"not a time: {text!r} (use ISO 8601 like 2026-12-02T09:30:00Z, epoch ms, or a duration ago like 2h)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)
