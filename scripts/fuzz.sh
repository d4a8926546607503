#!/usr/bin/env bash
# Coverage-guided fuzzing (atheris) of decode + transform + encode, raw and Confluent framing.
#   bash scripts/fuzz.sh [seconds per framing, default 60]
# Fails, printing the crashing input's report, if any input escapes as an unclassified exception.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
for framing in raw confluent; do
  work=".cache/fuzz/${framing}"
  mkdir -p "${work}"
  log="${work}.log"
  if FUZZ_FRAMING="${framing}" .venv/bin/python fuzz/fuzz_convert.py -max_total_time="${seconds}" \
      -artifact_prefix="${work}/" "${work}" fuzz/corpus >"${log}" 2>&1; then
    echo "fuzz: ${framing} framing OK ($(grep -E '^Done' "${log}"))"
  else
    echo "fuzz: ${framing} framing FAILED"; tail -40 "${log}"; exit 1
  fi
done
