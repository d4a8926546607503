"""consumer.config.load: defaults, KAFKA_CFG_ overrides, one-line errors that name the setting, never the token."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.config import DEFAULT_TRACK_API_URL, ConfigError, Settings, kafka_overrides, load, redact_urls, redacted

TOKEN = "tok-Zq9X-DISTINCTIVE-7f3e1c"
BASE = {"KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092,broker-2:9092", "TRACK_API_TOKEN": TOKEN}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`load(environ)` must depend on `environ` only; make sure the real environment cannot help or hurt."""
    for name in list(os.environ):
        if name.lower() in Settings.model_fields or name.startswith("KAFKA_CFG_"):
            monkeypatch.delenv(name)
    yield


def _error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(env)
    return str(info.value)


# ---- defaults --------------------------------------------------------------------------------------


def test_defaults() -> None:
    s, overrides = load(dict(BASE))
    assert s.kafka_bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert s.kafka_topic == "group-enrichment"
    assert s.kafka_group_id == "group-enriched-consumer"
    assert s.kafka_dlq_topic == "group-enrichment.dlq"
    assert s.schema_registry_url is None
    assert str(s.track_api_url) == DEFAULT_TRACK_API_URL == "https://api.app.thrivestack.ai/api/track"
    assert s.track_api_token is not None and s.track_api_token.get_secret_value() == TOKEN
    assert s.track_api_token_file is None
    assert s.metrics_port == 9400
    assert s.batch_max_events == 500
    assert s.batch_max_bytes == 1_048_576
    assert s.batch_linger_ms == 200
    assert s.batch_linger_s == pytest.approx(0.2)
    assert s.avro_writer_schema_file is None
    assert s.log_level == "INFO"
    assert overrides == {}


def test_dlq_topic_is_derived_from_the_topic() -> None:
    s, _ = load({**BASE, "KAFKA_TOPIC": "enrichments"})
    assert s.kafka_dlq_topic == "enrichments.dlq"


def test_explicit_dlq_topic_wins() -> None:
    s, _ = load({**BASE, "KAFKA_TOPIC": "a", "KAFKA_DLQ_TOPIC": "b"})
    assert (s.kafka_topic, s.kafka_dlq_topic) == ("a", "b")


def test_values_are_parsed() -> None:
    s, _ = load(
        {
            **BASE,
            "SCHEMA_REGISTRY_URL": "http://registry:8081",
            "TRACK_API_URL": "http://track.local:8080/api/track",
            "METRICS_PORT": "0",
            "BATCH_MAX_EVENTS": "1",
            "BATCH_MAX_BYTES": "1024",
            "BATCH_LINGER_MS": "0",
            "LOG_LEVEL": "debug",
        }
    )
    assert str(s.schema_registry_url).startswith("http://registry:8081")
    assert str(s.track_api_url) == "http://track.local:8080/api/track"
    assert (s.metrics_port, s.batch_max_events, s.batch_max_bytes, s.batch_linger_ms) == (0, 1, 1024, 0)
    assert s.batch_linger_s == 0


@pytest.mark.parametrize("port", ["0", "1", "65535"])
def test_port_range_edges_are_accepted(port: str) -> None:
    s, _ = load({**BASE, "METRICS_PORT": port})
    assert s.metrics_port == int(port)


def test_token_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    env = {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "TRACK_API_TOKEN_FILE": str(f)}
    s, _ = load(env)
    assert s.track_api_token is None
    assert s.track_api_token_file == f


def test_token_is_not_shown_by_the_settings_object() -> None:
    s, _ = load(dict(BASE))
    assert TOKEN not in repr(s)
    assert TOKEN not in str(s)


def test_unknown_variables_are_ignored() -> None:
    s, overrides = load({**BASE, "HOME": "/root", "SOMETHING_ELSE": "x"})
    assert s.kafka_topic == "group-enrichment" and overrides == {}


# ---- KAFKA_CFG_ ------------------------------------------------------------------------------------


