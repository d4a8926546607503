"""Security settings on real parts: SASL_SSL (SCRAM-SHA-512) and mutual TLS to a real Kafka broker,
HTTPS to the Track API stand-in with a test CA, and secrets that never reach any output.

One broker for the whole module, with four listeners: PLAINTEXT (the harness probes readiness
there; the tests produce and read dead letters through it), CONTROLLER, SASL_SSL (SCRAM-SHA-512)
and SSL with ``ssl.client.auth=required``. The CA, the broker's PKCS#12 key store and trust store
and the client certificate are generated at module set-up (``harness.certs``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from harness import kafkautil
from harness.certs import CertAuthority, Issued
from harness.kafka import KafkaBroker, free_port
from harness.process import ConsumerProcess
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi
from tests.support import consumer_env, fully_committed, new_topic, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 2
SASL_USER = "alice"
# Distinctive values, so a leak anywhere is found by a plain substring search.
SASL_PASSWORD = "saslpw-Qx7Vb2Lm9Tz4Rk8Wd3Hn"
WRONG_SASL_PASSWORD = "wrongpw-Jc5Nf1Gs6Yp0Ue2Xa7Bv"
KEY_PASSWORD = "keypw-Zr4Ht8Mq1Dw6Sc3Lk9Ey"
TOKEN = "trktok-Pv3Ky7Wg2Nb8Rf5Cx1Jm0s"
FILE_TOKEN = "trkfile-Ha9Qm4Td7Vz2Xe6Lp1Gw"
KEYSTORE_PASSWORD = "keystore-pass"
TRUSTSTORE_PASSWORD = "truststore-pass"
POISON = b"garbage"
OBSERVE_S = 25.0  # how long the wrong-password consumer is watched: several start-up retries

_QUIET = logging.getLogger("tests.security.kafka-client")
_QUIET.setLevel(logging.CRITICAL)  # the probes below fail on purpose while credentials propagate


# ---- helpers ---------------------------------------------------------------------------------------


def report(name: str, **figures: object) -> None:
    print(f"\nSECURITY {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def produce(bootstrap: str, topic: str, n: int, tag: str, poison: int = 0) -> set[str]:
    """`n` good raw-Avro records (and `poison` undecodable ones after them); returns the good user ids."""
    records = [sample_record(i, tag) for i in range(n)]
    rows: list[tuple[bytes | None, bytes | None]] = [(r["group_id"].encode(), encode_raw(r)) for r in records]
    rows += [(f"poison-{i}".encode(), POISON) for i in range(poison)]
    kafkautil.produce(bootstrap, topic, rows, PARTITIONS)
    return {r["user_id"] for r in records}


def metric(proc: ConsumerProcess, name: str) -> float:
    """One sample from a live scrape; 0 while the endpoint is not up yet or the sample is absent."""
    if proc.get("/metrics")[0] != 200:
        return 0.0
    return proc.metrics().get(name, 0.0)


HTTP_ERRORS = 'group_enriched_http_requests_total{code="error"}'


def log_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def first_error_s(text: str) -> float | None:
    """Seconds from the first log line to the first line at level error."""
    stamps = [
        (datetime.datetime.fromisoformat(entry["ts"]), entry["level"])
        for entry in (json.loads(line) for line in log_lines(text))
    ]
    errors = [t for t, level in stamps if level == "error"]
    return round((errors[0] - stamps[0][0]).total_seconds(), 1) if errors else None


def secret_forms(secret: str) -> list[str]:
    """The secret as it could appear in an output: verbatim, hex, and base64 (std and URL-safe) at
    every byte alignment (an encoded stream holds `b64(secret[p:p+3k])` for one p in 0..2)."""
    raw = secret.encode()
    forms = {secret, raw.hex()}
    for p in range(3):
        chunk = raw[p : p + 3 * ((len(raw) - p) // 3)]
        forms.add(base64.b64encode(chunk).decode())
        forms.add(base64.urlsafe_b64encode(chunk).decode())
    return sorted(forms)


def leaks(outputs: dict[str, bytes], secrets: list[str]) -> list[str]:
    """Every (output, secret, form) where the form occurs; must be empty."""
    found = []
    for where, blob in outputs.items():
        for secret in secrets:
            for form in secret_forms(secret):
                if form.encode() in blob:
                    found.append(f"{where}: {secret[:7]}… as {form[:12]}…")
    return found


# ---- the broker --------------------------------------------------------------------------------------


@dataclass
class SecureKafka:
    broker: KafkaBroker
    plaintext: str  # bootstrap for the tests' own producing and reading
    sasl_ssl: str
    ssl: str
    ca: CertAuthority
    client: Issued  # a client certificate for mutual TLS; its key is encrypted with KEY_PASSWORD

    def sasl_env(self, password: str = SASL_PASSWORD) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.sasl_ssl,
            "KAFKA_CFG_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_CFG_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_CFG_SASL_USERNAME": SASL_USER,
            "KAFKA_CFG_SASL_PASSWORD": password,
            "KAFKA_CFG_SSL_CA_LOCATION": str(self.ca.ca_pem),
        }

    def mtls_env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.ssl,
            "KAFKA_CFG_SECURITY_PROTOCOL": "SSL",
            "KAFKA_CFG_SSL_CA_LOCATION": str(self.ca.ca_pem),
            "KAFKA_CFG_SSL_CERTIFICATE_LOCATION": str(self.client.cert_pem),
            "KAFKA_CFG_SSL_KEY_LOCATION": str(self.client.key_pem),
            "KAFKA_CFG_SSL_KEY_PASSWORD": KEY_PASSWORD,
        }


def _client_config(env: dict[str, str]) -> dict[str, object]:
    conf: dict[str, object] = {
        k.removeprefix("KAFKA_CFG_").lower().replace("_", "."): v for k, v in env.items() if k.startswith("KAFKA_CFG_")
    }
    return {"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"], "logger": _QUIET, **conf}


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    pki = tmp_path_factory.mktemp("kafka-pki")
    ca = CertAuthority(pki, "kafka-ca")
    server = ca.issue("broker", ips=("127.0.0.1",), pkcs12_password=KEYSTORE_PASSWORD)
    client = ca.issue("consumer-client", server=False, client=True, ips=(), dns=(), key_password=KEY_PASSWORD)
    truststore = ca.truststore(TRUSTSTORE_PASSWORD)

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-secure"))
    sasl_port, ssl_port = free_port(), free_port()
    broker.extra_props = {
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{broker.port},CONTROLLER://127.0.0.1:{broker.controller_port},"
            f"SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{ssl_port}"
        ),
        "advertised.listeners": (
            f"PLAINTEXT://127.0.0.1:{broker.port},SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{ssl_port}"
        ),
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(server.pkcs12),
        "ssl.keystore.password": KEYSTORE_PASSWORD,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(truststore),
        "ssl.truststore.password": TRUSTSTORE_PASSWORD,
        "listener.name.ssl.ssl.client.auth": "required",
    }
    started = time.monotonic()
    broker.start(timeout=120)
    try:
        # SCRAM credentials live in the KRaft metadata log: upsert them over the PLAINTEXT listener.
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, "logger": _QUIET})
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        for future in admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(SASL_USER, info, SASL_PASSWORD.encode())]
        ).values():
            future.result(timeout=30)
        del admin
        sk = SecureKafka(broker, broker.bootstrap, f"127.0.0.1:{sasl_port}", f"127.0.0.1:{ssl_port}", ca, client)

        def reachable(env: dict[str, str]) -> bool:
            try:
                return bool(AdminClient(_client_config(env)).list_topics(timeout=3).brokers)
            except Exception:
                return False

        wait_until(lambda: reachable(sk.sasl_env()), 30, "SCRAM credentials usable over SASL_SSL")
        wait_until(lambda: reachable(sk.mtls_env()), 30, "the SSL listener with a client certificate")
        report("broker", ready_s=round(time.monotonic() - started, 1), sasl_ssl=sk.sasl_ssl, ssl=sk.ssl)
        yield sk
    finally:
        broker.stop()


# ---- 1. SASL_SSL with SCRAM-SHA-512 ------------------------------------------------------------------


def test_sasl_ssl_scram_delivers_and_dead_letters(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    """Right SCRAM credentials over SASL_SSL: every record delivered, the poison record reaches the DLQ
    (created at start-up by the admin client, written by the producer: both used SASL_SSL too)."""
    sk = secure_kafka
    topic = new_topic(sk.plaintext, PARTITIONS, "sasl")
    expected = produce(sk.plaintext, topic, 300, "sasl", poison=1)
    with TrackApi() as api:
        env = consumer_env(sk.sasl_ssl, topic, api, **sk.sasl_env())
        group = env["KAFKA_GROUP_ID"]
        started = time.monotonic()
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            ready_s = wait_until(lambda: proc.get("/readyz")[0] == 200, 60, "/readyz 200", proc.logs)
            wait_until(lambda: api.count() >= len(expected), 60, "every event", proc.logs)
            delivered_s = time.monotonic() - started
            wait_until(
                lambda: fully_committed(sk.plaintext, group, topic, PARTITIONS), 30, "offsets at the end", proc.logs
            )
            m = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
            logs = proc.logs()
    letters = kafkautil.read_all(sk.plaintext, f"{topic}.dlq", 2, timeout_s=3)
    report(
        "sasl_ssl_scram",
        records=len(expected) + 1,
        ready_s=round(ready_s, 2),
        all_delivered_s=round(delivered_s, 2),
        dead_letters=len(letters),
    )
    assert {e["user_id"] for e in api.events} == expected and len(api.events) == len(expected)
    assert [(d.key, d.value, d.headers.get("dlq.reason")) for d in letters] == [(b"poison-0", POISON, "decode_error")]
    assert m['group_enriched_events_dead_lettered_total{reason="decode_error"}'] == 1
    assert "created missing dead-letter topic" in logs  # the admin client reached the broker over SASL_SSL
    assert SASL_PASSWORD not in logs


@dataclass
class WrongPasswordRun:
    alive_at_15s: bool
    readyz_at_15s: int
    healthz_at_15s: int
    lines_in_15s: int
    logs_at_15s: str
    exit_code: int | None  # None: still running when observation ended
    sigterm_exit: int | None  # exit code after SIGTERM at the end of the observation
    exit_after_s: float | None
    observed_s: float
    logs: str


@pytest.fixture(scope="module")
def wrong_password_run(secure_kafka: SecureKafka, tmp_path_factory: pytest.TempPathFactory) -> WrongPasswordRun:
    """One consumer with a wrong SCRAM password, watched for OBSERVE_S."""
    sk = secure_kafka
    topic = new_topic(sk.plaintext, PARTITIONS, "wrongpw")
    produce(sk.plaintext, topic, 10, "wrongpw")
    log_path = tmp_path_factory.mktemp("wrongpw") / "consumer.log"
    with TrackApi() as api:
        env = consumer_env(sk.sasl_ssl, topic, api, **sk.sasl_env(WRONG_SASL_PASSWORD))
        proc = ConsumerProcess(env, log_path).start()
        started = time.monotonic()
        try:
            time.sleep(15)
            alive = proc.proc is not None and proc.proc.poll() is None
            readyz, healthz = proc.get("/readyz")[0], proc.get("/healthz")[0]
            logs_15 = proc.logs()
            assert proc.proc is not None
            exit_after = None
            while time.monotonic() - started < OBSERVE_S and proc.proc.poll() is None:
                time.sleep(0.2)
            code = proc.proc.poll()
            if code is not None:
                exit_after = time.monotonic() - started
            observed = time.monotonic() - started
            sigterm_exit = proc.stop(signal.SIGTERM, timeout_s=30) if code is None else None
            if code is not None:
                proc.stop()
        finally:
            proc.kill()
        assert api.count() == 0
    run = WrongPasswordRun(
        alive_at_15s=alive,
        readyz_at_15s=readyz,
        healthz_at_15s=healthz,
        lines_in_15s=len(log_lines(logs_15)),
        logs_at_15s=logs_15,
        exit_code=code,
        sigterm_exit=sigterm_exit,
        exit_after_s=None if exit_after is None else round(exit_after, 1),
        observed_s=round(observed, 1),
        logs=proc.logs(),
    )
    report(
        "sasl_wrong_password",
        alive_at_15s=run.alive_at_15s,
        readyz_at_15s=run.readyz_at_15s,
        healthz_at_15s=run.healthz_at_15s,
        log_lines_in_15s=run.lines_in_15s,
        first_error_line_s=first_error_s(run.logs),
        exit_code=run.exit_code,
        exit_after_s=run.exit_after_s,
        sigterm_exit=run.sigterm_exit,
        log_lines_total=len(log_lines(run.logs)),
    )
    print("\n".join(log_lines(run.logs)[-6:]))
    return run


def test_sasl_wrong_password_first_15s_not_ready_and_quiet(wrong_password_run: WrongPasswordRun) -> None:
    """Wrong SCRAM password: after 15 s the process still runs, /readyz is 503, the log stays short,
    and the password never reaches the log."""
    run = wrong_password_run
    assert run.alive_at_15s, f"exited within 15 s:\n{run.logs[-2000:]}"
    assert run.readyz_at_15s == 503
    assert run.lines_in_15s < 50, f"{run.lines_in_15s} log lines in 15 s"
    assert WRONG_SASL_PASSWORD not in run.logs and SASL_PASSWORD not in run.logs


def test_sasl_wrong_password_logs_an_authentication_error(wrong_password_run: WrongPasswordRun) -> None:
    """Within 15 s the log names the cause, SASL authentication, instead of blaming the address."""
    lines = [ln for ln in log_lines(wrong_password_run.logs_at_15s) if '"level":"info"' not in ln]
    assert any("authentication" in ln.lower() for ln in lines), "\n".join(lines[-10:])


def test_sasl_wrong_password_does_not_crash_loop(wrong_password_run: WrongPasswordRun) -> None:
    """Still running, not ready, after OBSERVE_S (several 5 s start-up metadata attempts): a pod that exited
    on refused credentials would restart forever (CrashLoopBackOff) instead of waiting for a fixed Secret.
    The retry is logged at most every 30 s, and SIGTERM still ends it with 0."""
    run = wrong_password_run
    assert run.healthz_at_15s == 200, "liveness must not restart a pod that waits for Kafka"
    assert run.exit_code is None, f"exited with {run.exit_code} after {run.exit_after_s} s:\n" + "\n".join(
        log_lines(run.logs)[-5:]
    )
    assert run.sigterm_exit == 0
    retry_lines = [ln for ln in log_lines(run.logs) if "cannot reach Kafka" in ln]
    assert 1 <= len(retry_lines) <= 1 + int(OBSERVE_S // 30), retry_lines


# ---- 2. mutual TLS -----------------------------------------------------------------------------------


def test_mutual_tls_with_encrypted_client_key_delivers(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    """SSL listener with ssl.client.auth=required; the consumer presents a client certificate whose key is
    encrypted (KAFKA_CFG_SSL_KEY_PASSWORD): delivered, dead-lettered and committed."""
    sk = secure_kafka
    topic = new_topic(sk.plaintext, PARTITIONS, "mtls")
    expected = produce(sk.plaintext, topic, 300, "mtls", poison=1)
    with TrackApi() as api:
        env = consumer_env(sk.ssl, topic, api, **sk.mtls_env())
        group = env["KAFKA_GROUP_ID"]
        started = time.monotonic()
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            wait_until(lambda: api.count() >= len(expected), 60, "every event", proc.logs)
            delivered_s = time.monotonic() - started
            wait_until(
                lambda: fully_committed(sk.plaintext, group, topic, PARTITIONS), 30, "offsets at the end", proc.logs
            )
            assert proc.stop() == 0, proc.logs()[-2000:]
            logs = proc.logs()
    letters = kafkautil.read_all(sk.plaintext, f"{topic}.dlq", 2, timeout_s=3)
    report("mutual_tls", records=len(expected) + 1, all_delivered_s=round(delivered_s, 2), dead_letters=len(letters))
    assert {e["user_id"] for e in api.events} == expected and len(api.events) == len(expected)
    assert [(d.value, d.headers.get("dlq.reason")) for d in letters] == [(POISON, "decode_error")]
    assert KEY_PASSWORD not in logs


# ---- 3. HTTPS to the Track API -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertAuthority, Issued, CertAuthority]:
    """The API's CA and server certificate (SANs 127.0.0.1, localhost), and an unrelated CA."""
    pki = tmp_path_factory.mktemp("api-pki")
    ca = CertAuthority(pki, "api-ca")
    return ca, ca.issue("track-api"), CertAuthority(pki, "other-ca")


