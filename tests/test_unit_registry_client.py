"""consumer.registry: SCHEMA_REGISTRY_CFG_* → client properties, start-up errors naming the setting, secret files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from consumer.config import ConfigError, load, redacted
from consumer.registry import RegistryClient, client_properties, valid_user_info

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "TRACK_API_TOKEN": "t0k", "SCHEMA_REGISTRY_URL": "https://sr.test"}


def client(**env: str) -> RegistryClient:
    settings, _ = load({**BASE, **env})
    return RegistryClient(settings)


def error(**env: str) -> str:
    with pytest.raises(ConfigError) as err:
        client(**env)
    return str(err.value)


def test_properties_typed_from_strings() -> None:
    props = client_properties({"max.retries": "2", "timeout": "2.5", "ssl.ca.location": "/ca.pem"})
    assert props == {"max.retries": 2, "timeout": 2.5, "ssl.ca.location": "/ca.pem"}


def test_every_documented_property_is_accepted(tmp_path: Path) -> None:
    from harness.certs import CertAuthority

    ca = CertAuthority(tmp_path, "ca")
    mine = ca.issue("me", server=False, client=True)
    c = client(
        SCHEMA_REGISTRY_CFG_BASIC_AUTH_USER_INFO="user:pass word",
        SCHEMA_REGISTRY_CFG_BASIC_AUTH_CREDENTIALS_SOURCE="USER_INFO",
        SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION=str(ca.ca_pem),
        SCHEMA_REGISTRY_CFG_SSL_CERTIFICATE_LOCATION=str(mine.cert_pem),
        SCHEMA_REGISTRY_CFG_SSL_KEY_LOCATION=str(mine.key_pem),
        SCHEMA_REGISTRY_CFG_CACHE_CAPACITY="50",
        SCHEMA_REGISTRY_CFG_TIMEOUT="5",
    )
    assert c.current() is c.current()
    c = client(
        SCHEMA_REGISTRY_CFG_BEARER_AUTH_CREDENTIALS_SOURCE="STATIC_TOKEN",
        SCHEMA_REGISTRY_CFG_BEARER_AUTH_TOKEN="tok",
        SCHEMA_REGISTRY_CFG_BEARER_AUTH_LOGICAL_CLUSTER="lsrc-1",
        SCHEMA_REGISTRY_CFG_BEARER_AUTH_IDENTITY_POOL_ID="pool-1",
    )
    assert c.current() is not None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SCHEMA_REGISTRY_CFG_NO_SUCH_THING": "1"}, "SCHEMA_REGISTRY_CFG_NO_SUCH_THING"),
        ({"SCHEMA_REGISTRY_CFG_MAX_RETRIES": "many"}, "SCHEMA_REGISTRY_CFG_MAX_RETRIES"),
        ({"SCHEMA_REGISTRY_CFG_URL": "http://x"}, "SCHEMA_REGISTRY_CFG_URL"),
        ({"SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION": "/nonexistent/ca.pem"}, "SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION"),
        ({"SCHEMA_REGISTRY_CFG_SSL_KEY_LOCATION": "/k.pem"}, "SCHEMA_REGISTRY_CFG_SSL_KEY_LOCATION"),
        ({"SCHEMA_REGISTRY_CFG_BASIC_AUTH_USER_INFO": "no-colon-secret"}, "SCHEMA_REGISTRY_CFG_BASIC_AUTH_USER_INFO"),
        ({"SCHEMA_REGISTRY_CFG_BASIC_AUTH_CREDENTIALS_SOURCE": "SASL_INHERIT"}, "BASIC_AUTH_CREDENTIALS_SOURCE"),
        ({"SCHEMA_REGISTRY_CFG_BASIC_AUTH_CREDENTIALS_SOURCE": "USER_INFO"}, "BASIC_AUTH_CREDENTIALS_SOURCE"),
        ({"SCHEMA_REGISTRY_CFG_BEARER_AUTH_CREDENTIALS_SOURCE": "NOPE"}, "BEARER_AUTH_CREDENTIALS_SOURCE"),
        (
            {
                "SCHEMA_REGISTRY_CFG_BEARER_AUTH_CREDENTIALS_SOURCE": "STATIC_TOKEN",
                "SCHEMA_REGISTRY_CFG_BEARER_AUTH_TOKEN": "secret-tok",
            },
            "SCHEMA_REGISTRY_CFG_BEARER_AUTH",
        ),
    ],
)
def test_bad_property_names_the_setting_and_no_secret(env: dict[str, str], named: str) -> None:
    message = error(**env)
    assert named in message.split(" is invalid")[0], message
    assert "no-colon-secret" not in message and "secret-tok" not in message


def test_garbage_ca_file_names_the_ca(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    assert error(SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION=str(bad)).startswith(
        "SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION is invalid"
    )


def test_file_and_property_together_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "ui"
    f.write_text("u:p\n")
    message = error(SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE=str(f), SCHEMA_REGISTRY_CFG_BASIC_AUTH_USER_INFO="u:p")
    assert message.startswith("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE is invalid")


def test_unusable_file_content_is_refused_at_start(tmp_path: Path) -> None:
    f = tmp_path / "ui"
    f.write_text("no colon here\n")
    assert error(SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE=str(f)).startswith(
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE is invalid"
    )


def test_registry_settings_without_a_registry_url_are_refused() -> None:
    env = {k: v for k, v in BASE.items() if k != "SCHEMA_REGISTRY_URL"}
    with pytest.raises(ConfigError, match=r"SCHEMA_REGISTRY_CFG_TIMEOUT applies only with SCHEMA_REGISTRY_URL"):
        load({**env, "SCHEMA_REGISTRY_CFG_TIMEOUT": "3"})


def test_unreadable_secret_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^SCHEMA_REGISTRY_BEARER_AUTH_TOKEN_FILE is invalid: cannot read"):
        load({**BASE, "SCHEMA_REGISTRY_BEARER_AUTH_TOKEN_FILE": str(tmp_path / "absent")})


def test_secrets_redacted_in_the_configuration_line(tmp_path: Path) -> None:
    settings, overrides = load(
        {
            **BASE,
            "SCHEMA_REGISTRY_CFG_BASIC_AUTH_USER_INFO": "user:hunter22",
            "SCHEMA_REGISTRY_CFG_BEARER_AUTH_TOKEN": "tok-secret",
            "SCHEMA_REGISTRY_CFG_BEARER_AUTH_CLIENT_SECRET": "cs-secret",
            "SCHEMA_REGISTRY_CFG_SSL_KEY_PASSWORD": "kp-secret",
            "SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION": "/etc/ca.pem",
            "SCHEMA_REGISTRY_CFG_BEARER_AUTH_LOGICAL_CLUSTER": "lsrc-1",
        }
    )
    line = str(redacted(settings, overrides))
    for secret in ("hunter22", "tok-secret", "cs-secret", "kp-secret"):
        assert secret not in line
    assert "'SCHEMA_REGISTRY_CFG_SSL_CA_LOCATION': '/etc/ca.pem'" in line
    assert "'SCHEMA_REGISTRY_CFG_BEARER_AUTH_LOGICAL_CLUSTER': 'lsrc-1'" in line


def test_client_rebuilt_when_a_secret_file_changes(tmp_path: Path) -> None:
    built: list[dict[str, Any]] = []
    f = tmp_path / "token"
    f.write_text("token-one\n")
    settings, _ = load(
        {
            **BASE,
            "SCHEMA_REGISTRY_BEARER_AUTH_TOKEN_FILE": str(f),
            "SCHEMA_REGISTRY_CFG_BEARER_AUTH_LOGICAL_CLUSTER": "l",
        }
    )
    c = RegistryClient(settings, factory=lambda conf: built.append(conf) or len(built))
    assert c.current() == 1 and c.current() == 1  # unchanged file: no rebuild
    assert built[0]["bearer.auth.token"] == "token-one"
    assert built[0]["bearer.auth.credentials.source"] == "STATIC_TOKEN" and built[0]["max.retries"] == 0
    fresh = tmp_path / ".new"
    fresh.write_text("token-two-longer\n")
    os.replace(fresh, f)
    assert c.current() == 2 and built[1]["bearer.auth.token"] == "token-two-longer"


def test_rejected_rebuild_keeps_the_previous_client(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "ui"
    f.write_text("u:first-pass\n")
    settings, _ = load({**BASE, "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE": str(f)})
    calls = []

    def factory(conf: dict[str, Any]) -> int:
        calls.append(conf)
        if len(calls) > 1:
            raise ValueError(f"refused {conf['basic.auth.user.info']}")
        return 1

    c = RegistryClient(settings, factory=factory)
    f.write_text("u:second-pass-x\n")
    assert c.current() == 1
    assert "second-pass-x" not in caplog.text and "keeping the previous one" in caplog.text


@pytest.mark.parametrize(
    ("value", "ok"), [("u:p", True), ("u:p w", True), (":p", False), ("up", False), ("u:\x01", False)]
)
def test_user_info_shape(value: str, ok: bool) -> None:
    assert valid_user_info(value) is ok


def test_credentials_source_url_needs_credentials_in_the_url_and_no_user_info(tmp_path: Path) -> None:
    url_creds = {"SCHEMA_REGISTRY_URL": "https://reader:pw-in-url@sr.test"}
    assert client(**url_creds, SCHEMA_REGISTRY_CFG_BASIC_AUTH_CREDENTIALS_SOURCE="URL").current() is not None
    message = error(SCHEMA_REGISTRY_CFG_BASIC_AUTH_CREDENTIALS_SOURCE="url")
    assert message.startswith("SCHEMA_REGISTRY_CFG_BASIC_AUTH_CREDENTIALS_SOURCE is invalid: URL needs")
    message = error(
        **url_creds,
        SCHEMA_REGISTRY_CFG_BASIC_AUTH_CREDENTIALS_SOURCE="URL",
        SCHEMA_REGISTRY_CFG_BASIC_AUTH_USER_INFO="u:p",
    )
    assert "pw-in-url" not in message


def test_credentials_in_the_url_never_reach_an_error() -> None:
    settings, _ = load({**BASE, "SCHEMA_REGISTRY_URL": "https://reader:pw-in-url@sr.test"})

    def refuse(conf: dict[str, Any]) -> Any:
        raise ValueError(f"cannot use {conf['url']}")

    with pytest.raises(ConfigError) as err:
        RegistryClient(settings, factory=refuse)
    assert "pw-in-url" not in str(err.value) and "reader" not in str(err.value)
