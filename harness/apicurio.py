"""A real Schema Registry for tests: Apicurio Registry 3.0.9, Confluent-compatible API at /apis/ccompat/v7.

Built by `../shared/tools/apicurio-registry/build-apicurio.sh` (Maven Central plus a small
Apache-2.0 source archive; ~4 minutes once) into a writable cache, never into `../shared`
(CI's copy of it has no write bits): `$APICURIO_CACHE`, else
`~/.cache/group-enriched-consumer/apicurio` (the script's own `apic/` and `m2/` under it).
A file lock keeps two sessions from building at once; the build is skipped when the jar is
there. `Apicurio` starts the jar on a free loopback port (in-memory storage, ~4 s) and stops it.

`unavailable()` says why it cannot run here (no `../shared` beside the repo, no Java 17, no
Maven or unzip), so tests skip with that reason instead of failing.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from harness.kafka import free_port

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO.parent / "shared" / "tools" / "apicurio-registry"
SCRIPT = TOOLS / "build-apicurio.sh"
CCOMPAT = "/apis/ccompat/v7"


def cache_dir() -> Path:
    return Path(os.environ.get("APICURIO_CACHE") or Path.home() / ".cache" / "group-enriched-consumer" / "apicurio")


def runner_jar() -> Path:
    return cache_dir() / "apic" / "wrap" / "target" / "quarkus-app" / "quarkus-run.jar"


def unavailable() -> str | None:
    """Why Apicurio cannot be built or run here, or None."""
    if not SCRIPT.exists():
        return f"Apicurio build script not found at {SCRIPT} (../shared is not beside the repo)"
    missing = [tool for tool in ("java", "mvn", "unzip") if shutil.which(tool) is None]
    if runner_jar().exists():
        missing = [t for t in missing if t == "java"]  # built already: only Java is needed to run it
    if missing:
        return f"Apicurio needs {', '.join(missing)} on PATH"
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    version = re.search(r'version "(\d+)', out)
    if not version or int(version.group(1)) < 17:
        return f"Apicurio needs Java 17 or later (java -version: {out.splitlines()[0] if out else '?'})"
    return None


def build(log: Callable[[str], None] = print) -> Path:
    """The runnable jar, building it first if needed (minutes, once)."""
    jar = runner_jar()
    if jar.exists():
        return jar
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building: wait for it
        if jar.exists():
            return jar
        log(f"apicurio: building Apicurio Registry 3.0.9 into {cache} (about 4 minutes, once)")
        started = time.monotonic()
        env = {**os.environ, "APIC_DIR": str(cache / "apic"), "SR_M2": str(cache / "m2")}
        build_log = cache / "build.log"
        with build_log.open("w") as out:
            code = subprocess.run(["bash", str(SCRIPT)], env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        if code != 0 or not jar.exists():
            tail = build_log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Apicurio build failed (exit {code}); {build_log}:\n{tail}")
        log(f"apicurio: built in {time.monotonic() - started:.0f}s")
    return jar


class Apicurio:
    """Apicurio Registry on a free loopback port; `url` is its Confluent-compatible API."""

    def __init__(self, jar: Path | None = None, start_timeout_s: float = 180) -> None:
        self.jar = jar or build()
        self.port = free_port()
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(tempfile.mkstemp(prefix="apicurio-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CCOMPAT}"

    def start(self) -> Apicurio:
        cmd = [
            "java",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # starts faster; the tests send few requests
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self.port}",
            "-jar",
            str(self.jar),
        ]
        started = time.monotonic()
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.jar.parent)
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"Apicurio exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            if time.monotonic() - started > self.start_timeout_s:
                self.stop()
                raise TimeoutError(f"Apicurio not up after {self.start_timeout_s}s:\n{self.logs()[-3000:]}")
            time.sleep(0.2)
        self.started_in_s = time.monotonic() - started
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Apicurio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
