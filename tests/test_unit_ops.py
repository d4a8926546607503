"""The operator tools' pure parts: headers a dead letter carries, selections, statistics, offset plans."""

from __future__ import annotations

import io

import pytest

from consumer.ops import cli, plan
from consumer.ops import headers as h
from consumer.ops.selection import DeadLetter, Selection, Stats, UsageError, parse_time, redrive_group, skip_reason

NOW = 1_796_200_000_000  # 2026-12-02T08:26:40Z


def letter(offset: int = 0, reason: str = "rejected", ts: int = NOW, partition: int = 0, **extra: bytes) -> DeadLetter:
    headers: h.Headers = [
        (h.REASON, reason.encode()),
        (h.MESSAGE, b"refused"),
        (h.SOURCE_TOPIC, b"src"),
        (h.SOURCE_PARTITION, str(partition).encode()),
        (h.SOURCE_OFFSET, str(100 + offset).encode()),
        ("trace-id", b"abc"),
        *((k.replace("_", "."), v) for k, v in extra.items()),
    ]
    return DeadLetter("src.dlq", 0, offset, ts, b"k", b"value", headers)


def test_a_first_dead_letter_copies_the_record_headers_and_adds_no_attempts() -> None:
    assert h.carried([("trace-id", b"abc"), ("dlq.reason", b"x")]) == [("trace-id", b"abc")]
    assert h.carried(None) == []


def test_a_redriven_record_that_fails_again_counts_one_more_attempt() -> None:
    consumed = [("trace-id", b"abc"), (h.REDRIVE_FROM, b"src.dlq/0/7"), (h.ATTEMPTS, b"2")]
    assert h.carried(consumed) == [("trace-id", b"abc"), (h.REDRIVE_FROM, b"src.dlq/0/7"), (h.ATTEMPTS, b"3")]


def test_redrive_publishes_original_headers_without_dlq_ones_plus_where_from_and_attempts() -> None:
    d = letter(5, dlq_attempts=b"2")
    assert h.republished(d.headers, d.coordinates) == [
        ("trace-id", b"abc"),
        (h.REDRIVE_FROM, b"src.dlq/0/5"),
        (h.ATTEMPTS, b"2"),
    ]
    assert h.attempts(letter().headers) == 1
    assert h.attempts([(h.ATTEMPTS, b"junk")]) == 1


def test_skip_reasons() -> None:
    assert skip_reason(letter(), 3) is None
    assert skip_reason(letter(dlq_attempts=b"3"), 3) == "max_attempts"
    assert skip_reason(letter(dlq_attempts=b"3"), 4) is None
    assert skip_reason(letter(dlq_value_omitted=b"2000000"), 3) == "value_omitted"
    no_value = DeadLetter("t", 0, 0, NOW, None, None, letter().headers)
    assert skip_reason(no_value, 3) == "no_value"


def test_selection_filters_and_describes_itself() -> None:
    sel = Selection(reasons=("rejected",), since_ms=NOW, until_ms=NOW + 10, source_partitions=(1,))
    assert sel.matches(letter(reason="rejected", ts=NOW, partition=1))
    assert not sel.matches(letter(reason="decode_error", ts=NOW, partition=1))
    assert not sel.matches(letter(ts=NOW - 1, partition=1))
    assert not sel.matches(letter(ts=NOW + 10, partition=1))
    assert not sel.matches(letter(ts=NOW, partition=0))
    assert Selection().matches(letter())
    assert "reason rejected" in sel.describe() and Selection().describe() == "all dead letters"


def test_each_selection_has_its_own_redrive_group_and_limit_does_not_change_it() -> None:
    a = redrive_group("g", Selection(reasons=("rejected",)), None, 3)
    assert a == redrive_group("g", Selection(reasons=("rejected",)), None, 3)
    assert a.startswith("g.redrive.")
    others = {
        redrive_group("g", Selection(reasons=("decode_error",)), None, 3),
        redrive_group("g", Selection(), None, 3),
        redrive_group("g", Selection(reasons=("rejected",)), "other", 3),
        redrive_group("g", Selection(reasons=("rejected",)), None, 4),
    }
    assert a not in others and len(others) == 4


def test_stats_count_by_reason_partition_attempts_and_messages() -> None:
    s = Stats()
    for d in [letter(0), letter(1, "decode_error", NOW - 5, 1), letter(2, ts=NOW + 5, dlq_attempts=b"2")]:
        s.add(d)
    j = s.as_json()
    assert j["total"] == 3
    assert j["by_reason"] == {"rejected": 2, "decode_error": 1}
    assert j["by_source_partition"] == {"src/0": 2, "src/1": 1}
    assert j["by_attempts"] == {"1": 2, "2": 1}
    assert j["oldest"]["dead_letter"] == "src.dlq/0/1" and j["newest"]["dead_letter"] == "src.dlq/0/2"
    assert j["top_messages"][0] == {"reason": "rejected", "message": "refused", "count": 2}
    assert "3 dead letters" in s.render("src.dlq")
    assert Stats().render("x") == "dead-letter topic x: empty"