def test_kafka_cfg_mapping() -> None:
    _, overrides = load(
        {
            **BASE,
            "KAFKA_CFG_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_CFG_SASL_MECHANISMS": "PLAIN",
            "KAFKA_CFG_SASL_USERNAME": "User_Name",
            "KAFKA_CFG_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "https",
            "KAFKA_CFG_": "ignored: no name",
            "KAFKA_CFGX": "ignored: no underscore",
            "KAFKA_TOPIC": "t",
        }
    )
    assert overrides == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "User_Name",  # values are verbatim
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_kafka_overrides_alone() -> None:
    assert kafka_overrides({"KAFKA_CFG_FETCH_MAX_BYTES": "1"}) == {"fetch.max.bytes": "1"}
    assert kafka_overrides({"KAFKA_BOOTSTRAP_SERVERS": "x"}) == {}


# ---- bad values ------------------------------------------------------------------------------------

BAD = [
    pytest.param({"KAFKA_BOOTSTRAP_SERVERS": None}, "KAFKA_BOOTSTRAP_SERVERS", id="missing-bootstrap"),
    pytest.param({"KAFKA_BOOTSTRAP_SERVERS": ""}, "KAFKA_BOOTSTRAP_SERVERS", id="empty-bootstrap"),
    pytest.param({"KAFKA_TOPIC": ""}, "KAFKA_TOPIC", id="empty-topic"),
    pytest.param({"BATCH_MAX_EVENTS": "-1"}, "BATCH_MAX_EVENTS", id="negative-batch-events"),
    pytest.param({"BATCH_MAX_EVENTS": "0"}, "BATCH_MAX_EVENTS", id="zero-batch-events"),
    pytest.param({"BATCH_MAX_BYTES": "10"}, "BATCH_MAX_BYTES", id="tiny-batch-bytes"),
    pytest.param({"BATCH_LINGER_MS": "-5"}, "BATCH_LINGER_MS", id="negative-linger"),
    pytest.param({"METRICS_PORT": "http"}, "METRICS_PORT", id="non-int-port"),
    pytest.param({"METRICS_PORT": "9400.5"}, "METRICS_PORT", id="float-port"),
    pytest.param({"METRICS_PORT": "70000"}, "METRICS_PORT", id="port-70000"),
    pytest.param({"METRICS_PORT": "-1"}, "METRICS_PORT", id="negative-port"),
    pytest.param({"METRICS_PORT": TOKEN}, "METRICS_PORT", id="token-as-port"),
    pytest.param({"TRACK_API_URL": "not a url"}, "TRACK_API_URL", id="malformed-track-url"),
    pytest.param({"TRACK_API_URL": "ftp://example.com/track"}, "TRACK_API_URL", id="ftp-track-url"),
    pytest.param({"TRACK_API_URL": "http://"}, "TRACK_API_URL", id="hostless-track-url"),
    pytest.param({"TRACK_API_URL": TOKEN}, "TRACK_API_URL", id="token-as-track-url"),
    pytest.param({"SCHEMA_REGISTRY_URL": "registry:8081"}, "SCHEMA_REGISTRY_URL", id="schemeless-registry-url"),
    pytest.param({"SCHEMA_REGISTRY_URL": "::"}, "SCHEMA_REGISTRY_URL", id="malformed-registry-url"),
    pytest.param({"KAFKA_DLQ_TOPIC": "group-enrichment"}, "KAFKA_DLQ_TOPIC", id="dlq-equals-default-topic"),
    pytest.param({"KAFKA_TOPIC": "x", "KAFKA_DLQ_TOPIC": "x"}, "KAFKA_DLQ_TOPIC", id="dlq-equals-topic"),
    pytest.param({"LOG_LEVEL": "verbose"}, "LOG_LEVEL", id="bad-log-level"),
    pytest.param({"LOG_LEVEL": "INFO "}, "LOG_LEVEL", id="log-level-trailing-space"),
    pytest.param({"TRACK_API_TOKEN": None}, "TRACK_API_TOKEN", id="no-token"),
    pytest.param({"TRACK_API_TOKEN": "   "}, "TRACK_API_TOKEN", id="blank-token"),
    pytest.param({"TRACK_API_TOKEN_FILE": "<existing>"}, "TRACK_API_TOKEN_FILE", id="token-and-token-file"),
    pytest.param(
        {"TRACK_API_TOKEN": None, "TRACK_API_TOKEN_FILE": "<missing>"}, "TRACK_API_TOKEN_FILE", id="missing-token-file"
    ),
    pytest.param(
        {"TRACK_API_TOKEN": None, "TRACK_API_TOKEN_FILE": "<directory>"}, "TRACK_API_TOKEN_FILE", id="token-file-is-dir"
    ),
    pytest.param(
        {"SCHEMA_REGISTRY_URL": "http://r:8081", "AVRO_WRITER_SCHEMA_FILE": "<existing>"},
        "AVRO_WRITER_SCHEMA_FILE",
        id="writer-schema-with-registry",
    ),
    pytest.param({"AVRO_WRITER_SCHEMA_FILE": "<missing>"}, "AVRO_WRITER_SCHEMA_FILE", id="missing-writer-schema"),
    pytest.param({"MAX_INFLIGHT_REQUESTS": "0"}, "MAX_INFLIGHT_REQUESTS", id="zero-inflight"),
    pytest.param({"SHUTDOWN_TIMEOUT_S": "0"}, "SHUTDOWN_TIMEOUT_S", id="zero-shutdown-timeout"),
    pytest.param({"HTTP_TIMEOUT_S": "abc"}, "HTTP_TIMEOUT_S", id="non-number-http-timeout"),
]


