"""The container image, run the way Kubernetes runs it: as uid 10001, read-only root, SIGTERM to stop.

Needs `buildah` and a built image (`make image` builds it and sets IMAGE_TESTS=1). Each container
runs with `buildah run --isolation chroot --network host` (loopback reaches the test's broker and
Track API stand-in) under the image's own user. buildah has no `--read-only`, so every top-level
directory of the image is bind-mounted read-only over itself, with tmpfs on /tmp and /run as a pod's
emptyDir (buildah itself writes /run/.containerenv). Only the `/` directory itself stays writable,
and it belongs to root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import kafkautil
from harness.kafka import free_port
from harness.records import encode_raw, sample_record
from harness.trackapi import TrackApi

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("IMAGE_TESTS") != "1",
        reason="image tests need buildah and a built image: run `make image` (it sets IMAGE_TESTS=1)",
    ),
]

IMAGE = os.environ.get("IMAGE", "localhost/group-enriched-consumer:dev")
BUILDAH = ["buildah", "--storage-driver", os.environ.get("STORAGE_DRIVER", "vfs")]
WRITABLE = {"dev", "proc", "sys", "tmp", "run"}  # kernel file systems, and the pod's emptyDir stand-ins
APP_UID = 10001
PARTITIONS = 2
N = 2000


def buildah(*args: str) -> str:
    return subprocess.run([*BUILDAH, *args], check=True, capture_output=True, text=True, timeout=300).stdout.strip()


class Container:
    """A working container of IMAGE; `command` builds a `buildah run` of it, locked down as in the chart."""

    def __init__(self) -> None:
        self.name = f"image-test-{uuid.uuid4().hex[:8]}"
        buildah("from", "--pull=never", "--name", self.name, IMAGE)
        self.root = buildah("mount", self.name)
        self.config = json.loads(buildah("inspect", "--type", "image", IMAGE))["OCIv1"]["config"]
        top = Path(self.root).iterdir()
        self.read_only = sorted(p.name for p in top if p.is_dir() and not p.is_symlink() and p.name not in WRITABLE)

    def command(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        mounts = [f"--mount=type=bind,source={self.root}/{d},destination=/{d},ro" for d in self.read_only]
        mounts += ["--mount=type=tmpfs,destination=/tmp", "--mount=type=tmpfs,destination=/run"]
        envs = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return [*BUILDAH, "run", "--isolation=chroot", "--network=host", *mounts, *envs, self.name, "--", *argv]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=60, check=False)

    def remove(self) -> None:
        subprocess.run([*BUILDAH, "rm", self.name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    c = Container()
    try:
        yield c
    finally:
        c.remove()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (buildah → its chroot runtime → the container's command)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        todo += children
    return found


def container_process(launcher: subprocess.Popen[bytes], needle: str, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in descendants(launcher.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_text()
            except OSError:
                continue
            if needle in cmdline and not cmdline.startswith("buildah-"):  # buildah-chroot-exec shows it too
                return pid
        assert launcher.poll() is None, f"container exited with {launcher.returncode} before {needle} started"
        time.sleep(0.1)
    raise TimeoutError(f"no {needle} process under buildah after {timeout_s}s")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def test_image_config_is_what_the_chart_expects(container: Container) -> None:
    cfg = container.config
    assert cfg["Entrypoint"] == ["group-enriched-consumer"]  # exec form: SIGTERM reaches the process
    assert not cfg.get("Cmd")  # the base's CMD is dropped: any argument makes the CLI print usage and exit 2
    assert cfg["User"] == f"{APP_UID}:{APP_UID}"  # numeric, so runAsNonRoot can verify it
    assert "9400/tcp" in cfg["ExposedPorts"]
    assert "PYTHONDONTWRITEBYTECODE=1" in cfg["Env"]


def test_runs_as_uid_10001_on_a_read_only_root(container: Container) -> None:
    script = (
        "id -u; id -g; command -v python3; command -v group-enriched-consumer;"
        " for p in /x /etc/x /opt/venv/x /usr/x /var/tmp/x /tmp/x; do"
        ' touch "$p" 2>/dev/null && echo "$p writable" || echo "$p denied"; done'
    )
    result = container.run("sh", "-c", script)
    assert result.returncode == 0, result.stderr
    # /var/tmp is world-writable in the image: refused only because the root file system is read-only.
    assert result.stdout.split("\n") == [
        str(APP_UID), str(APP_UID), "/opt/venv/bin/python3", "/opt/venv/bin/group-enriched-consumer",
        "/x denied", "/etc/x denied", "/opt/venv/x denied", "/usr/x denied", "/var/tmp/x denied",
        "/tmp/x writable", "",
    ]  # fmt: skip


def test_ships_no_pip_and_no_compiler(container: Container) -> None:
    result = container.run("sh", "-c", "python3 -m pip --version; for c in gcc cc pip pip3; do command -v $c; done; :")
    assert "No module named pip" in result.stderr
    assert result.stdout == ""
    assert container.run("python3", "-c", "import consumer, confluent_kafka, fastavro, orjson").returncode == 0


def test_bad_setting_exits_2_with_one_line(container: Container) -> None:
    cmd = container.command(*container.config["Entrypoint"], env={"KAFKA_BOOTSTRAP_SERVERS": "x:9092"})
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    line = next(json.loads(s) for s in result.stderr.splitlines() if s.startswith("{"))
    assert line["level"] == "error" and "TRACK_API_TOKEN" in line["msg"]


def test_consumes_delivers_and_stops_cleanly_on_sigterm(
    container: Container, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"image-{uuid.uuid4().hex[:8]}"
    kafkautil.create_topic(kafka_bootstrap, topic, PARTITIONS)
    # An even spread: keyless records can all land in one partition (sticky partitioner), and a
    # partition with no records has nothing to commit, so the committed == end check below failed.
    records = [(None, encode_raw(sample_record(i, "img"))) for i in range(N)]
    kafkautil.produce(kafka_bootstrap, topic, records, partitions=PARTITIONS)
    port = free_port()
    with TrackApi() as api:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": f"{topic}-group",
            "TRACK_API_URL": api.url,
            "TRACK_API_TOKEN": api.token,
            "METRICS_PORT": str(port),
            "COMMIT_INTERVAL_MS": "200",
        }
        log = tmp_path / "container.log"
        argv = [*container.config["Entrypoint"], *(container.config.get("Cmd") or [])]
        with log.open("wb") as out:
            launcher = subprocess.Popen(container.command(*argv, env=env), stdout=out, stderr=subprocess.STDOUT)
        try:
            pid = container_process(launcher, "group-enriched-consumer")
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            assert set(status["Uid"].split()) == set(status["Gid"].split()) == {str(APP_UID)}  # real, effective, saved
            assert api.wait_for(N, timeout_s=120), f"{api.count()}/{N} events arrived:\n{log.read_text()[-3000:]}"
            assert http_status(f"http://127.0.0.1:{port}/readyz") == 200
            # As the chart's `helm test` pod does it: the image's python3, from inside a container.
            probe = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).status)"
            inside = container.run("python3", "-c", probe, f"http://127.0.0.1:{port}/healthz")
            assert inside.stdout.strip() == "200", inside.stderr
            os.kill(pid, signal.SIGTERM)  # as the kubelet does: to the container's process, not to buildah
            code = launcher.wait(60)
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait(10)
    logs = log.read_text(errors="replace")
    assert code == 0, logs[-3000:]
    assert len({e["user_id"] for e in api.events}) == N
    ends = kafkautil.end_offsets(kafka_bootstrap, topic, PARTITIONS)
    assert kafkautil.committed_offsets(kafka_bootstrap, env["KAFKA_GROUP_ID"], topic, PARTITIONS) == ends
    lines = [json.loads(line) for line in logs.splitlines()]  # JSON lines only, as the contract says
    assert "signal SIGTERM: draining" in [line["msg"] for line in lines]
    assert not [line for line in lines if line["level"] == "error"]
