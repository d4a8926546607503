"""The parts every bench phase shares: broker, sink process, consumer processes, the Quix venv."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from harness import kafkautil
from harness.kafka import free_port
from harness.process import ConsumerProcess

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
VENV = ROOT / ".cache" / "bench-venv"
QUIX_REQUIREMENTS = Path(__file__).resolve().parent / "requirements-quix.txt"
TOKEN = "bench-token"
PARTITIONS = 8


def say(msg: str = "") -> None:
    print(msg, flush=True)


class Sink:
    """bench/sink.py in its own process (so it never shares a GIL with a contender)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="bench-sink-", suffix=".log")[1])
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", "--port", str(self.port)],
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while "listening" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sink did not start: {self.log.read_text()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/track"

    def get(self, path: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path)
            return conn.getresponse().read()
        finally:
            conn.close()

    def json(self, path: str) -> dict[str, Any]:
        return orjson.loads(self.get(path))

    def reset(self, serialize: bool = False, delay_ms: int = 0) -> None:
        self.get(f"/_reset?serialize={int(serialize)}&delay_ms={delay_ms}")

    def stats(self) -> dict[str, Any]:
        return self.json("/_stats")

    def latency(self, since_ms: int = 0) -> dict[str, Any]:
        return self.json(f"/_latency?since_ms={since_ms}")

    def uids(self) -> list[bytes]:
        body = self.get("/_uids")
        return body.split(b"\n") if body else []

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()
        self._out.close()


def new_topic(bootstrap: str, prefix: str, tag: str) -> str:
    topic = f"bench-{prefix}-{tag}"
    kafkautil.create_topic(bootstrap, topic, PARTITIONS)
    kafkautil.create_topic(bootstrap, f"{topic}.dlq", PARTITIONS)  # so N consumers don't race to create it
    return topic


def consumer_env(bootstrap: str, topic: str, group: str, sink: Sink, **extra: str) -> dict[str, str]:
    """The consumer's own defaults (500 events / 200 ms batches, commits every 1 s, statistics every 5 s)."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "TRACK_API_URL": sink.url,
        "TRACK_API_TOKEN": TOKEN,
        **extra,
    }


def start_consumer(env: dict[str, str], name: str) -> ConsumerProcess:
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / f"{name}.log"
    log.unlink(missing_ok=True)
    return ConsumerProcess(env, log).start()


def _epoch(ts: str) -> float:
    return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def first_assignment(proc: ConsumerProcess) -> float | None:
    """Wall time of the consumer's first 'partitions assigned' log line."""
    return _first_log(proc, '"partitions assigned"')


def first_record(proc: ConsumerProcess) -> float | None:
    """Wall time of the consumer's first 'first records after assignment' line: consumption starts there."""
    return _first_log(proc, '"first records after assignment"')


def assigned_at(proc: ConsumerProcess) -> float | None:
    """Wall time of the consumer's first assignment that gave it at least one partition."""
    return _first_log(proc, '"partitions assigned"', lambda entry: bool(entry.get("partitions")))


def _first_log(
    proc: ConsumerProcess, needle: str, wanted: Callable[[dict[str, Any]], bool] = lambda _: True
) -> float | None:
    for line in proc.logs().splitlines():
        if needle in line:
            with contextlib.suppress(ValueError, KeyError):
                entry = orjson.loads(line)
                if wanted(entry):
                    return _epoch(entry["ts"])
    return None


def bench_start(log: Path) -> float | None:
    """`BENCH_START <ms>` printed by naive.py / quix_app.py at their first message."""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("BENCH_START "):
                return int(line.split()[1]) / 1000
    return None


def ensure_quix_venv() -> Path | None:
    """.cache/bench-venv with the pins of bench/requirements-quix.txt; None if it cannot be built."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if python.exists() and stamp.exists() and stamp.stat().st_mtime >= QUIX_REQUIREMENTS.stat().st_mtime:
        return python
    say(f"setup      creating {VENV.relative_to(ROOT)} for Quix Streams and py-spy (pinned, one time)")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(QUIX_REQUIREMENTS)], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        say(f"setup      could not build the Quix venv ({exc}); the quixstreams contender is skipped")
        return None
    stamp.touch()
    return python


def py_spy() -> Path | None:
    venv = ensure_quix_venv()
    if venv is None:
        return None
    exe = VENV / "bin" / "py-spy"
    return exe if exe.exists() else None


def env_for_child() -> dict[str, str]:
    """The caller's environment with the repository root importable (bench.* and consumer.*)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env