def test_track_api_https_with_ca_bundle_delivers(
    secure_kafka: SecureKafka, api_pki: tuple[CertAuthority, Issued, CertAuthority], tmp_path: Path
) -> None:
    """TRACK_API_URL=https://127.0.0.1:P/… and TRACK_API_CA_BUNDLE=<the API's CA>: delivered and committed."""
    sk = secure_kafka
    ca, cert, _other = api_pki
    topic = new_topic(sk.plaintext, PARTITIONS, "https")
    expected = produce(sk.plaintext, topic, 300, "https")
    with TrackApi(tls=cert.server_context()) as api:
        assert api.url.startswith("https://127.0.0.1:")
        env = consumer_env(sk.plaintext, topic, api, TRACK_API_CA_BUNDLE=str(ca.ca_pem))
        group = env["KAFKA_GROUP_ID"]
        started = time.monotonic()
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            wait_until(lambda: api.count() >= len(expected), 60, "every event", proc.logs)
            delivered_s = time.monotonic() - started
            wait_until(
                lambda: fully_committed(sk.plaintext, group, topic, PARTITIONS), 30, "offsets at the end", proc.logs
            )
            m = proc.metrics()
            assert proc.stop() == 0, proc.logs()[-2000:]
    report("track_api_https", events=len(expected), all_delivered_s=round(delivered_s, 2), requests=len(api.requests))
    assert {e["user_id"] for e in api.events} == expected and len(api.events) == len(expected)
    assert api.tls_failures == []
    assert m.get(HTTP_ERRORS, 0) == 0


