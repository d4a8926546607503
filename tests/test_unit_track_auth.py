"""TRACK_API_AUTH: the setting, the header it picks, and one request each way against the loopback stand-in."""

from __future__ import annotations

import threading

import pytest

from consumer.batcher import close
from consumer.config import ConfigError, load
from consumer.delivery import Delivery, TokenSource, auth_header
from consumer.flow import ConcurrencyLimit
from consumer.telemetry import Health, Metrics
from harness.trackapi import TrackApi

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "localhost:9092", "TRACK_API_TOKEN": "tok-123"}


def test_default_is_bearer() -> None:
    settings, _ = load(BASE)
    assert settings.track_api_auth == "bearer"


def test_x_api_key_is_accepted() -> None:
    settings, _ = load({**BASE, "TRACK_API_AUTH": "x-api-key"})
    assert settings.track_api_auth == "x-api-key"


@pytest.mark.parametrize("value", ["basic", "Bearer-ish", "", "apikey"])
def test_anything_else_stops_start_up_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load({**BASE, "TRACK_API_AUTH": value})
    assert str(err.value).startswith("TRACK_API_AUTH is invalid")
    assert "tok-123" not in str(err.value)


def test_header_for_each_scheme() -> None:
    assert auth_header("bearer", "t0k") == ("Authorization", "Bearer t0k")
    assert auth_header("x-api-key", "t0k") == ("x-api-key", "t0k")


def _one_batch(api: TrackApi, scheme: str, token: str, refused: bool = False) -> tuple[int, int, bool]:
    """POST one 2-event batch; (delivered, abandoned, auth_failing) after the first answer."""
    metrics = Metrics()
    health = Health(60, metrics)
    delivery = Delivery(api.url, TokenSource(token), 5, 0.2, 2, metrics, health, ConcurrencyLimit(2), auth=scheme)
    batch = close([b'{"user_id":"a"}', b'{"user_id":"b"}'], [((0, 0), 0, None, b""), ((0, 1), 0, None, b"")], 0.0)
    if refused:  # stop after the first answer rather than retry forever
        threading.Thread(target=lambda: (_wait_first(api), delivery.stop.set()), daemon=True).start()
    try:
        outcome = delivery.send(batch)
    finally:
        delivery.close()
    return len(outcome.delivered), len(outcome.abandoned), health.auth_failing


def _wait_first(api: TrackApi) -> None:
    while not api.requests:
        threading.Event().wait(0.01)


@pytest.mark.parametrize("scheme", ["bearer", "x-api-key"])
def test_delivery_sends_the_token_in_the_chosen_header(scheme: str) -> None:
    with TrackApi(token="right-1", auth=scheme) as api:
        assert _one_batch(api, scheme, "right-1") == (2, 0, False)
    expected = "Authorization: Bearer right-1" if scheme == "bearer" else "x-api-key: right-1"
    assert [r.auth for r in api.requests] == [expected]
    assert api.count() == 2


@pytest.mark.parametrize(("scheme", "api_wants"), [("bearer", "x-api-key"), ("x-api-key", "bearer")])
def test_the_other_header_is_refused_as_a_token_failure(scheme: str, api_wants: str) -> None:
    """The stand-in checks the header: a consumer set to the other scheme gets 401 → auth failing, nothing lost."""
    with TrackApi(token="right-1", auth=api_wants) as api:
        delivered, abandoned, failing = _one_batch(api, scheme, "right-1", refused=True)
    assert (delivered, abandoned, failing) == (0, 2, True)
    assert api.requests[0].status == 401 and api.count() == 0
