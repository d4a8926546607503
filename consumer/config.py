"""Settings from the environment, validated once at start-up (pure: no I/O but reading the environment)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KAFKA_CFG_PREFIX = "KAFKA_CFG_"
SCHEMA_REGISTRY_CFG_PREFIX = "SCHEMA_REGISTRY_CFG_"
DEFAULT_TRACK_API_URL = "https://api.app.thrivestack.ai/api/track"


def valid_token(token: str) -> bool:
    """A bearer token an HTTP header can carry: visible ASCII, no spaces (RFC 6750 is stricter still)."""
    return bool(token) and all("!" <= c <= "~" for c in token)


_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
TOPIC_RULE = "a Kafka topic name is 1 to 249 characters of a-z A-Z 0-9 . _ - and not . or .."


def valid_topic(name: str) -> bool:
    """Kafka's rule for topic names (Apache Kafka refuses others; some brokers accept them)."""
    return _TOPIC_NAME.fullmatch(name) is not None and name not in (".", "..")


# scheme://userinfo@ in any text: the userinfo goes, whatever it holds.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@\"'<>]+@")


def redact_urls(text: str) -> str:
    """`http://user:pass@host/x` → `http://<redacted>@host/x`, wherever URLs appear in `text`."""
    return _URL_USERINFO.sub(r"\1<redacted>@", text) if "@" in text else text


# Offsets are committed only after delivery: librdkafka must never commit or store one by itself.
_MUST_BE_FALSE = ("enable.auto.commit", "enable.auto.offset.store")


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line naming it (never its secret value)."""


class Settings(BaseSettings):
    """Every setting, named exactly as its environment variable (upper-cased)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(min_length=1)
    kafka_topic: str = Field("group-enrichment", min_length=1)
    kafka_group_id: str = Field("group-enriched-consumer", min_length=1)
    kafka_dlq_topic: str = ""
    schema_registry_url: AnyHttpUrl | None = None
    track_api_url: AnyHttpUrl = AnyHttpUrl(DEFAULT_TRACK_API_URL)
    track_api_token: SecretStr | None = None
    track_api_token_file: Path | None = None
    # Which header carries the token: `Authorization: Bearer <token>` or `x-api-key: <token>`.
    track_api_auth: Literal["bearer", "x-api-key"] = "bearer"
    metrics_port: int = Field(9400, ge=0, le=65535)
    batch_max_events: int = Field(500, ge=1, le=100_000)
    batch_max_bytes: int = Field(1_048_576, ge=1024)
    batch_linger_ms: int = Field(200, ge=0, le=60_000)
    avro_writer_schema_file: Path | None = None
    # Schema Registry client: SCHEMA_REGISTRY_CFG_<NAME> properties (checked by consumer/registry.py at
    # start-up) and secrets from files, re-read when they change.
    schema_registry_cfg: dict[str, str] = Field(default_factory=dict, exclude=True)
    schema_registry_basic_auth_user_info_file: Path | None = None
    schema_registry_bearer_auth_token_file: Path | None = None
    # Added settings (docs/configuration.md says why each exists).
    max_inflight_requests: int = Field(8, ge=1, le=256)
    buffer_max_events: int = Field(20_000, ge=1)
    shutdown_timeout_s: float = Field(25.0, gt=0)
    commit_interval_ms: int = Field(1000, ge=10)
    http_timeout_s: float = Field(10.0, gt=0)
    retry_backoff_max_s: float = Field(30.0, gt=0)
    health_stall_timeout_s: float = Field(60.0, gt=0)
    log_level: str = Field("INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR)$")
    max_event_bytes: int = Field(1_048_576, ge=256)
    track_api_ca_bundle: Path | None = None
    idempotency_key: bool = False
    breaker_refused_events: int = Field(100, ge=0)  # 0: no breaker (consumer/breaker.py)
    retry_after_max_s: float = Field(60.0, gt=0)  # the longest Retry-After honoured

    @field_validator("kafka_topic", "kafka_dlq_topic")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        if value and not valid_topic(value):
            raise ValueError(TOPIC_RULE)
        return value

    @field_validator("track_api_url")
    @classmethod
    def _no_credentials(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        # httpx would send them as Basic auth in place of the token: every request 401.
        if value.username or value.password:
            raise ValueError("must not carry credentials (user:password@); the token goes in TRACK_API_TOKEN(_FILE)")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_sources):  # type: ignore[no-untyped-def]
        # Only what `load` passes in: the process environment is read there, explicitly.
        return (init_settings,)

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if not self.kafka_dlq_topic:
            object.__setattr__(self, "kafka_dlq_topic", f"{self.kafka_topic}.dlq")
        if not valid_topic(self.kafka_dlq_topic):  # derived from a long KAFKA_TOPIC
            raise ValueError(f"KAFKA_DLQ_TOPIC is invalid: {TOPIC_RULE} (unset, it is KAFKA_TOPIC + .dlq)")
        if self.shutdown_timeout_s >= self.health_stall_timeout_s:
            # A revoke may wait SHUTDOWN_TIMEOUT_S for in-flight batches; the liveness probe must not call it a stall.
            raise ValueError("SHUTDOWN_TIMEOUT_S must be below HEALTH_STALL_TIMEOUT_S")
        if self.kafka_dlq_topic == self.kafka_topic:
            raise ValueError("KAFKA_DLQ_TOPIC must differ from KAFKA_TOPIC")
        if (self.track_api_token is None) == (self.track_api_token_file is None):
            raise ValueError("set exactly one of TRACK_API_TOKEN and TRACK_API_TOKEN_FILE")
        if self.track_api_token is not None:
            token = self.track_api_token.get_secret_value().strip()  # a Secret made from a file ends in \n
            if not valid_token(token):
                raise ValueError("TRACK_API_TOKEN must be non-empty printable ASCII without spaces")
            object.__setattr__(self, "track_api_token", SecretStr(token))
        if self.avro_writer_schema_file is not None and self.schema_registry_url is not None:
            raise ValueError("AVRO_WRITER_SCHEMA_FILE applies to raw Avro only; unset it or SCHEMA_REGISTRY_URL")
        if self.schema_registry_url is None:
            registry_only = [setting_name(SCHEMA_REGISTRY_CFG_PREFIX, k) for k in self.schema_registry_cfg]
            registry_only += [
                name.upper()
                for name in ("schema_registry_basic_auth_user_info_file", "schema_registry_bearer_auth_token_file")
                if getattr(self, name) is not None
            ]
            if registry_only:
                raise ValueError(f"{registry_only[0]} applies only with SCHEMA_REGISTRY_URL; set it or unset this")
        return self

    @property
    def batch_linger_s(self) -> float:
        return self.batch_linger_ms / 1000