@dataclass
class UntrustedRun:
    name: str
    delivered: int
    committed: dict[int, int]
    errors_first: float
    errors_last: float
    network_retries: float
    other_codes: dict[str, float]
    readyz: int
    server_saw: list[str]
    logs: str


@pytest.fixture(scope="module")
def untrusted_api_runs(
    secure_kafka: SecureKafka,
    api_pki: tuple[CertAuthority, Issued, CertAuthority],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, UntrustedRun]:
    """Two consumers side by side against the HTTPS API whose CA they do not trust: one on the system
    trust store (no TRACK_API_CA_BUNDLE), one with an unrelated CA. Watched for 8 s after joining."""
    sk = secure_kafka
    _ca, cert, other = api_pki
    work = tmp_path_factory.mktemp("untrusted")
    runs: dict[str, UntrustedRun] = {}
    with contextlib.ExitStack() as stack:
        procs: dict[str, tuple[ConsumerProcess, TrackApi, str, str]] = {}
        for name, extra in (("system_trust", {}), ("wrong_ca", {"TRACK_API_CA_BUNDLE": str(other.ca_pem)})):
            api = stack.enter_context(TrackApi(tls=cert.server_context()))  # one each: whose handshake failed
            topic = new_topic(sk.plaintext, PARTITIONS, f"untrusted-{name.replace('_', '-')}")
            produce(sk.plaintext, topic, 100, name)
            env = consumer_env(sk.plaintext, topic, api, SHUTDOWN_TIMEOUT_S="2", **extra)
            proc = stack.enter_context(ConsumerProcess(env, work / f"{name}.log"))
            procs[name] = (proc, api, topic, env["KAFKA_GROUP_ID"])
        for proc, *_ in procs.values():
            wait_until(lambda p=proc: metric(p, HTTP_ERRORS) > 0, 60, "the first failed request", proc.logs)
        first = {name: metric(proc, HTTP_ERRORS) for name, (proc, *_) in procs.items()}
        time.sleep(8)
        scraped = {name: (proc.metrics(), proc.get("/readyz")[0]) for name, (proc, *_) in procs.items()}
        for proc, *_ in procs.values():
            proc.send_signal(signal.SIGTERM)  # both drain at once: an in-flight retry holds each for 2 s
        for name, (proc, api, topic, group) in procs.items():
            m, readyz = scraped[name]
            assert proc.stop() == 0, proc.logs()[-2000:]
            assert api.count() == 0
            runs[name] = UntrustedRun(
                name=name,
                delivered=int(m["group_enriched_events_delivered_total"]),
                committed=kafkautil.committed_offsets(sk.plaintext, group, topic, PARTITIONS),
                errors_first=first[name],
                errors_last=m[HTTP_ERRORS],
                network_retries=m.get('group_enriched_retries_total{reason="network"}', 0),
                other_codes={
                    k: v
                    for k, v in m.items()
                    if k.startswith("group_enriched_http_requests_total{") and "error" not in k
                },
                readyz=readyz,
                server_saw=sorted({hit[1] for f in api.tls_failures if (hit := re.search(r"\[SSL: (\w+)\]", f))}),
                logs=proc.logs(),
            )
    for run in runs.values():
        report(
            f"untrusted_api_{run.name}",
            delivered=run.delivered,
            committed=run.committed,
            http_errors=f"{run.errors_first:.0f}->{run.errors_last:.0f}",
            network_retries=run.network_retries,
            readyz=run.readyz,
            warning_or_error_lines=sum(
                '"level":"warning"' in ln or '"level":"error"' in ln for ln in log_lines(run.logs)
            ),
            server_saw=run.server_saw,
        )
    return runs


