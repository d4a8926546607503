"""Benchmarks of the consumer beside the alternatives: `python -m bench` (see docs/benchmarks.md)."""
