"""Running the operator tools (`group-enriched-consumer inspect | dlq | offsets`) as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from consumer.config import Settings


def tool_env(env: dict[str, str]) -> dict[str, str]:
    """The test's settings only: none leak in from the caller's environment."""
    inherited = {
        k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields and not k.startswith("KAFKA_CFG_")
    }
    return {**inherited, **env}


def run_tool(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env=tool_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def start_tool(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "consumer", *args],
        env=tool_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
