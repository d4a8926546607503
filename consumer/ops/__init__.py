"""Operator tools: `group-enriched-consumer inspect | dlq | offsets` (docs/operations.md).

Pure decisions (selection, statistics, offset plans, formatting) live in `select`, `plan` and
`headers`; the Kafka I/O is in `inspect`, `dlq` and `offsets`; `cli` parses and dispatches.
"""