@pytest.mark.parametrize(("change", "setting"), BAD)
def test_bad_value_gives_one_line_naming_the_setting(
    change: dict[str, str | None], setting: str, tmp_path: Path
) -> None:
    existing = tmp_path / "existing"
    existing.write_text(TOKEN)  # the token file holds the secret too: it must not leak either
    placeholders = {"<existing>": str(existing), "<missing>": str(tmp_path / "missing"), "<directory>": str(tmp_path)}
    env = dict(BASE)
    for name, value in change.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = placeholders.get(value, value)
    message = _error(env)
    assert "\n" not in message and "\r" not in message, message
    assert message.strip() == message and message
    assert setting in message, message
    assert TOKEN not in message, message


def test_missing_bootstrap_says_required() -> None:
    assert _error({"TRACK_API_TOKEN": TOKEN}) == "KAFKA_BOOTSTRAP_SERVERS is required"


def test_both_token_and_file_names_both() -> None:
    message = _error({**BASE, "TRACK_API_TOKEN_FILE": "/dev/null"})
    assert "TRACK_API_TOKEN" in message and "TRACK_API_TOKEN_FILE" in message


def test_neither_token_nor_file_names_both() -> None:
    message = _error({"KAFKA_BOOTSTRAP_SERVERS": "b:9092"})
    assert "TRACK_API_TOKEN" in message and "TRACK_API_TOKEN_FILE" in message


def test_unreadable_token_file_names_the_path_not_the_content(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    message = _error({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "TRACK_API_TOKEN_FILE": str(missing)})
    assert message.startswith("TRACK_API_TOKEN_FILE is invalid")
    assert str(missing) in message


def test_error_is_raised_without_chained_validation_detail() -> None:
    """`from None`: the pydantic error (which may carry input values) is not chained into tracebacks."""
    with pytest.raises(ConfigError) as info:
        load({**BASE, "METRICS_PORT": TOKEN})
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


def test_load_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "leaked:9092")
    monkeypatch.setenv("TRACK_API_TOKEN", TOKEN)
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        load({})


# ---- settings that would break the guarantees or leak (issue 14) -------------------------------------


@pytest.mark.parametrize("name", ["KAFKA_CFG_ENABLE_AUTO_COMMIT", "KAFKA_CFG_ENABLE_AUTO_OFFSET_STORE"])
@pytest.mark.parametrize("value", ["true", "True", "1", "yes", " true "])
def test_auto_commit_or_offset_store_on_is_refused(name: str, value: str) -> None:
    message = _error({**BASE, name: value})
    assert message.startswith(f"{name} is invalid: must be false")


@pytest.mark.parametrize("value", ["false", "False", "0"])
def test_auto_commit_explicitly_off_is_fine(value: str) -> None:
    _, overrides = load({**BASE, "KAFKA_CFG_ENABLE_AUTO_COMMIT": value, "KAFKA_CFG_ENABLE_AUTO_OFFSET_STORE": value})
    assert overrides["enable.auto.commit"] == value


@pytest.mark.parametrize("name", ["KAFKA_TOPIC", "KAFKA_DLQ_TOPIC"])
@pytest.mark.parametrize("value", ["bad topic!", ".", "..", "t" * 250, "topic/x", "tópico", "a:b"])
def test_topic_names_outside_kafkas_rules_are_refused(name: str, value: str) -> None:
    message = _error({**BASE, name: value})
    assert message.startswith(f"{name} is invalid: a Kafka topic name is")


