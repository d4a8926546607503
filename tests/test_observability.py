"""The dashboard, the alerts and a real Prometheus server against a live consumer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import kafkautil
from harness.kafka import free_port
from harness.process import ConsumerProcess
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.support import consumer_env, new_topic, wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
N = 300


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str):  # type: ignore[no-untyped-def]
    """A consumer that delivered N events and dead-lettered one record, still running."""
    topic = new_topic(kafka_bootstrap, 2, prefix="obs")
    rows = [(None, encode_raw(sample_record(i, "obs"))) for i in range(N)] + [(None, b"junk")]
    kafkautil.produce(kafka_bootstrap, topic, rows, 2)
    with TrackApi() as api:
        env = consumer_env(kafka_bootstrap, topic, api, BATCH_LINGER_MS="20")
        with ConsumerProcess(env) as proc:
            proc.wait_ready()
            assert api.wait_for(N, 60)
            wait_until(
                lambda: any(k.startswith("group_enriched_consumer_lag{") for k in proc.metrics()), 30, "lag metric"
            )
            yield proc, api
            assert proc.stop() == 0


def exported_names(proc: ConsumerProcess) -> set[str]:
    status, text = proc.get("/metrics")
    assert status == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def test_every_metric_of_dashboard_and_alerts_is_exported(live) -> None:  # type: ignore[no-untyped-def]
    proc, _ = live
    used = subprocess.run(
        [sys.executable, str(REPO / "scripts/chart/metric_names.py")], check=True, capture_output=True, text=True
    ).stdout.split()
    assert len(used) >= 15, used
    missing = sorted(set(used) - exported_names(proc))
    assert not missing, f"used by the dashboard or alerts but not exported: {missing}"


def test_contract_metric_names_are_exported(live) -> None:  # type: ignore[no-untyped-def]
    proc, _ = live
    contract = REPO.parent / "shared" / "contract" / "operations.md"
    if not contract.exists():
        pytest.skip("shared/contract/operations.md is not beside the repo")
    names = {line.split("`")[1] for line in contract.read_text().splitlines() if line.startswith("| `group_enriched_")}
    assert len(names) == 14
    assert not names - exported_names(proc)


def test_prometheus_scrapes_the_delivered_count(live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A real Prometheus server scrapes the live consumer; its API reports the delivered count."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus not installed (scripts/setup.sh installs Debian's prometheus package)"
    proc, api = live
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: consumer\n    static_configs: [{{targets: ['127.0.0.1:{proc.port}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tempfile.mkdtemp(dir=tmp_path)}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        query = urllib.parse.quote("group_enriched_events_delivered_total")
        deadline = time.monotonic() + 60
        value = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={query}", timeout=2) as r:
                    result = json.loads(r.read())["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert value == api.count() == N
        assert result[0]["metric"]["job"] == "consumer"
    finally:
        server.terminate()
        server.wait(10)
        log.close()
