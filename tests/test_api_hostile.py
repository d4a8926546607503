"""A hostile Track API and hostile settings (issue 14), on a real broker with loopback HTTP stand-ins.

Each test plays one case that, before these fixes, moved a whole stream to the dead-letter
topic, committed events nobody received, hammered the API or leaked a credential:
a 400 storm, a 200 web page, absurd `Retry-After` values, guarantee-breaking settings and a
password inside a URL. `pytest -s` prints the figures (`HOSTILE ...` lines).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from harness import kafkautil
from harness.kafka import free_port
from harness.process import ConsumerProcess
from harness.records import encode_confluent, encode_raw, sample_record, writer_schemas
from harness.registry import SchemaRegistry
from harness.trackapi import TrackApi
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
REFUSED_EVENTS_DEFAULT = 100  # BREAKER_REFUSED_EVENTS' documented default


def report(name: str, **figures: object) -> None:
    print(f"\nHOSTILE {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def produce(bootstrap: str, topic: str, start: int, n: int, tag: str) -> None:
    rows = [(str(i).encode(), encode_raw(sample_record(i, tag))) for i in range(start, start + n)]
    kafkautil.produce(bootstrap, topic, rows, PARTITIONS)


def committed_sum(bootstrap: str, group: str, topic: str) -> int:
    """Offsets committed over the partitions; asked again while the group's coordinator is not settled."""
    for _ in range(40):
        try:
            offsets = kafkautil.committed_offsets(bootstrap, group, topic, PARTITIONS)
        except KafkaException:  # NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS: a new group, a busy broker
            time.sleep(0.25)
            continue
        return sum(max(o, 0) for o in offsets.values())
    raise TimeoutError(f"no committed offsets for {group} after 40 tries")


def rejected(m: dict[str, float]) -> float:
    return m.get('group_enriched_events_dead_lettered_total{reason="rejected"}', 0.0)


def statuses(api: TrackApi, status: int) -> int:
    return sum(1 for r in list(api.requests) if r.status == status)


def poll(condition: Callable[[], object], timeout_s: float) -> float | None:
    """Seconds until `condition` held, or None after `timeout_s` (to report a figure before asserting)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            return None
        time.sleep(0.05)
    return time.monotonic() - started


# ---- 1. a 400 storm ------------------------------------------------------------------------------------


def test_400_storm_opens_the_breaker_instead_of_dead_lettering(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Every request refused (400) for a while, then accepted: nothing dead-lettered, all delivered after."""
    n = 2000
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    produce(kafka_bootstrap, topic, 0, n, "storm")
    storm = threading.Event()
    storm.set()
    api = TrackApi(respond=lambda _e, _h: (400, {}) if storm.is_set() else None).start()
    env = consumer_env(kafka_bootstrap, topic, api, RETRY_BACKOFF_MAX_S="1")
    group = env["KAFKA_GROUP_ID"]
    try:
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            # The storm lasts until the consumer has held through 20 refusals with its breaker open,
            # or (without a breaker) until it has dead-lettered a quarter of the stream.
            def settled() -> bool:
                m = proc.metrics() if proc.get("/metrics")[0] == 200 else {}
                return m.get("group_enriched_breaker_open", 0) == 1 or rejected(m) >= n / 4

            wait_until(settled, 120, "the breaker open or 500 dead letters", proc.logs)
            mark = statuses(api, 400)
            wait_until(
                lambda: statuses(api, 400) >= mark + 20 or rejected(proc.metrics()) >= n,
                60,
                "20 more refused requests (or everything dead-lettered)",
                proc.logs,
            )
            m = proc.metrics()
            during = {
                "dead_lettered": rejected(m),
                "delivered": api.count(),
                "refused_requests": statuses(api, 400),
                "readyz": proc.get("/readyz")[0],
                "breaker_open": m.get("group_enriched_breaker_open"),
            }
            storm.clear()
            wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 120, "all committed")
            m = proc.metrics()
            after = {
                "dead_lettered": rejected(m),
                "delivered": len({e["user_id"] for e in api.events}),
                "breaker_open": m.get("group_enriched_breaker_open"),
                "breaker_opened_total": m.get("group_enriched_breaker_opened_total"),
                "readyz": proc.get("/readyz")[0],
            }
            assert proc.stop() == 0, proc.logs()[-2000:]
            logs = proc.logs()
    finally:
        api.kill()
    report("400_storm", records=n, during=during, after=after)
    assert during["dead_lettered"] <= REFUSED_EVENTS_DEFAULT, during
    assert during["delivered"] == 0
    assert during["readyz"] == 503
    assert after["dead_lettered"] == during["dead_lettered"], after
    assert after["delivered"] + after["dead_lettered"] == n, after
    assert after["breaker_open"] == 0 and after["breaker_opened_total"] >= 1, after
    assert after["readyz"] == 200
    assert "treating it as an outage" in logs