@pytest.mark.parametrize("name", ["system_trust", "wrong_ca"])
def test_track_api_untrusted_cert_delivers_and_commits_nothing(
    untrusted_api_runs: dict[str, UntrustedRun], name: str
) -> None:
    """An API certificate the consumer does not trust: nothing delivered, nothing committed, and the
    failure shows in the metrics (http_requests_total{code="error"} keeps growing, network retries)."""
    run = untrusted_api_runs[name]
    assert run.delivered == 0
    assert all(o < 0 for o in run.committed.values()), run.committed
    assert run.errors_last > run.errors_first > 0
    assert run.network_retries > 0
    assert run.other_codes == {}, run.other_codes
    assert "TLSV1_ALERT_UNKNOWN_CA" in run.server_saw, f"the consumer must refuse the certificate: {run.server_saw}"


@pytest.mark.parametrize("name", ["system_trust", "wrong_ca"])
def test_track_api_untrusted_cert_is_named_in_the_log(untrusted_api_runs: dict[str, UntrustedRun], name: str) -> None:
    """The log (default level) says why delivery fails: certificate verification."""
    lines = [ln for ln in log_lines(untrusted_api_runs[name].logs) if '"level":"info"' not in ln]
    assert any("certificate" in ln.lower() or "ssl" in ln.lower() for ln in lines), "\n".join(lines[-10:])