@pytest.mark.parametrize("value", ["a", "A.b_c-9", "t" * 249, "..."])
def test_topic_names_inside_kafkas_rules_are_accepted(value: str) -> None:
    settings, _ = load({**BASE, "KAFKA_TOPIC": value, "KAFKA_DLQ_TOPIC": "dead"})
    assert settings.kafka_topic == value


def test_a_derived_dlq_topic_too_long_names_kafka_dlq_topic() -> None:
    message = _error({**BASE, "KAFKA_TOPIC": "t" * 246})
    assert "KAFKA_DLQ_TOPIC is invalid" in message


@pytest.mark.parametrize("name", ["TRACK_API_URL", "SCHEMA_REGISTRY_URL"])
@pytest.mark.parametrize("url", ["ftp://host/x", "file:///etc/passwd", "kafka://host:9092"])
def test_urls_other_than_http_are_refused(name: str, url: str) -> None:
    assert _error({**BASE, name: url}).startswith(f"{name} is invalid")


def test_credentials_in_the_track_api_url_are_refused_without_echo() -> None:
    message = _error({**BASE, "TRACK_API_URL": "https://user:hunter2@api.example.com/api/track"})
    assert message.startswith("TRACK_API_URL is invalid: must not carry credentials")
    assert "hunter2" not in message


def test_registry_url_credentials_are_redacted_in_the_configuration_line() -> None:
    settings, overrides = load({**BASE, "SCHEMA_REGISTRY_URL": "https://user:hunter2@registry.example.com/sr"})
    line = str(redacted(settings, overrides))
    assert "hunter2" not in line and "user:" not in line
    assert "https://<redacted>@registry.example.com/sr" in line
    assert str(settings.schema_registry_url).startswith("https://user:hunter2@")  # the client still gets them


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET http://u:p@h:1/x 200", "GET http://<redacted>@h:1/x 200"),
        ("https://token@h/x and HTTP://a:b@c", "https://<redacted>@h/x and HTTP://<redacted>@c"),
        ('{"msg":"url=http://u:p%40ss@h/"}', '{"msg":"url=http://<redacted>@h/"}'),
        ("mail me at ops@example.com", "mail me at ops@example.com"),
        ("http://h/x?to=a@b", "http://h/x?to=a@b"),  # an @ in the query is no userinfo
        ("no url here", "no url here"),
    ],
)
def test_redact_urls(text: str, expected: str) -> None:
    assert redact_urls(text) == expected


def test_log_lines_never_show_credentials_in_urls(capsys: pytest.CaptureFixture[str]) -> None:
    """Every logger goes through the JSON formatter, which redacts; the registry client's per-request lines are off."""
    import logging

    from consumer.cli import setup_logging

    setup_logging("DEBUG")
    try:
        logging.getLogger("httpx2").info('HTTP Request: GET http://u:hunter2@sr:8081/schemas/ids/1 "200 OK"')
        logging.getLogger("httpcore2.http11").debug("send_request_headers.started")
        logging.getLogger("consumer.app").warning("Schema Registry unavailable: %s", "http://u:hunter2@sr:8081 refused")
        logging.getLogger("some.library").error("failed", extra={"url": "https://u:hunter2@x/y"})
    finally:
        logging.shutdown()
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert "httpx2" not in err and "httpcore2" not in err
    assert err.count("<redacted>@") == 2


@pytest.mark.parametrize("shutdown, stall", [("60", "60"), ("90", "60"), ("30", "20")])
def test_a_shutdown_timeout_not_below_the_stall_timeout_is_refused(shutdown: str, stall: str) -> None:
    """A revoke may wait SHUTDOWN_TIMEOUT_S; the liveness probe must not call that a stall."""
    with pytest.raises(ConfigError) as err:
        load({**BASE, "SHUTDOWN_TIMEOUT_S": shutdown, "HEALTH_STALL_TIMEOUT_S": stall})
    assert "SHUTDOWN_TIMEOUT_S" in str(err.value) and "HEALTH_STALL_TIMEOUT_S" in str(err.value)
    assert "\n" not in str(err.value)
