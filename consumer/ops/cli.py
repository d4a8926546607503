"""Command line of the operator tools: `group-enriched-consumer inspect | dlq ... | offsets ...`.

Same settings as the consumer (environment, validated by `config.load`). Exit codes: 0 done,
1 the command failed (Kafka unreachable, a topic missing, a refused rewind), 2 a bad setting
or bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from confluent_kafka import KafkaException

from consumer import config
from consumer.ops.client import ToolError
from consumer.ops.selection import Selection, UsageError, parse_time

log = logging.getLogger("consumer.ops")

Run = Callable[[argparse.Namespace, config.Settings, dict[str, str], TextIO], int]

DESCRIPTION = """\
Kafka → Track API consumer of company enrichments. With no arguments it runs the consumer,
configured by environment variables (README, docs/configuration.md). The subcommands are
operator tools that use the same settings (docs/operations.md has the runbooks)."""


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def _non_negative(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="group-enriched-consumer", description=DESCRIPTION)
    sub = top.add_subparsers(dest="command", metavar="{inspect,dlq,offsets}")

    p = sub.add_parser(
        "inspect",
        help="show records: decoded Avro and the exact event JSON the consumer sends, or its dead letter",
        description="Show records as the consumer sees them: coordinates, timestamp, key, headers, the decoded "
        "Avro, and byte for byte the event JSON it would send (or the dead-letter reason and message).",
    )
    p.add_argument("--topic", help="topic to read (default KAFKA_TOPIC; the dead-letter topic works too)")
    p.add_argument("--partition", type=_non_negative, help="partition of the first record")
    p.add_argument("--offset", type=_non_negative, help="offset of the first record")
    p.add_argument("--count", type=_positive, default=1, help="records to show from there (default 1)")
    p.add_argument("--file", type=Path, help="a saved record value instead (raw Avro or Confluent framing, as set)")
    p.add_argument("--json", action="store_true", help="one JSON object per record")
    p.set_defaults(run=_inspect)

    dlq = sub.add_parser("dlq", help="dead letters: stats, list, redrive", description="Work with KAFKA_DLQ_TOPIC.")
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="{stats,list,redrive}", required=True)

    p = dsub.add_parser(
        "stats",
        help="dead letters by reason and source partition, oldest and newest, most frequent messages",
        description="Count the dead letters by reason, source partition and attempts; the oldest and newest; "
        "the most frequent error messages.",
    )
    _add_filters(p, partition=False)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(run=_dlq_stats)

    p = dsub.add_parser(
        "list",
        help="one line per dead letter",
        description="One line per dead letter: when, where it is, its source coordinates, reason, attempts, sizes, "
        "message.",
    )
    _add_filters(p, partition=True)
    p.add_argument("--limit", type=_positive, help="stop after this many")
    p.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    p.set_defaults(run=_dlq_list)

    p = dsub.add_parser(
        "redrive",
        help="publish selected dead letters' records again, exactly once",
        description="Publish each selected dead letter's original key, value and headers (without dlq.*) to its "
        "source topic (or --to), with dlq.redrive.from and dlq.attempts headers. Transactional: the records and "
        "this selection's progress on the dead-letter topic commit together, so a run that is killed and started "
        "again neither repeats nor misses a record. Dead letters that failed --max-attempts times or lost their "
        "value (too large) are skipped and reported.",
    )
    _add_filters(p, partition=True)
    p.add_argument("--limit", type=_positive, help="redrive at most this many (a re-run continues after them)")
    p.add_argument("--dry-run", action="store_true", help="report what would be redriven; publish and record nothing")
    p.add_argument("--to", metavar="TOPIC", help="publish to this topic instead of each record's source topic")
    p.add_argument(
        "--max-attempts", type=_positive, default=3, help="skip records that failed this many times (default 3)"
    )
    p.add_argument("--transaction-size", type=_positive, default=200, help="records per transaction (default 200)")
    p.set_defaults(run=_dlq_redrive)

    off = sub.add_parser(
        "offsets", help="the group's offsets: show, rewind", description="KAFKA_GROUP_ID's offsets on KAFKA_TOPIC."
    )
    osub = off.add_subparsers(dest="offsets_command", metavar="{show,rewind}", required=True)
    p = osub.add_parser(
        "show",
        help="committed offset, end offset and lag per partition; the group's members",
        description="Per partition the group's committed offset, the end offset and the lag; the active members.",
    )
    p.set_defaults(run=_offsets_show)
    p = osub.add_parser(
        "rewind",
        help="move the group's committed offsets back so the consumer sends records again",
        description="Move the group's committed offsets so the consumer re-sends what the destination lost. "
        "Refused while the group has active members (scale the Deployment to 0 first). Prints the change before "
        "making it.",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-time", metavar="TIME", help="the first record at or after TIME (ISO 8601, epoch ms, 2h)")
    target.add_argument("--by", type=_positive, metavar="N", help="N records back from the committed offset")
    target.add_argument("--to-offset", type=_non_negative, metavar="O", help="offset O")
    p.add_argument("--partition", type=_non_negative, action="append", help="only this partition (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the change; change nothing")
    p.set_defaults(run=_offsets_rewind)
    return top


def _add_filters(p: argparse.ArgumentParser, partition: bool) -> None:
    p.add_argument("--reason", action="append", help="decode_error, invalid_record or rejected (repeatable)")
    p.add_argument("--since", metavar="TIME", help="dead-lettered at or after TIME (ISO 8601, epoch ms, or 2h ago)")
    p.add_argument("--until", metavar="TIME", help="dead-lettered before TIME")
    if partition:
        p.add_argument(
            "--source-partition", type=_non_negative, action="append", help="records from this source partition"
        )


def selection(args: argparse.Namespace, now_ms: int | None = None) -> Selection:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    since = parse_time(args.since, now) if args.since else None
    until = parse_time(args.until, now) if args.until else None
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be after --since")
    return Selection(
        reasons=tuple(args.reason or ()),
        since_ms=since,
        until_ms=until,
        source_partitions=tuple(getattr(args, "source_partition", None) or ()),
    )


def _inspect(args: argparse.Namespace, settings: config.Settings, overrides: dict[str, str], out: TextIO) -> int:
    from consumer.ops import inspect

    if args.file is not None:
        if args.partition is not None or args.offset is not None or args.topic:
            raise UsageError("--file cannot be combined with --topic, --partition or --offset")
        return inspect.file(settings, args.file, args.json, out)
    if args.partition is None or args.offset is None:
        raise UsageError("inspect needs --partition and --offset (or --file)")
    topic = args.topic or settings.kafka_topic
    return inspect.records(settings, overrides, topic, args.partition, args.offset, args.count, args.json, out)


def _dlq_stats(args: argparse.Namespace, settings: config.Settings, overrides: dict[str, str], out: TextIO) -> int:
    from consumer.ops import dlq

    return dlq.stats(settings, overrides, selection(args), args.json, out)


def _dlq_list(args: argparse.Namespace, settings: config.Settings, overrides: dict[str, str], out: TextIO) -> int:
    from consumer.ops import dlq

    return dlq.listing(settings, overrides, selection(args), args.limit, args.json, out)


def _dlq_redrive(args: argparse.Namespace, settings: config.Settings, overrides: dict[str, str], out: TextIO) -> int:
    from consumer.ops import dlq

    options = dlq.RedriveOptions(
        selection=selection(args),
        limit=args.limit,
        dry_run=args.dry_run,
        to_topic=args.to,
        max_attempts=args.max_attempts,
        transaction_size=args.transaction_size,
    )
    return dlq.redrive(settings, overrides, options, out)


def _offsets_show(args: argparse.Namespace, settings: config.Settings, overrides: dict[str, str], out: TextIO) -> int:
    from consumer.ops import offsets

    return offsets.show(settings, overrides, out)


def _offsets_rewind(args: argparse.Namespace, settings: config.Settings, overrides: dict[str, str], out: TextIO) -> int:
    from consumer.ops import offsets

    to_time = parse_time(args.to_time, int(time.time() * 1000)) if args.to_time else None
    return offsets.rewind(
        settings,
        overrides,
        out,
        to_time_ms=to_time,
        by=args.by,
        to_offset=args.to_offset,
        partitions=args.partition,
        dry_run=args.dry_run,
    )


def main(argv: list[str]) -> int:
    """Parse, load the settings, run one tool; returns the exit code."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: 0 after --help, 2 for bad usage (it printed why)
        return int(exc.code or 0)
    if getattr(args, "run", None) is None:  # a command group without its subcommand
        parser().print_help(sys.stderr)
        return 2
    from consumer.cli import setup_logging

    setup_logging("WARNING")  # librdkafka's complaints as JSON on stderr; results go to stdout
    try:
        settings, overrides = config.load()
        return args.run(args, settings, overrides, sys.stdout)
    except config.ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KafkaException as exc:
        print(f"error: Kafka: {exc.args[0].str() if exc.args else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