# ---- 4. secrets never leak ---------------------------------------------------------------------------


def _scrape(proc: ConsumerProcess, label: str, into: dict[str, bytes]) -> None:
    for path in ("/metrics", "/healthz", "/readyz"):
        status, body = proc.get(path)
        assert status != 0, f"{path} unreachable"
        into[f"{label} {path} ({status})"] = body.encode()


def _exercise(
    sk: SecureKafka, api: TrackApi, env: dict[str, str], topic: str, label: str, log_path: Path
) -> dict[str, bytes]:
    """Delivery, a dead letter, a 401 phase, SIGTERM; returns every output of the process."""
    outputs: dict[str, bytes] = {}
    expected = produce(sk.plaintext, topic, 100, label, poison=1)
    with ConsumerProcess(env, log_path) as proc:
        wait_until(lambda: api.count() >= len(expected), 60, "every event", proc.logs)
        wait_until(
            lambda: fully_committed(sk.plaintext, env["KAFKA_GROUP_ID"], topic, PARTITIONS), 30, "committed", proc.logs
        )
        _scrape(proc, f"{label} delivering", outputs)
        api.token = "the-api-now-wants-another-token"  # 401 from here on
        produce(sk.plaintext, topic, 20, f"{label}-after")
        wait_until(lambda: proc.get("/readyz")[0] == 503, 30, "/readyz 503 on 401", proc.logs)
        assert any(r.status == 401 for r in api.requests)
        _scrape(proc, f"{label} refused", outputs)
        assert proc.stop(signal.SIGTERM) == 0, proc.logs()[-2000:]
    outputs[f"{label} log"] = log_path.read_bytes()
    return outputs


