# The two commands of the README: `make demo` and `make test`. Both set themselves up.
PY := .venv/bin/python

.PHONY: setup demo test unit lint chart bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m harness.demo

# Everything CI runs: lint, unit and integration tests (a real Kafka broker), chart checks.
test: setup lint
	$(PY) -m pytest
	bash scripts/chart/check.sh

unit: setup
	$(PY) -m pytest -m "not integration"

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
