"""consumer.delivery: TokenSource (rotation, unreadable file) and RetryGate (shared Retry-After deadline)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from consumer.config import ConfigError
from consumer.delivery import RetryGate, TokenSource

# ---- TokenSource -----------------------------------------------------------------------------------


def _write(path: Path, text: str, bump: float) -> None:
    """Write `text` and move the mtime `bump` seconds forward (no sleeping for the filesystem's resolution)."""
    st = path.stat() if path.exists() else None
    path.write_text(text)
    base = st.st_mtime if st else time.time()
    os.utime(path, (base + bump, base + bump))


def test_env_token_is_returned_as_is() -> None:
    assert TokenSource(token="env-token").get() == "env-token"


def test_file_token_is_stripped(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("  file-token-1\n")
    assert TokenSource(path=f).get() == "file-token-1"


def test_rotated_file_is_re_read(tmp_path: Path) -> None:
    f = tmp_path / "token"
    _write(f, "token-one", 0)
    src = TokenSource(path=f)
    assert src.get() == "token-one"
    _write(f, "token-two", 10)  # same length: only the mtime tells
    assert src.get() == "token-two"
    _write(f, "token-three-longer", 10)
    assert src.get() == "token-three-longer"


def test_size_change_alone_is_noticed(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("short")
    st = f.stat()
    src = TokenSource(path=f)
    f.write_text("much-longer-token")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime as before, different size
    assert src.get() == "much-longer-token"


def test_refresh_re_reads_too(tmp_path: Path) -> None:
    f = tmp_path / "token"
    _write(f, "a-token", 0)
    src = TokenSource(path=f)
    _write(f, "b-token", 5)
    src.refresh()
    assert src.get() == "b-token"


def test_symlink_swap_like_a_kubernetes_secret(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1" / "token").write_text("secret-v1")
    (tmp_path / "v2" / "token").write_text("secret-v2-rotated")
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "v1")
    src = TokenSource(path=link / "token")
    assert src.get() == "secret-v1"
    tmp_link = tmp_path / "current.tmp"
    tmp_link.symlink_to(tmp_path / "v2")
    tmp_link.replace(link)
    assert src.get() == "secret-v2-rotated"


def test_deleted_file_keeps_the_old_token(tmp_path: Path) -> None:
    f = tmp_path / "token"
    _write(f, "keep-me", 0)
    src = TokenSource(path=f)
    f.unlink()
    assert src.get() == "keep-me"
    _write(f, "back-again", 0)
    assert src.get() == "back-again"


def test_file_replaced_by_a_directory_keeps_the_old_token(tmp_path: Path) -> None:
    f = tmp_path / "token"
    _write(f, "keep-me", 0)
    src = TokenSource(path=f)
    f.unlink()
    f.mkdir()
    assert src.get() == "keep-me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_keeps_the_old_token(tmp_path: Path) -> None:
    f = tmp_path / "token"
    _write(f, "keep-me", 0)
    src = TokenSource(path=f)
    _write(f, "cannot-see", 10)
    f.chmod(0)
    assert src.get() == "keep-me"


def test_emptied_file_keeps_the_old_token(tmp_path: Path) -> None:
    f = tmp_path / "token"
    _write(f, "keep-me", 0)
    src = TokenSource(path=f)
    _write(f, "\n", 10)
    assert src.get() == "keep-me"
    _write(f, "new-one", 10)
    assert src.get() == "new-one"


def test_empty_file_at_start_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("  \n")
    with pytest.raises(ConfigError, match="TRACK_API_TOKEN_FILE"):
        TokenSource(path=f)


def test_missing_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRACK_API_TOKEN_FILE"):
        TokenSource(path=tmp_path / "absent")


def test_a_token_file_with_a_non_ascii_token_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("tökén\n")
    with pytest.raises(ConfigError, match="TRACK_API_TOKEN_FILE"):
        TokenSource(path=f)


def test_rotation_to_an_unusable_token_keeps_the_current_one(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("good-token\n")
    source = TokenSource(path=f)
    f.write_text("bad token with spaces\n")
    os.utime(f, (1, 1))
    assert source.get() == "good-token"


# ---- RetryGate -------------------------------------------------------------------------------------


class Stop(threading.Event):
    """A stop event that records each wait the gate makes on it, and can hold a waiter at its next wait.

    "Did not wait" is then `waits == []`, not a wall-clock bound a loaded machine can miss; and
    a test can act while a waiter is known to be inside its wait.
    """

    def __init__(self, hold: bool = False) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self.waiting = threading.Event()  # set once a waiter entered wait()
        self.proceed = threading.Event()  # while clear (with `hold`), the first wait blocks here first
        if not hold:
            self.proceed.set()

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.waiting.set()
        self.proceed.wait()
        return super().wait(timeout)


def _wait_in_thread(gate: RetryGate, stop: threading.Event) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            result["value"] = gate.wait(stop)
        except Exception as exc:  # reported to the test thread
            result["error"] = exc
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


JOIN_S = 20  # far below the 30 s deferrals the stop tests use: a thread still alive then never saw the stop


def test_wait_without_deadline_returns_at_once() -> None:
    stop = Stop()
    assert RetryGate().wait(stop) is True
    assert stop.waits == []


def test_wait_honours_the_deadline() -> None:
    gate = RetryGate()
    gate.defer(0.2)
    started = time.monotonic()
    assert gate.wait(threading.Event()) is True
    assert time.monotonic() - started >= 0.19


def test_past_deadline_does_not_wait() -> None:
    gate = RetryGate()
    gate.defer(0.05)
    assert gate.wait(threading.Event()) is True  # waits the deadline out
    stop = Stop()
    assert gate.wait(stop) is True
    assert stop.waits == []


@pytest.mark.parametrize("seconds", [0, -5])
def test_zero_or_negative_defer_does_not_wait(seconds: float) -> None:
    gate = RetryGate()
    gate.defer(seconds)
    stop = Stop()
    assert gate.wait(stop) is True
    assert stop.waits == []


def test_a_shorter_defer_does_not_shorten_the_deadline() -> None:
    gate = RetryGate()
    gate.defer(0.25)
    gate.defer(0.01)
    started = time.monotonic()
    assert gate.wait(threading.Event()) is True
    assert time.monotonic() - started >= 0.24


def test_a_longer_defer_during_the_wait_extends_it() -> None:
    gate = RetryGate()
    gate.defer(0.1)
    stop = Stop(hold=True)
    thread, result = _wait_in_thread(gate, stop)
    assert stop.waiting.wait(JOIN_S)
    gate.defer(0.3)  # another worker got a longer Retry-After while this one waits
    stop.proceed.set()
    thread.join(JOIN_S)
    assert result["value"] is True
    assert result["elapsed"] >= 0.3  # type: ignore[operator]


def test_stop_during_the_wait_returns_false() -> None:
    gate = RetryGate()
    gate.defer(30)
    stop = Stop()
    thread, result = _wait_in_thread(gate, stop)
    assert stop.waiting.wait(JOIN_S)
    stop.set()
    thread.join(JOIN_S)
    assert not thread.is_alive()
    assert result.get("value") is False


def test_stop_already_set_returns_false() -> None:
    stop = threading.Event()
    stop.set()
    assert RetryGate().wait(stop) is False
    gate = RetryGate()
    gate.defer(30)
    thread, result = _wait_in_thread(gate, stop)
    thread.join(JOIN_S)
    assert not thread.is_alive() and result["value"] is False


def test_the_gate_is_shared_by_every_waiter() -> None:
    gate = RetryGate()
    gate.defer(0.15)
    stop = threading.Event()
    waiters = [_wait_in_thread(gate, stop) for _ in range(4)]
    for thread, result in waiters:
        thread.join(JOIN_S)
        assert result["value"] is True
        assert result["elapsed"] >= 0.14  # type: ignore[operator]


@pytest.mark.parametrize("seconds", [1e10, float("inf")])
def test_huge_retry_after_waits_until_stopped(seconds: float) -> None:
    gate = RetryGate()
    gate.defer(seconds)
    stop = Stop()
    thread, result = _wait_in_thread(gate, stop)
    assert stop.waiting.wait(JOIN_S)
    stop.set()
    thread.join(JOIN_S)
    assert "error" not in result, result.get("error")
    assert result.get("value") is False


def test_draining_gives_up_a_retry_after_wait_promptly() -> None:
    """A stop is never delayed by a Retry-After wait: once draining, a pending wait returns False."""
    gate = RetryGate()
    gate.defer(86400)
    stop, draining = threading.Event(), threading.Event()
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(value=gate.wait(stop, draining)))
    thread.start()
    draining.set()
    thread.join(JOIN_S)
    assert not thread.is_alive()
    assert result["value"] is False


def test_draining_does_not_block_a_gate_with_nothing_to_wait() -> None:
    draining = threading.Event()
    draining.set()
    assert RetryGate().wait(threading.Event(), draining) is True


def test_an_unreadable_token_file_is_logged_once_per_interval_not_per_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "token"
    _write(f, "keep-me", 0)
    src = TokenSource(path=f)
    f.unlink()
    with caplog.at_level("WARNING", logger="consumer.delivery"):
        for _ in range(100):  # one read per request
            assert src.get() == "keep-me"
    assert len([r for r in caplog.records if "cannot re-read" in r.getMessage()]) == 1