def test_secrets_never_leak(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    """A distinctive token (from the environment, then from a file at DEBUG level) and SASL password,
    through delivery, a dead letter, a 401 phase, SIGTERM and config errors: neither appears, verbatim,
    hex or base64, in the log, /metrics, /healthz, /readyz or the dead letters' keys, values and headers."""
    sk = secure_kafka
    secrets = [TOKEN, FILE_TOKEN, SASL_PASSWORD]
    outputs: dict[str, bytes] = {}
    topics = []
    sasl = sk.sasl_env()
    common = {"SHUTDOWN_TIMEOUT_S": "2", **sasl}

    # Run 1: TRACK_API_TOKEN from the environment, INFO.
    topic = new_topic(sk.plaintext, PARTITIONS, "secret-env")
    topics.append(topic)
    with TrackApi(token=TOKEN) as api:
        env = consumer_env(sk.sasl_ssl, topic, api, TRACK_API_TOKEN=TOKEN, **common)
        outputs |= _exercise(sk, api, env, topic, "env-token", tmp_path / "env-token.log")

    # Run 2: TRACK_API_TOKEN_FILE, DEBUG and librdkafka's security debug (the most talkative settings).
    token_file = tmp_path / "secret" / "token"
    token_file.parent.mkdir()
    token_file.write_text(FILE_TOKEN + "\n")
    topic = new_topic(sk.plaintext, PARTITIONS, "secret-file")
    topics.append(topic)
    with TrackApi(token=FILE_TOKEN) as api:
        debug = {"LOG_LEVEL": "DEBUG", "KAFKA_CFG_DEBUG": "security"}
        env = consumer_env(sk.sasl_ssl, topic, api, TRACK_API_TOKEN_FILE=str(token_file), **debug, **common)
        outputs |= _exercise(sk, api, env, topic, "file-token", tmp_path / "file-token.log")

    # Configuration errors with the secrets set: each exits 2 with one line.
    bad_settings = {
        "batch-max-events": {"TRACK_API_TOKEN": TOKEN, "BATCH_MAX_EVENTS": "-1"},
        "token-and-file": {"TRACK_API_TOKEN": TOKEN, "TRACK_API_TOKEN_FILE": str(token_file)},
        "bad-kafka-property": {"TRACK_API_TOKEN": TOKEN, "KAFKA_CFG_SASL_MECHANISM": "NO-SUCH-MECHANISM"},
    }
    exits = {}
    for name, bad in bad_settings.items():
        env = {"KAFKA_BOOTSTRAP_SERVERS": sk.sasl_ssl, "TRACK_API_URL": "https://127.0.0.1:9/api/track", **sasl, **bad}
        proc = ConsumerProcess(env, tmp_path / f"config-{name}.log").start()
        assert proc.proc is not None
        proc.proc.wait(30)
        exits[name] = proc.stop()
        outputs[f"config error {name} log"] = proc.log_path.read_bytes()
        assert exits[name] == 2, proc.logs()
        assert len(log_lines(proc.logs())) == 1, proc.logs()

    # The dead letters (one per run), read over PLAINTEXT.
    letters = []
    for topic in topics:
        got = kafkautil.read_all(sk.plaintext, f"{topic}.dlq", 2, timeout_s=3)
        assert len(got) == 1, got
        letters += got
    for n, d in enumerate(letters):
        outputs[f"dead letter {n} key"] = d.key or b""
        outputs[f"dead letter {n} value"] = d.value or b""
        outputs[f"dead letter {n} headers"] = "\n".join(f"{k}={v}" for k, v in d.headers.items()).encode()

    found = leaks(outputs, secrets)
    report(
        "secrets",
        outputs_checked=len(outputs),
        bytes_checked=sum(len(b) for b in outputs.values()),
        log_lines=sum(len(log_lines(b.decode(errors="replace"))) for k, b in outputs.items() if k.endswith("log")),
        forms_per_secret=len(secret_forms(TOKEN)),
        config_exits=exits,
        leaks=len(found),
    )
    assert found == [], found
    # The redacted start-up configuration is there, so the search did look at the right lines.
    assert b'"KAFKA_CFG_SASL_PASSWORD":"<redacted>"' in outputs["env-token log"]
    assert b'"TRACK_API_TOKEN":"<redacted>"' in outputs["env-token log"]


def test_env_token_with_trailing_newline_is_stripped_or_refused(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    """TRACK_API_TOKEN="<token>\\n": either delivered (stripped, as the file token is) or exit 2 naming the
    setting at start-up; never a silent stall. Either way the token reaches no output."""
    sk = secure_kafka
    topic = new_topic(sk.plaintext, PARTITIONS, "newline-token")
    expected = produce(sk.plaintext, topic, 20, "newline")
    outputs: dict[str, bytes] = {}
    with TrackApi(token=TOKEN) as api:
        env = consumer_env(sk.plaintext, topic, api, TRACK_API_TOKEN=TOKEN + "\n", SHUTDOWN_TIMEOUT_S="2")
        with ConsumerProcess(env, tmp_path / "consumer.log") as proc:
            deadline = time.monotonic() + 10
            while api.count() < len(expected) and proc.proc is not None and proc.proc.poll() is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            exited = proc.proc is not None and proc.proc.poll() is not None
            if not exited:
                _scrape(proc, "newline-token", outputs)
                errors = metric(proc, HTTP_ERRORS)
            code = proc.stop(signal.SIGTERM)
            outputs["newline-token log"] = proc.log_path.read_bytes()
    report(
        "env_token_trailing_newline",
        delivered=api.count(),
        exited_by_itself=exited,
        exit=code,
        http_errors=None if exited else errors,
    )
    if found := leaks(outputs, [TOKEN]):
        pytest.fail(f"token leaked: {found}")  # not an AssertionError: a leak is never the expected failure
    logs = outputs["newline-token log"].decode()
    assert (not exited and api.count() == len(expected)) or (code == 2 and "TRACK_API_TOKEN" in logs), logs[-2000:]
