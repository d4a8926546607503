"""Write the seed corpus: a few valid records, raw and in Confluent framing (schema id 1)."""

from pathlib import Path

from harness.records import SEED, encode_raw, sample_record

out = Path(__file__).parent / "corpus"
out.mkdir(exist_ok=True)
for i, record in enumerate([SEED, sample_record(0), sample_record(5), sample_record(7)]):
    raw = encode_raw(record)
    (out / f"raw-{i}").write_bytes(raw)
    (out / f"confluent-{i}").write_bytes(b"\x00\x00\x00\x00\x01" + raw)
