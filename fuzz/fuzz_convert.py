"""Coverage-guided fuzzing of decode + transform + encode with atheris.

    python fuzz/fuzz_convert.py -runs=200000            # raw Avro
    FUZZ_FRAMING=confluent python fuzz/fuzz_convert.py -max_total_time=60

Any input must give an encoded event or one of the classified dead-letter errors
(`consumer.convert.Unconvertible`); anything else is a crash that atheris reports with
the input that caused it. The seed corpus is a few valid records (fuzz/corpus/).
"""

from __future__ import annotations

import contextlib
import os
import sys

import atheris

with atheris.instrument_imports():
    from consumer.convert import Unconvertible, encode_event
    from consumer.decode import ConfluentDecoder, DecodeError, RawDecoder, load_schema

READER = load_schema()


def _fetch(schema_id: int) -> dict:
    if schema_id == 1:
        return READER
    raise DecodeError(f"schema id {schema_id} is unknown")


DECODER = ConfluentDecoder(READER, _fetch) if os.environ.get("FUZZ_FRAMING") == "confluent" else RawDecoder(READER)


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(Unconvertible):
        encode_event(DECODER, data, 1_048_576)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
