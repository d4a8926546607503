"""The Schema Registry client: `SCHEMA_REGISTRY_CFG_*` properties, secrets from files, start-up check (I/O edge).

Any confluent-kafka `SchemaRegistryClient` property passes through as `SCHEMA_REGISTRY_CFG_<NAME>`
(upper-cased, `.` → `_`), the way `KAFKA_CFG_*` passes librdkafka's. Two secrets may also come
from files, re-read when they change (a rotated Kubernetes Secret), like the Track API token:
`SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE` (`user:password`) and
`SCHEMA_REGISTRY_BEARER_AUTH_TOKEN_FILE` (a static bearer token; the client's
`bearer.auth.logical.cluster` and `bearer.auth.identity.pool.id` still come from `SCHEMA_REGISTRY_CFG_*`).

The client is built once at start-up, so an unknown property or a bad value (an unreadable CA,
a key without its certificate, `max.retries=many`) stops start-up with exit 2 naming the
setting. When a secret file changes the client is rebuilt with the new value before the next
request. No secret value reaches a log line or an error message.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from consumer.config import SCHEMA_REGISTRY_CFG_PREFIX, ConfigError, Settings, setting_name, valid_token
from consumer.delivery import TokenSource
from consumer.throttle import Throttle

log = logging.getLogger(__name__)

USER_INFO_FILE = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO_FILE"
BEARER_TOKEN_FILE = "SCHEMA_REGISTRY_BEARER_AUTH_TOKEN_FILE"
# Numbers in the client's eyes; the environment only holds strings.
_INTEGERS = {"cache.capacity", "max.retries", "retries.wait.ms", "retries.max.wait.ms"}
_NUMBERS = {"cache.latest.ttl.sec", "timeout"}
_FILES = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")
# Values that never appear in a message, whatever the client puts in its own.
_SECRETS = ("basic.auth.user.info", "bearer.auth.token", "bearer.auth.client.secret", "ssl.key.password")
# No retries inside the client: each would block the main loop; the app retries with backoff.
_DEFAULTS: dict[str, Any] = {"max.retries": 0}


def env_name(prop: str) -> str:
    return setting_name(SCHEMA_REGISTRY_CFG_PREFIX, prop)


def valid_user_info(value: str) -> bool:
    """`user:password` as basic auth carries it: printable ASCII (spaces allowed), a colon, a user."""
    user, colon, _password = value.partition(":")
    return bool(user and colon) and all(" " <= c <= "~" for c in value)


def client_properties(raw: Mapping[str, str]) -> dict[str, Any]:
    """Typed client properties from `SCHEMA_REGISTRY_CFG_*` strings (pure); ConfigError naming the setting.

    `basic.auth.credentials.source` (a Java client setting many configurations carry) is
    checked here and not passed on: the Python client takes `basic.auth.user.info` when it is
    set (`USER_INFO`) and the URL's userinfo otherwise (`URL`); `SASL_INHERIT` has no meaning here.
    """
    props: dict[str, Any] = {}
    for prop, value in raw.items():
        if prop == "url":
            raise ConfigError(f"{env_name(prop)} is invalid: set SCHEMA_REGISTRY_URL instead")
        if prop in _INTEGERS or prop in _NUMBERS:
            try:
                number = float(value)
                if prop in _INTEGERS and not number.is_integer():
                    raise ValueError
            except ValueError:
                raise ConfigError(f"{env_name(prop)} is invalid: must be a number") from None
            props[prop] = int(number) if prop in _INTEGERS else number
        elif prop == "basic.auth.credentials.source":
            if value.upper() not in ("USER_INFO", "URL"):
                raise ConfigError(f"{env_name(prop)} is invalid: must be USER_INFO or URL")
        else:
            props[prop] = value
    return props


class RegistryClient:
    """A confluent-kafka `SchemaRegistryClient` built from the settings, rebuilt when a secret file changes."""

    def __init__(self, settings: Settings, factory: Callable[[dict[str, Any]], Any] | None = None) -> None:
        if settings.schema_registry_url is None:
            raise ValueError("RegistryClient needs SCHEMA_REGISTRY_URL")
        if factory is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            factory = SchemaRegistryClient
        self._factory = factory
        self._url = str(settings.schema_registry_url).rstrip("/")
        raw = settings.schema_registry_cfg
        self._props = {**_DEFAULTS, **client_properties(raw)}
        self._names = {prop: env_name(prop) for prop in raw} | {"url": "SCHEMA_REGISTRY_URL"}
        self._files: dict[str, TokenSource] = {}
        if settings.schema_registry_basic_auth_user_info_file is not None:
            self._from_file("basic.auth.user.info", settings.schema_registry_basic_auth_user_info_file, USER_INFO_FILE)
        if settings.schema_registry_bearer_auth_token_file is not None:
            self._from_file("bearer.auth.token", settings.schema_registry_bearer_auth_token_file, BEARER_TOKEN_FILE)
            self._props.setdefault("bearer.auth.credentials.source", "STATIC_TOKEN")
        source = raw.get("basic.auth.credentials.source", "").upper()
        has_user_info = "basic.auth.user.info" in self._props or "basic.auth.user.info" in self._files
        if source == "USER_INFO" and not has_user_info:
            raise ConfigError(
                f"{env_name('basic.auth.credentials.source')} is invalid: USER_INFO needs "
                f"{env_name('basic.auth.user.info')} or {USER_INFO_FILE}"
            )
        if source == "URL" and (has_user_info or not urlsplit(self._url).username):
            raise ConfigError(
                f"{env_name('basic.auth.credentials.source')} is invalid: URL needs the credentials in "
                f"SCHEMA_REGISTRY_URL and no {env_name('basic.auth.user.info')} or {USER_INFO_FILE}"
            )
        self._values = self._secret_values()
        self._log = Throttle(60.0)
        self._client = self._build(self._values, at_start=True)

    def _from_file(self, prop: str, path: Path, name: str) -> None:
        if prop in self._props:
            raise ConfigError(f"{name} is invalid: set it or {env_name(prop)}, not both")
        valid = valid_user_info if prop == "basic.auth.user.info" else valid_token
        self._files[prop] = TokenSource(path=path, name=name, valid=valid)
        self._names[prop] = name

    def _secret_values(self) -> dict[str, str]:
        return {prop: source.get() for prop, source in self._files.items()}

    def _build(self, values: dict[str, str], at_start: bool = False) -> Any:
        conf = {"url": self._url, **self._props, **values}
        try:
            return self._factory(conf)
        except Exception as exc:  # the client raises ValueError, TypeError, OSError, ssl.SSLError
            name = self._culprit(conf, exc)
            message = self._scrub(f"{type(exc).__name__}: {exc}", conf)
            if at_start:
                raise ConfigError(f"{name} is invalid: {message}") from None
            raise

    def _culprit(self, conf: dict[str, Any], exc: Exception) -> str:
        """The setting an error of the client is about: a property its message names, else the TLS files."""
        text = str(exc)
        for prop in sorted(conf, key=len, reverse=True):
            if prop != "url" and prop in text:
                return self._names.get(prop, env_name(prop))
        if named := re.search(
            r"\b(?:basic|bearer|ssl|cache|max|retries)\.[a-z.]*[a-z]\b", text
        ):  # a property the client misses, say
            return self._names.get(named.group(), env_name(named.group()))
        if isinstance(exc, (OSError, ssl.SSLError)):
            ca = conf.get("ssl.ca.location")
            if isinstance(ca, str) and not Path(ca).is_dir():
                try:
                    ssl.create_default_context(cafile=ca)
                except (OSError, ssl.SSLError):
                    return self._names["ssl.ca.location"]
            for prop in ("ssl.certificate.location", "ssl.key.location"):
                if prop in conf:
                    return self._names[prop]
        if "url" in text.lower():
            return "SCHEMA_REGISTRY_URL"
        return "SCHEMA_REGISTRY_CFG_*"

    @staticmethod
    def _scrub(message: str, conf: dict[str, Any]) -> str:
        url = urlsplit(str(conf.get("url", "")))
        for value in [*(conf.get(prop) for prop in _SECRETS), url.password, url.username]:
            if isinstance(value, str) and value:
                message = message.replace(value, "<redacted>")
                for part in value.split(":"):  # user:password: the password alone may be quoted
                    if len(part) >= 4:
                        message = message.replace(part, "<redacted>")
        return message

    def current(self) -> Any:
        """The client, rebuilt first if a secret file changed (rare: the files are stat'ed, not read)."""
        values = self._secret_values()
        if values != self._values:
            try:
                self._client = self._build(values)
            except Exception as exc:
                if self._log.allow("rebuild"):
                    log.warning(
                        "Schema Registry secret changed but the client refuses it; keeping the previous one: %s",
                        self._scrub(f"{type(exc).__name__}: {exc}", {**self._props, **values}),
                    )
            else:
                log.info("Schema Registry secret file changed; client rebuilt")
            self._values = values
        return self._client
