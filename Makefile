# The two commands of the README: `make demo` and `make test`. Both set themselves up.
PY := .venv/bin/python

.PHONY: setup demo test unit lint fuzz bench dashboard

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m harness.demo

# Everything CI runs: lint, unit and integration tests (a real Kafka broker), chart checks.
test: setup lint
	$(PY) -m pytest
	bash scripts/chart/check.sh
	bash scripts/fuzz.sh 15

unit: setup
	$(PY) -m pytest -m "not integration"

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# The container image: a Debian-built Python base, the image, and its tests (needs buildah; see scripts/image/).
.PHONY: image
image: setup
	bash scripts/image/make-base.sh && bash scripts/image/build.sh && IMAGE_TESTS=1 $(PY) -m pytest tests/test_image.py -q

# Throughput, latency and memory beside the alternatives (docs/benchmarks.md); ~4 minutes.
bench: setup
	$(PY) -m bench

# Coverage-guided fuzzing of decode + transform + encode, both wire formats (atheris).
fuzz: setup
	bash scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

# The chart's dashboard and alerts proven on a scripted incident (two live consumers, a real Prometheus,
# every panel's query as Grafana sends it; fails naming a panel whose query returns no series), about
# 1.5 minutes. Redraws docs/dashboard.png from the results (DASHBOARD_PNG= to skip; docs/operations.md).
DASHBOARD_PNG ?= docs/dashboard.png
dashboard: setup
	$(PY) -m harness.dashboard $(if $(DASHBOARD_PNG),--png $(DASHBOARD_PNG))