def setting_name(prefix: str, prop: str) -> str:
    """`("KAFKA_CFG_", "security.protocol")` → `KAFKA_CFG_SECURITY_PROTOCOL`: the variable that sets a property."""
    return prefix + prop.upper().replace(".", "_")


def _properties(environ: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The properties that variables named `<prefix><NAME>` set, `<NAME>` lower-cased with `_` → `.`."""
    return {
        name[len(prefix) :].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(prefix) and len(name) > len(prefix)
    }


def kafka_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """`KAFKA_CFG_SECURITY_PROTOCOL=SASL_SSL` → `{"security.protocol": "SASL_SSL"}`."""
    return _properties(environ, KAFKA_CFG_PREFIX)


def registry_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """`SCHEMA_REGISTRY_CFG_BASIC_AUTH_USER_INFO=u:p` → `{"basic.auth.user.info": "u:p"}`."""
    return _properties(environ, SCHEMA_REGISTRY_CFG_PREFIX)


def load(environ: Mapping[str, str] | None = None) -> tuple[Settings, dict[str, str]]:
    """Settings and librdkafka overrides, or `ConfigError` naming the first bad setting."""
    env = dict(os.environ if environ is None else environ)
    try:
        settings = Settings(_env_file=None, **_from_env(env), schema_registry_cfg=registry_overrides(env))
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    if settings.track_api_token_file is not None:
        _check_readable(settings.track_api_token_file, "TRACK_API_TOKEN_FILE")
    if settings.avro_writer_schema_file is not None:
        _check_readable(settings.avro_writer_schema_file, "AVRO_WRITER_SCHEMA_FILE")
    if settings.track_api_ca_bundle is not None:
        _check_readable(settings.track_api_ca_bundle, "TRACK_API_CA_BUNDLE")
    for name in ("schema_registry_basic_auth_user_info_file", "schema_registry_bearer_auth_token_file"):
        if (path := getattr(settings, name)) is not None:
            _check_readable(path, name.upper())
    overrides = kafka_overrides(env)
    for key in _MUST_BE_FALSE:
        if key in overrides and overrides[key].strip().lower() not in ("false", "0"):
            name = setting_name(KAFKA_CFG_PREFIX, key)
            raise ConfigError(f"{name} is invalid: must be false: offsets are committed only after delivery")
    return settings, overrides


_SECRET_WORDS = ("password", "secret", "token", "key", "jaas", "user.info")


def redacted(settings: Settings, overrides: dict[str, str]) -> dict[str, object]:
    """The effective configuration for the start-up log, with every secret replaced."""
    out: dict[str, object] = {name.upper(): value for name, value in settings.model_dump(mode="json").items()}
    if settings.track_api_token is not None:
        out["TRACK_API_TOKEN"] = "<redacted>"
    for name in ("SCHEMA_REGISTRY_URL", "TRACK_API_URL"):
        if isinstance(out.get(name), str):
            out[name] = redact_urls(str(out[name]))
    for prefix, props in ((KAFKA_CFG_PREFIX, overrides), (SCHEMA_REGISTRY_CFG_PREFIX, settings.schema_registry_cfg)):
        for key, value in props.items():
            secret = any(word in key for word in _SECRET_WORDS) and not key.endswith(".location")
            out[setting_name(prefix, key)] = "<redacted>" if secret else value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, str]:
    # Passing values explicitly (not letting pydantic read os.environ) keeps `load` testable with any mapping.
    fields = Settings.model_fields
    return {k.lower(): v for k, v in env.items() if k.lower() in fields and k.lower() != "schema_registry_cfg"}


def _one_line(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(p) for p in err.get("loc", ())]
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return f"invalid configuration: {msg}"
    name = loc[0].upper()
    if err["type"] == "missing":
        return f"{name} is required"
    # Never echo the value: it may be a secret.
    return f"{name} is invalid: {msg}"


def _check_readable(path: Path, name: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{name} is invalid: cannot read {path}: {exc.strerror}") from None
