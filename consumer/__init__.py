"""group-enriched-consumer: Avro enrichment records from Kafka → `group_enriched` events on the Track API.

Data flows one way (see docs/architecture.md):

    source (Kafka) → decode → transform → batcher → delivery (HTTP) → Track API
                         └── poison ─────────┴──────▶ deadletter (Kafka)
    offsets ◀── acks of delivered and dead-lettered records ── commit
"""

__version__ = "0.1.0"