# ---- 2. a 200 that is not the Track API ----------------------------------------------------------------


def test_200_html_commits_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A login page answering 200 text/html: nothing committed, a log line and a metric; then delivered."""
    n = 1000
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    produce(kafka_bootstrap, topic, 0, n, "html")
    portal = threading.Event()
    portal.set()
    page = (200, {"Content-Type": "text/html; charset=utf-8"}, b"<html><body>Please sign in</body></html>")
    api = TrackApi(respond=lambda _e, _h: page if portal.is_set() else None).start()
    env = consumer_env(kafka_bootstrap, topic, api, RETRY_BACKOFF_MAX_S="1")
    group = env["KAFKA_GROUP_ID"]
    try:
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            # Without the rule every batch is "delivered" at once and no further request comes.
            wait_until(
                lambda: statuses(api, 200) >= 20 or fully_committed(kafka_bootstrap, group, topic, PARTITIONS),
                120,
                "20 answers from the portal, or everything committed",
                proc.logs,
            )
            committed_during = committed_sum(kafka_bootstrap, group, topic)
            m = proc.metrics()
            not_json = m.get("group_enriched_http_not_json_total", 0.0)
            portal.clear()
            wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 120, "all committed")
            assert proc.stop() == 0
            logs = proc.logs()
    finally:
        api.kill()
    line = next((x for x in logs.splitlines() if "text/html" in x), "")
    report("200_html", records=n, committed_during_html=committed_during, not_json_answers=not_json, log=line)
    assert committed_during == 0
    assert not_json >= 20
    assert "127.0.0.1" in line and "not the Track API" in line


# ---- 3. Retry-After bounds ------------------------------------------------------------------------------


def test_retry_after_floor_cap_and_stop(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Retry-After 0 → a bounded request rate; 86400 → resumes within the cap; SIGTERM never waits for it."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    produce(kafka_bootstrap, topic, 0, 2000, "ra")
    retry_after: list[str | None] = ["0"]
    api = TrackApi(respond=lambda _e, _h: None if retry_after[0] is None else (503, {"Retry-After": retry_after[0]}))
    api.start()
    # 20 batches: every worker of the pool has one to retry.
    env = consumer_env(
        kafka_bootstrap, topic, api, BATCH_MAX_EVENTS="100", RETRY_AFTER_MAX_S="5", RETRY_BACKOFF_MAX_S="2"
    )
    group = env["KAFKA_GROUP_ID"]
    try:
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            wait_until(lambda: api.requests, 120, "a first request", proc.logs)
            n0, t0 = len(api.requests), time.monotonic()
            time.sleep(5)  # a measuring window, not synchronisation
            rate = (len(api.requests) - n0) / (time.monotonic() - t0)

            retry_after[0] = "86400"
            mark = len(api.requests)
            wait_until(lambda: len(api.requests) > mark, 60, "an answer with Retry-After: 86400", proc.logs)
            retry_after[0] = None
            resumed_s = poll(lambda: api.count() > 0, 45)
            if resumed_s is not None:
                wait_until(lambda: fully_committed(kafka_bootstrap, group, topic, PARTITIONS), 120, "all committed")
            m = proc.metrics()
            clamped = {b: m.get(f'group_enriched_retry_after_clamped_total{{bound="{b}"}}') for b in ("floor", "cap")}

            retry_after[0] = "86400"
            mark = len(api.requests)
            produce(kafka_bootstrap, topic, 2000, 40, "ra")
            poll(lambda: len(api.requests) > mark, 30)  # never comes if the first 86400 still holds
            started = time.monotonic()
            code = proc.stop(signal.SIGTERM)
            stop_s = time.monotonic() - started
    finally:
        api.kill()
    report(
        "retry_after",
        requests_per_s_under_retry_after_0=round(rate, 1),
        resume_s_after_86400_with_cap_5=None if resumed_s is None else round(resumed_s, 1),
        clamped=clamped,
        sigterm_s_during_86400=round(stop_s, 1),
        exit_code=code,
    )
    assert rate < 50
    assert resumed_s is not None
    assert clamped["floor"] and clamped["floor"] > 0 and clamped["cap"] and clamped["cap"] > 0
    assert code == 0
    assert stop_s < 15  # SHUTDOWN_TIMEOUT_S is 25: the drain did not wait for the Retry-After


# ---- 5. settings that silently break guarantees or leak -------------------------------------------------


def test_auto_commit_refused_before_anything_is_committed(kafka_bootstrap: str, tmp_path: Path) -> None:
    """KAFKA_CFG_ENABLE_AUTO_COMMIT/OFFSET_STORE=true with the API down: exit 2, nothing committed."""
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    produce(kafka_bootstrap, topic, 0, 200, "auto")
    api = TrackApi(respond=lambda _e, _h: (503, {})).start()
    env = consumer_env(
        kafka_bootstrap,
        topic,
        api,
        KAFKA_CFG_ENABLE_AUTO_COMMIT="true",
        KAFKA_CFG_ENABLE_AUTO_OFFSET_STORE="true",
        KAFKA_CFG_AUTO_COMMIT_INTERVAL_MS="200",
    )
    group = env["KAFKA_GROUP_ID"]
    try:
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            assert proc.proc is not None
            wait_until(
                lambda: proc.proc.poll() is not None or committed_sum(kafka_bootstrap, group, topic) >= 200,
                90,
                "an exit or every offset committed",
                proc.logs,
            )
            committed = committed_sum(kafka_bootstrap, group, topic)
            code = proc.proc.poll()
    finally:
        api.kill()
    report("auto_commit", committed=committed, delivered=api.count(), exit_code=code)
    assert committed == 0
    assert code == 2
    assert "KAFKA_CFG_ENABLE_AUTO_COMMIT" in proc.logs()


def run_cli(env: dict[str, str]) -> tuple[int | None, str]:
    """The CLI with `env` only (and PATH); returns (exit code, or None if still running after 20 s; output)."""
    full = {"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", **env}
    full.setdefault("TRACK_API_TOKEN", "t0ken")
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer"], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate(timeout=20)  # a bad setting exits at once; a consumer runs on
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode if proc.returncode >= 0 else None, out.decode()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKA_CFG_ENABLE_AUTO_COMMIT": "true"}, "KAFKA_CFG_ENABLE_AUTO_COMMIT"),
        ({"KAFKA_CFG_ENABLE_AUTO_OFFSET_STORE": "true"}, "KAFKA_CFG_ENABLE_AUTO_OFFSET_STORE"),
        ({"KAFKA_DLQ_TOPIC": "bad topic!"}, "KAFKA_DLQ_TOPIC"),
        ({"KAFKA_TOPIC": ".."}, "KAFKA_TOPIC"),
        ({"KAFKA_TOPIC": "t" * 250}, "KAFKA_TOPIC"),
        ({"TRACK_API_URL": "ftp://u:PLANTED-pw-1@example.com/track"}, "TRACK_API_URL"),
        ({"TRACK_API_URL": "https://u:PLANTED-pw-2@example.com/api/track"}, "TRACK_API_URL"),
        ({"SCHEMA_REGISTRY_URL": "file:///etc/passwd"}, "SCHEMA_REGISTRY_URL"),
        (
            {"KAFKA_CFG_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_CFG_SASL_MECHANISM": "FOO"},
            "KAFKA_CFG_SASL_MECHANISM",
        ),
    ],
    ids=[
        "auto_commit",
        "auto_offset_store",
        "dlq_topic",
        "topic_dots",
        "topic_250",
        "api_ftp",
        "api_userinfo",
        "registry_file",
        "sasl",
    ],
)
def test_bad_setting_exits_2_naming_it(env: dict[str, str], named: str) -> None:
    code, out = run_cli(env)
    lines = [x for x in out.splitlines() if x.strip()]
    report("bad_setting", env=sorted(env), exit_code=code, line=lines[-1] if lines else "")
    assert code == 2
    errors = [json.loads(x) for x in lines if '"level":"error"' in x]
    assert len(errors) == 1 and named in errors[0]["msg"], out
    assert "PLANTED" not in out


def test_password_in_urls_never_printed(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A password in SCHEMA_REGISTRY_URL (LOG_LEVEL=DEBUG): absent from every log line, metric and page.

    The registry then goes away (its errors are logged, /readyz turns 503); a bad setting whose
    URL carries the password is refused without echoing it.
    """
    secret = "PLANTED-s3cret-pw"
    topic = new_topic(kafka_bootstrap, PARTITIONS)
    schema = writer_schemas()["current"]
    registry = SchemaRegistry().__enter__()
    registry.register(1, schema)
    registry.register(2, schema)
    rows = [(None, encode_confluent(sample_record(i, "pw"), schema, 1)) for i in range(100)]
    kafkautil.produce(kafka_bootstrap, topic, rows, PARTITIONS)
    api = TrackApi().start()
    reg_url = registry.url.replace("http://", f"http://registry-user:{secret}@")
    env = consumer_env(
        kafka_bootstrap,
        topic,
        api,
        SCHEMA_REGISTRY_URL=reg_url,
        LOG_LEVEL="DEBUG",
    )
    outputs: list[str] = []
    try:
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            wait_until(lambda: api.count() >= 100, 120, "the first 100 events", proc.logs)
            registry.__exit__()  # unreachable from now on; schema 2 is not cached yet
            rows = [(None, encode_confluent(sample_record(i, "pw"), schema, 2)) for i in range(100, 110)]
            kafkautil.produce(kafka_bootstrap, topic, rows, PARTITIONS)
            unready_s = poll(lambda: proc.get("/readyz")[0] == 503, 60)
            m = proc.metrics()
            for path in ("/metrics", "/readyz", "/healthz"):
                outputs.append(proc.get(path)[1])
            assert proc.stop() == 0
            outputs.append(proc.logs())
    finally:
        api.kill()
    # Bad settings' errors, with the password in the URL.
    code, out = run_cli({"SCHEMA_REGISTRY_URL": f"http://u:{secret}@registry:99999"})
    outputs.append(out)
    api_code, out = run_cli({"TRACK_API_URL": f"https://u:{secret}@example.com/api/track"})
    outputs.append(out)
    leaks = [line for text in outputs for line in text.splitlines() if secret in line]
    report(
        "planted_password",
        lines_with_password=len(leaks),
        first_leak=leaks[0][:300] if leaks else None,
        readyz_503_after_s=None if unready_s is None else round(unready_s, 1),
        registry_failing=m.get("group_enriched_schema_registry_failing"),
        bad_url_exits=(code, api_code),
    )
    assert leaks == []
    assert code == 2 and api_code == 2
    assert unready_s is not None
    assert m.get("group_enriched_schema_registry_failing") == 1
