"""Run the real `group-enriched-consumer` CLI as a child process and watch it like an operator would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from consumer.config import Settings
from harness.kafka import free_port


def log_entries(logs: str, msg_prefix: str = "") -> list[dict[str, Any]]:
    """The JSON log lines of `logs` (anything else skipped) whose `msg` starts with `msg_prefix`."""
    out = []
    for line in logs.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and str(entry.get("msg", "")).startswith(msg_prefix):
            out.append(entry)
    return out


class ConsumerProcess:
    def __init__(self, env: dict[str, str], log_path: Path | None = None, module: str = "consumer") -> None:
        self.module = module  # tests run the CLI through a wrapper module that injects a fault
        self.port = int(env.get("METRICS_PORT") or free_port())
        # Only the test's settings: none leak in from the caller's environment.
        inherited = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in Settings.model_fields and not k.startswith("KAFKA_CFG_")
        }
        self.env = {**inherited, "METRICS_PORT": str(self.port), **env}
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="consumer-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.get("/readyz")[0] != 200:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"consumer exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer not ready after {timeout_s}s:\n{self.logs()[-3000:]}")
            time.sleep(0.1)

    def metrics(self) -> dict[str, float]:
        """Every sample as 'name{label="v",...}' → value (labels sorted), from a live scrape."""
        status, text = self.get("/metrics")
        assert status == 200, status
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        """Send `sig` and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_entries(self, msg_prefix: str = "") -> list[dict[str, Any]]:
        return log_entries(self.logs(), msg_prefix)

    def __enter__(self) -> ConsumerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
