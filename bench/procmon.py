"""Peak RSS and CPU seconds of process trees, read from /proc (Linux only).

A `Sampler` thread reads every watched tree every 100 ms: the root pids and all their
descendants (children of children too), summing VmRSS. CPU is utime+stime from
/proc/<pid>/stat, kept per pid at its last sample so a process that has exited still
counts with what it had used.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (comm), e.g. {'python': 12.1, 'rdk:broker1': 3.0}."""
    out: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (user+nice+system+irq+softirq+steal)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


class Sampler:
    """Watch named groups of root pids; peak summed RSS and CPU seconds per group."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.groups: dict[str, list[int]] = {}
        self.peak: dict[str, int] = {}
        self.current: dict[str, int] = {}
        self._cpu: dict[int, float] = {}  # pid → CPU seconds at its last sample
        self._group_pids: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procmon", daemon=True)

    def watch(self, group: str, pid: int) -> None:
        with self._lock:
            self.groups.setdefault(group, []).append(pid)
            self._group_pids.setdefault(group, set()).add(pid)
            self.peak.setdefault(group, 0)
        self.sample()

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            for group, roots in self.groups.items():
                total = 0
                for root in roots:
                    for pid in tree(root):
                        total += rss_bytes(pid)
                        cpu = cpu_seconds(pid)
                        if cpu is not None:
                            self._cpu[pid] = cpu
                            self._group_pids[group].add(pid)
                self.current[group] = total
                self.peak[group] = max(self.peak[group], total)

    def cpu(self, group: str) -> float:
        with self._lock:
            return sum(self._cpu.get(p, 0.0) for p in self._group_pids.get(group, ()))

    def cpu_all(self) -> dict[str, float]:
        return {g: self.cpu(g) for g in list(self.groups)}


class CpuWindow:
    """CPU seconds each group used between `open()` and `close()`, plus the whole machine's."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def open(self) -> CpuWindow:
        self.sampler.sample()
        self.t0 = time.monotonic()
        self.m0 = machine_busy_seconds()
        self.c0 = self.sampler.cpu_all()
        return self

    def close(self) -> dict[str, float]:
        self.sampler.sample()
        wall = time.monotonic() - self.t0
        out = {g: v - self.c0.get(g, 0.0) for g, v in self.sampler.cpu_all().items()}
        out["machine"] = machine_busy_seconds() - self.m0
        out["wall"] = wall
        return out