def test_parse_time() -> None:
    assert parse_time("2026-12-02T08:26:40Z", 0) == NOW
    assert parse_time("2026-12-02T09:26:40+01:00", 0) == NOW
    assert parse_time("2026-12-02T08:26:40", 0) == NOW  # naive means UTC
    assert parse_time(str(NOW), 0) == NOW
    assert parse_time("2h", NOW) == NOW - 7_200_000
    assert parse_time("-90m", NOW) == NOW - 5_400_000
    assert parse_time("1d ago", NOW) == NOW - 86_400_000
    with pytest.raises(UsageError, match="not a time"):
        parse_time("yesterday-ish", NOW)


def test_rewind_plans_stay_within_the_retained_range() -> None:
    states = [plan.PartitionState(0, 50, 10, 100), plan.PartitionState(1, -1001, 0, 40)]
    assert [(c.new, c.resent) for c in plan.by(states, 45)] == [(10, 40), (0, None)]
    assert [c.new for c in plan.to_offset(states, 60)] == [60, 40]
    assert [c.new for c in plan.to_time(states, {0: 30, 1: -1})] == [30, 40]  # none at/after: the end
    assert states[0].lag == 50 and states[1].lag is None
    table = plan.render_changes(plan.by(states, 5))
    assert "re-sent" in table and table.splitlines()[-1].split()[-1] == "5"


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["dlq", "redrive", "--help"], 0),
        (["offsets", "rewind", "--help"], 0),
        (["nonsense"], 2),
        (["dlq"], 2),
        (["offsets", "rewind"], 2),  # one of --to-time, --by, --to-offset is required
        (["offsets", "rewind", "--by", "1", "--to-offset", "3"], 2),
        (["dlq", "redrive", "--max-attempts", "0"], 2),
        (["inspect", "--count", "0"], 2),
    ],
)
def test_usage_exit_codes(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == code


def test_a_bad_setting_exits_2_naming_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TRACK_API_TOKEN", "t")
    monkeypatch.setenv("BATCH_MAX_EVENTS", "0")
    assert cli.main(["dlq", "stats"]) == 2
    assert "BATCH_MAX_EVENTS is invalid" in capsys.readouterr().err


def test_since_must_precede_until(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TRACK_API_TOKEN", "t")
    assert cli.main(["dlq", "list", "--since", "1h", "--until", "2h"]) == 2
    assert "--until must be after --since" in capsys.readouterr().err


def test_inspect_hints_at_the_other_wire_format() -> None:
    from consumer.config import load
    from consumer.ops.inspect import framing_hint

    raw, _ = load({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "TRACK_API_TOKEN": "t"})
    framed, _ = load({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "TRACK_API_TOKEN": "t", "SCHEMA_REGISTRY_URL": "http://r"})
    assert "schema id 7" in (framing_hint(b"\x00\x00\x00\x00\x07abc", raw) or "")
    assert framing_hint(b"\x02abc", raw) is None
    assert "no Confluent framing" in (framing_hint(b"\x02abc", framed) or "")
    assert framing_hint(b"\x00\x00\x00\x00\x07abc", framed) is None


def test_a_list_line_shows_an_omitted_value_and_its_size() -> None:
    from consumer.ops.selection import list_line

    d = DeadLetter(
        "src.dlq",
        0,
        3,
        NOW,
        b"k",
        None,
        [*letter().headers, (h.VALUE_OMITTED, b"too_large"), (h.VALUE_SIZE, b"2000000")],
    )
    assert "value omitted(2000000B)" in list_line(d)
    assert skip_reason(d, 3) == "value_omitted"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise() -> None:
    from consumer.ops.dlq import Progress, Tally

    tally = Tally(examined=5, selected=4, transactions=1)
    tally.redriven["rejected"] = 4
    term, plain = _Terminal(), io.StringIO()
    for stream in (term, plain):
        p = Progress(stream, 10)
        p.update(tally, committed=False)
        p.update(tally, committed=True)
        p.done()
    assert term.getvalue().startswith("\r[###############               ] 5/10 examined, 4 selected, 4 redriven")
    assert plain.getvalue() == "progress: transaction 1 committed: 5/10 examined, 4 selected, 4 redriven, 0 skipped\n"


def test_inspect_reports_an_unavailable_registry_as_a_failure_not_a_dead_letter() -> None:
    from consumer import decode as dec
    from consumer.config import load
    from consumer.ops.client import ToolError
    from consumer.ops.inspect import evaluate

    class Down:
        def decode(self, value: bytes) -> dict:
            raise dec.RegistryUnavailable("Schema Registry unreachable: ConnectError")

    settings, _ = load({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "TRACK_API_TOKEN": "t"})
    with pytest.raises(ToolError, match="would retry this record"):
        evaluate(Down(), settings, b"\x00\x00\x00\x00\x01x", None)
