"""`dlq stats`, `dlq list` and `dlq redrive` on KAFKA_DLQ_TOPIC (I/O edge).

Redrive is exactly once across crashes, re-runs and different selections. In one Kafka
transaction it publishes the selected records, writes one ledger entry per dead letter it
redrove (`<dlq topic>.redriven`, compacted), and commits the selection's own consumer-group
offsets on the dead-letter topic (`send_offsets_to_transaction`). Every redrive uses the same
`transactional.id`, so starting one fences any other still running and aborts the open
transaction of one that was killed; only then does it read the ledger, which is therefore
complete. A re-run of the same selection resumes from its committed offsets; another selection
starts from the beginning (it must find what the first one's filter left out) and skips what
the ledger says was redriven already. The consumer reads the source topic `read_committed`
(its default), so the records of an aborted transaction are never delivered.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from consumer.config import Settings
from consumer.ops import client
from consumer.ops.headers import republished
from consumer.ops.selection import DeadLetter, Selection, Stats, list_json, list_line, redrive_group, skip_reason
from consumer.source import common_config, kafka_client

FAILPOINT_ENV = "GROUP_ENRICHED_FAILPOINT"  # tests only: `redrive.before_commit:N` (see _failpoint)


def dead_letter(m: Message) -> DeadLetter:
    return DeadLetter(m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers() or [])


def _all(settings: Settings, overrides: dict[str, str]) -> Iterator[DeadLetter]:
    topic = settings.kafka_dlq_topic
    consumer = client.reader(settings, overrides)
    try:
        parts = client.partitions(consumer, topic)
        for m in client.read(consumer, topic, dict.fromkeys(parts, -1)):
            yield dead_letter(m)
    finally:
        consumer.close()


def stats(settings: Settings, overrides: dict[str, str], selection: Selection, as_json: bool, out: TextIO) -> int:
    s = Stats()
    for d in _all(settings, overrides):
        if selection.matches(d):
            s.add(d)
    if as_json:
        print(orjson.dumps({"topic": settings.kafka_dlq_topic, **s.as_json()}).decode(), file=out)
    else:
        print(s.render(settings.kafka_dlq_topic), file=out)
    return 0


def listing(
    settings: Settings, overrides: dict[str, str], selection: Selection, limit: int | None, as_json: bool, out: TextIO
) -> int:
    shown = 0
    for d in _all(settings, overrides):
        if not selection.matches(d):
            continue
        print(orjson.dumps(list_json(d)).decode() if as_json else list_line(d), file=out, flush=True)
        shown += 1
        if limit is not None and shown >= limit:
            break
    return 0


@dataclass(frozen=True)
class RedriveOptions:
    selection: Selection
    limit: int | None = None
    dry_run: bool = False
    to_topic: str | None = None
    max_attempts: int = 3
    transaction_size: int = 200


@dataclass
class Tally:
    examined: int = 0  # dead letters read in this run
    selected: int = 0
    redriven: Counter[str] = field(default_factory=Counter)  # by dead-letter reason
    skipped: Counter[str] = field(default_factory=Counter)  # by why (max_attempts, value_omitted, no_value)
    already: int = 0  # selected, but the ledger says an earlier redrive published them
    transactions: int = 0

    def line(self, total: int) -> str:
        return (
            f"{self.examined}/{total} examined, {self.selected} selected, {sum(self.redriven.values())} redriven, "
            f"{sum(self.skipped.values())} skipped"
        )


class Progress:
    """A bar redrawn in place on a terminal; one line per committed transaction otherwise."""

    def __init__(self, stream: TextIO, total: int, dry_run: bool = False) -> None:
        self.stream, self.total, self.dry_run = stream, total, dry_run
        self.tty = stream.isatty()
        self._drawn = 0.0

    def update(self, tally: Tally, committed: bool) -> None:
        if self.tty:
            now = time.monotonic()
            if committed or now - self._drawn > 0.1:
                self._drawn = now
                done = tally.examined / self.total if self.total else 1.0
                bar = "#" * int(done * 30)
                print(f"\r[{bar:<30}] {tally.line(self.total)}", end="", file=self.stream, flush=True)
        elif committed:
            done = "checked" if self.dry_run else "committed"
            line = f"progress: transaction {tally.transactions} {done}: {tally.line(self.total)}"
            print(line, file=self.stream, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)


def ledger_topic(dlq: str) -> str:
    return f"{dlq}.redriven"


def ledger_key(d: DeadLetter, target: str) -> bytes:
    """One dead letter published to one topic: the target, then the dead letter's coordinates and
    timestamp (a re-created topic reuses offsets). Per target, so a copy sent `--to` a scratch
    topic does not count as redriven to the source."""
    return f"{target}:{d.partition}/{d.offset}/{d.timestamp_ms}".encode()


def redrive(settings: Settings, overrides: dict[str, str], options: RedriveOptions, out: TextIO) -> int:
    dlq = settings.kafka_dlq_topic
    group = redrive_group(settings.kafka_group_id, options.selection, options.to_topic, options.max_attempts)
    consumer = client.reader(settings, overrides, group)
    producer: Producer | None = None
    try:
        parts = client.partitions(consumer, dlq)
        if not options.dry_run:
            _ensure_ledger(settings, overrides, ledger_topic(dlq))
            # Fences any other redrive and aborts a killed one's open transaction: do it before reading.
            producer = _producer(settings, overrides, f"{settings.kafka_group_id}.redrive")
        done = _ledger(settings, overrides, ledger_topic(dlq))
        committed = consumer.committed([TopicPartition(dlq, p) for p in parts], timeout=client.TIMEOUT_S)
        start = {tp.partition: tp.offset for tp in committed}
        marks = client.watermarks(consumer, dlq, parts)
        total = sum(max(hi - max(start[p], lo), 0) for p, (lo, hi) in marks.items())
        resumed = any(o >= 0 for o in start.values())
        mode = "dry run: " if options.dry_run else ""
        print(
            f"{mode}redrive {options.selection.describe()} from {dlq} (max attempts {options.max_attempts}); "
            f"progress group {group}; {'resuming' if resumed else 'starting'} with {total} dead letters to examine",
            file=out,
            flush=True,
        )
        tally = _run(consumer, producer, dlq, start, done, options, settings, total, out)
    finally:
        consumer.close()
    print(_summary(tally, options, group), file=out, flush=True)
    return 0


def _ensure_ledger(settings: Settings, overrides: dict[str, str], topic: str) -> None:
    admin = client.admin(settings, overrides)
    md = admin.list_topics(timeout=client.TIMEOUT_S)
    if topic in md.topics and md.topics[topic].error is None:
        return
    future = admin.create_topics([NewTopic(topic, num_partitions=1, config={"cleanup.policy": "compact"})])[topic]
    try:
        future.result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise client.ToolError(f"cannot create the redrive ledger topic {topic}: {exc.args[0].str()}") from None


def _ledger(settings: Settings, overrides: dict[str, str], topic: str) -> set[bytes]:
    """Every dead letter an earlier redrive published (committed transactions only)."""
    reader = client.reader(settings, overrides)
    try:
        md = reader.list_topics(topic, timeout=client.TIMEOUT_S).topics.get(topic)
        if md is None or md.error is not None:
            return set()  # no redrive yet (a dry run does not create it)
        return {m.key() for m in client.read(reader, topic, dict.fromkeys(md.partitions, -1)) if m.key()}
    finally:
        reader.close()


def _producer(settings: Settings, overrides: dict[str, str], transactional_id: str) -> Producer:
    producer = kafka_client(
        Producer,
        {
            **common_config(settings, overrides),
            "transactional.id": transactional_id,  # a re-run fences a killed run and aborts its transaction
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "transaction.timeout.ms": 60_000,
        },
    )
    try:
        producer.init_transactions(client.TIMEOUT_S * 4)
    except KafkaException as exc:
        raise client.ToolError(f"cannot start a Kafka transaction: {exc.args[0].str()}") from None
    return producer


def _run(
    consumer: Consumer,
    producer: Producer | None,
    dlq: str,
    start: dict[int, int],
    done: set[bytes],
    options: RedriveOptions,
    settings: Settings,
    total: int,
    out: TextIO,
) -> Tally:
    tally = Tally()
    progress = Progress(sys.stderr, total, producer is None)
    positions: dict[int, int] = {}  # dead-letter partition → next offset, for this transaction
    in_txn = 0
    partitions_of: dict[str, set[int]] = {}
    failed: list[str] = []

    def delivered(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            failed.append(err.str())

    def commit() -> None:
        nonlocal in_txn
        if not positions:
            return
        if producer is not None:
            _commit(producer, consumer, dlq, positions, failed)
        tally.transactions += 1
        positions.clear()
        in_txn = 0
        progress.update(tally, committed=True)

    for m in client.read(consumer, dlq, start):
        d = dead_letter(m)
        tally.examined += 1
        if producer is not None and not positions:
            producer.begin_transaction()
        positions[d.partition] = d.offset + 1
        in_txn += 1
        if options.selection.matches(d):
            tally.selected += 1
            why = skip_reason(d, options.max_attempts)
            target = options.to_topic or d.source_topic or settings.kafka_topic
            if ledger_key(d, target) in done:
                tally.already += 1  # an earlier redrive (maybe with another filter) published it
            elif why is not None:
                tally.skipped[why] += 1
                print(
                    f"skipped {d.coordinates} (source {d.source}, {d.reason}, attempts {d.attempts}): {why}",
                    file=out,
                )
            else:
                tally.redriven[d.reason] += 1
                if producer is None:
                    print(
                        f"would redrive {d.coordinates} (source {d.source}, {d.reason}, attempts {d.attempts})",
                        file=out,
                    )
                else:
                    _publish(producer, consumer, target, d, options.to_topic is None, partitions_of, delivered)
                    entry = orjson.dumps({"to": target, "at": int(time.time() * 1000), "source": d.source})
                    _produce(
                        producer, topic=ledger_topic(dlq), key=ledger_key(d, target), value=entry, on_delivery=delivered
                    )
        progress.update(tally, committed=False)
        if in_txn >= options.transaction_size:
            commit()
        if options.limit is not None and sum(tally.redriven.values()) >= options.limit:
            break
    commit()
    progress.done()
    return tally


def _publish(
    producer: Producer,
    consumer: Consumer,
    topic: str,
    d: DeadLetter,
    same_partition: bool,
    partitions_of: dict[str, set[int]],
    on_delivery,  # type: ignore[no-untyped-def]
) -> None:
    kwargs: dict[str, object] = {}
    if same_partition and d.source_partition is not None:
        # Back to the partition it came from: the key's other records are there, in order.
        if topic not in partitions_of:
            partitions_of[topic] = set(client.partitions(consumer, topic))
        if d.source_partition in partitions_of[topic]:
            kwargs["partition"] = d.source_partition
    _produce(
        producer,
        topic=topic,
        value=d.value,
        key=d.key,
        headers=republished(d.headers, d.coordinates),
        on_delivery=on_delivery,
        **kwargs,
    )


def _produce(producer: Producer, **kwargs: object) -> None:
    while True:
        try:
            producer.produce(**kwargs)
            return
        except BufferError:  # the local queue is full: let deliveries drain
            producer.poll(0.1)


def _commit(producer: Producer, consumer: Consumer, dlq: str, positions: dict[int, int], failed: list[str]) -> None:
    offsets = [TopicPartition(dlq, p, o) for p, o in sorted(positions.items())]
    try:
        # commit_transaction would flush too; flushing first puts every record in the log before the
        # offsets go in, the state the SIGKILL test stops at (its failpoint) and a real crash may leave.
        producer.flush(client.TIMEOUT_S * 4)
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), client.TIMEOUT_S * 2)
        _failpoint("redrive.before_commit")
        producer.commit_transaction(client.TIMEOUT_S * 4)
    except KafkaException as exc:
        err = exc.args[0]
        if err.txn_requires_abort():
            producer.abort_transaction(client.TIMEOUT_S * 2)
        raise client.ToolError(
            f"transaction failed, nothing of it was published ({err.str()}); run the same command again to resume"
        ) from None
    if failed:  # commit_transaction succeeds only if every record was delivered: cannot happen
        raise client.ToolError(f"a record was not delivered: {failed[0]}")


_FAILPOINT_HITS: Counter[str] = Counter()


def _failpoint(name: str) -> None:
    """Tests only: with GROUP_ENRICHED_FAILPOINT=`name:N`, stop for good the Nth time `name` is reached,
    after saying so on stderr, so a test can SIGKILL the process at a known point without sleeping."""
    spec = os.environ.get(FAILPOINT_ENV, "")
    wanted, _, nth = spec.partition(":")
    if wanted != name:
        return
    _FAILPOINT_HITS[name] += 1
    if _FAILPOINT_HITS[name] == int(nth or 1):
        print(f"failpoint {spec} reached", file=sys.stderr, flush=True)
        while True:
            signal.pause()


def _summary(tally: Tally, options: RedriveOptions, group: str) -> str:
    redriven = sum(tally.redriven.values())
    skipped = sum(tally.skipped.values())
    verb = "would be redriven" if options.dry_run else "redriven"
    rows = [
        ("examined", tally.examined, ""),
        ("selected", tally.selected, ""),
        (verb, redriven, _by(tally.redriven)),
        ("skipped", skipped, _by(tally.skipped)),
        ("already redriven", tally.already, ""),
    ]
    if not options.dry_run:
        rows.append(("transactions", tally.transactions, ""))
    lines = ["summary" + (" (dry run: nothing published, progress not recorded)" if options.dry_run else "")]
    lines += [f"  {label:<18} {n:>8}  {by}".rstrip() for label, n, by in rows]
    lines.append(f"  progress group     {group}")
    return "\n".join(lines)


def _by(c: Counter[str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(c.items())) if c else ""
