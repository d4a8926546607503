"""`python -m bench`: throughput, latency and memory of the consumer beside the alternatives.

    python -m bench                         # contenders table + latency at 50% of peak (default 200,000 records)
    python -m bench --records 50000         # a quicker run
    python -m bench backpressure            # slow API: bounded RSS, pause, lag, SIGTERM drain (1,000,000 and 250,000)
    python -m bench profile                 # py-spy of consumer x1 and x2, CPU seconds per process and thread

Uses $KAFKA_BOOTSTRAP_SERVERS if set (or --bootstrap), else starts a local broker
(harness.kafka). See docs/benchmarks.md for what each contender is and how to read the output.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import procmon
from bench.data import Templates, produce_backlog, uid_index
from bench.env import (
    CACHE,
    PARTITIONS,
    ROOT,
    TOKEN,
    Sink,
    assigned_at,
    bench_start,
    consumer_env,
    ensure_quix_venv,
    env_for_child,
    first_assignment,
    first_record,
    new_topic,
    py_spy,
    say,
    start_consumer,
)
from harness import kafkautil
from harness.kafka import KafkaBroker, free_port
from harness.process import ConsumerProcess

CONTENDERS = ("ceiling", "x1", "x2", "quix", "naive")
NAMES = {
    "ceiling": "ceiling",
    "x1": "consumer x1",
    "x2": "consumer x2",
    "quix": "quixstreams",
    "naive": "naive",
}


@dataclass
class Result:
    name: str
    expected: int
    unique: int = 0
    duplicates: int = 0
    rate: float | None = None
    steady_rate: float | None = None  # several processes: from the moment each had partitions
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mb: float | None = None
    exit_codes: list[int | None] = field(default_factory=list)
    note: str = ""
    note_extra: str = ""
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_steady: dict[str, float] = field(default_factory=dict)  # several processes, all with partitions
    threads: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- setup


class Bench:
    """Broker (or $KAFKA_BOOTSTRAP_SERVERS), sink process, /proc sampler, record templates."""

    def __init__(self, bootstrap: str | None) -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        self.stack = contextlib.ExitStack()
        self.tag = uuid.uuid4().hex[:6]
        self.broker_pid: int | None = None
        if bootstrap:
            self.bootstrap = bootstrap
            say(f"kafka      using {bootstrap} (its CPU is not in the shares below)")
        else:
            started = time.monotonic()
            broker = self.stack.enter_context(KafkaBroker())
            self.bootstrap = broker.bootstrap
            self.broker_pid = broker.pid
            up = time.monotonic() - started
            say(f"kafka      local Apache Kafka (harness.kafka) on {self.bootstrap}, up in {up:.1f}s")
        self.sink = Sink()
        self.stack.callback(self.sink.close)
        say(f"sink       bench/sink.py (asyncio, raw HTTP/1.1 keep-alive) on {self.sink.url}")
        self.sampler = procmon.Sampler().start()
        self.stack.callback(self.sampler.stop)
        if self.broker_pid:
            self.sampler.watch("broker", self.broker_pid)
        self.sampler.watch("sink", self.sink.proc.pid)
        self.tpl = Templates.build()

    def close(self) -> None:
        self.stack.close()

    def topic_with_backlog(self, prefix: str, n: int) -> tuple[str, float]:
        topic = new_topic(self.bootstrap, prefix, self.tag)
        seconds = produce_backlog(self.bootstrap, topic, self.tpl, self.tag, 0, n, PARTITIONS)
        ends = kafkautil.end_offsets(self.bootstrap, topic, PARTITIONS)
        assert sum(ends.values()) == n, f"{sum(ends.values())} records in {topic}, expected {n}"
        return topic, seconds

    def cpu_window(self) -> CpuWindow:
        return CpuWindow(self.sampler)


class CpuWindow(procmon.CpuWindow):
    """Also counts this process (the bench itself: sink polling, sampler, producing)."""

    def open(self) -> CpuWindow:
        t = os.times()
        self.self0 = t.user + t.system
        super().open()
        return self

    def close(self) -> dict[str, float]:
        out = super().close()
        t = os.times()
        out["bench"] = t.user + t.system - self.self0
        return out


@contextlib.contextmanager
def bench_env(bootstrap: str | None) -> Iterator[Bench]:
    b = Bench(bootstrap)
    try:
        yield b
    finally:
        b.close()


def machine_line() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    load = os.getloadavg()
    return (
        f"{procmon.CORES} cores ({cpu}), {mem} GiB, Linux {platform.release()}, Python {platform.python_version()};"
        f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"
    )


# ---------------------------------------------------------------------------------------------- contenders


def wait_all(
    b: Bench,
    n: int,
    timeout_s: float,
    alive: list[subprocess.Popen[bytes]],
    on_first: Callable[[], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Poll the sink until n unique user_ids arrived; CPU window from its first event to the last."""
    deadline = time.monotonic() + timeout_s
    window: CpuWindow | None = None
    while True:
        st = b.sink.stats()
        if window is None and st["events"] > 0:
            window = b.cpu_window().open()
            if on_first is not None:
                on_first()
        if on_tick is not None:
            on_tick()
        if st["unique"] >= n or time.monotonic() > deadline:
            break
        if any(p.poll() is not None for p in alive):
            say("           a contender process exited early")
            break
        time.sleep(0.05)
    return st, (window.close() if window else {})


def run_ceiling(b: Bench, n: int) -> Result:
    r = Result(NAMES["ceiling"], n)
    out = CACHE / "ceiling.out"
    with out.open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "bench.ceiling", str(n)], cwd=ROOT, stdout=f)
        b.sampler.watch(r.name, proc.pid)
        proc.wait()
    b.sampler.sample()
    data = orjson.loads(out.read_text().strip().splitlines()[-1])
    r.rate = data["events"] / data["seconds"]
    r.unique = data["unique"]
    r.rss_mb = b.sampler.peak[r.name] / 2**20
    r.exit_codes = [proc.returncode]
    r.note = "in-process loop, no I/O; RSS includes the N values held in memory"
    return r


def run_consumer(
    b: Bench,
    topic: str,
    n: int,
    processes: int,
    timeout_s: float,
    profile: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Result:
    key = f"x{processes}"
    r = Result(NAMES[key], n)
    b.sink.reset()
    group = f"{topic}-{key}-{uuid.uuid4().hex[:4]}"
    procs = [
        start_consumer(
            consumer_env(b.bootstrap, topic, group, b.sink, METRICS_PORT=str(free_port()), **(extra_env or {})),
            f"consumer-{key}-{i}",
        )
        for i in range(processes)
    ]
    spies: list[subprocess.Popen[bytes]] = []
    pids = []
    for p in procs:
        assert p.proc is not None
        b.sampler.watch(r.name, p.proc.pid)
        pids.append(p.proc.pid)

    def attach() -> None:  # from the first event at the sink: start-up and imports stay out of the profile
        if profile is not None:
            for i, pid in enumerate(pids):
                spies.append(start_spy(pid, profile.with_name(f"{profile.stem}-{i}.txt")))

    steady: list[CpuWindow] = []
    next_check = [0.0]

    def tick() -> None:  # several processes: a second CPU window once every one of them has partitions
        if processes == 1 or steady or time.monotonic() < next_check[0]:
            return
        next_check[0] = time.monotonic() + 0.25
        if all(assigned_at(p) for p in procs):
            steady.append(b.cpu_window().open())

    st, cpu = wait_all(b, n, timeout_s, [p.proc for p in procs if p.proc], attach, tick)
    if steady:
        r.cpu_steady = steady[0].close()
    r.threads = [procmon.thread_cpu(p.proc.pid) for p in procs if p.proc]
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        spy.wait(30)
    # Timed from the first record, like every other contender: the group's offset fetch and the
    # first Fetch (0.1-0.2 s after assignment on a new group) are the broker's, not the consumer's.
    starts = [t for p in procs if (t := first_record(p)) is not None]
    assigned = [t for p in procs if (t := first_assignment(p)) is not None]
    finish(b, r, st, min(starts) if starts else None, cpu)
    owning = [assigned_at(p) for p in procs]
    if processes > 1 and all(owning) and st["last"] > max(owning):  # type: ignore[type-var]
        both = max(owning)  # type: ignore[type-var]
        count = b.sink.json(f"/_received_since?t={both}")["count"]
        r.steady_rate = count / (st["last"] - both)
        r.note_extra = f"; {both - min(assigned):.1f}s until every process had partitions, {r.steady_rate:,.0f}/s after"
    r.exit_codes = [p.stop(signal.SIGTERM, 60) for p in procs]
    b.sampler.sample()
    r.rss_mb = b.sampler.peak[r.name] / 2**20
    wait = f" ({min(starts) - min(assigned):.2f}s after the first assignment)" if starts and assigned else ""
    r.note = f"{processes} process{'es' if processes > 1 else ''}, one group; timed from the first record{wait}"
    return r


def finish(b: Bench, r: Result, st: dict[str, Any], t0: float | None, cpu: dict[str, float]) -> None:
    r.unique = st["unique"]
    r.duplicates = st["duplicates"]
    if t0 is not None and st["last"] > t0:
        r.rate = st["unique"] / (st["last"] - t0)
    lat = b.sink.latency()
    if lat.get("count"):
        r.p50_ms, r.p99_ms = lat["p50"], lat["p99"]
    r.cpu = cpu


def run_child(b: Bench, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.unlink(missing_ok=True)
    out = log.open("wb")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env_for_child(), stdout=out, stderr=subprocess.STDOUT)
    out.close()
    b.sampler.watch(name, proc.pid)
    return proc


def stop_child(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def run_quix(b: Bench, topic: str, n: int, timeout_s: float, commit_interval: float) -> Result:
    r = Result(NAMES["quix"], n)
    python = ensure_quix_venv()
    if python is None:
        r.note = "skipped: the Quix venv could not be built"
        return r
    b.sink.reset()
    group = f"{topic}-quix-{uuid.uuid4().hex[:4]}"
    log = CACHE / "quix.log"
    argv = [str(python), "bench/quix_app.py", b.bootstrap, topic, group, b.sink.url, TOKEN, str(commit_interval)]
    proc = run_child(b, r.name, argv, log)
    st, cpu = wait_all(b, n, timeout_s, [proc])
    r.threads = [procmon.thread_cpu(proc.pid)]
    finish(b, r, st, bench_start(log), cpu)
    r.exit_codes = [stop_child(proc)]
    b.sampler.sample()
    r.rss_mb = b.sampler.peak[r.name] / 2**20
    r.note = f"quixstreams 3.28.1, BatchingSink, commit_interval={commit_interval:g}s; timed from the first message"
    return r


def run_naive(b: Bench, topic: str, n: int, budget_s: float) -> Result:
    r = Result(NAMES["naive"], n)
    b.sink.reset()
    group = f"{topic}-naive-{uuid.uuid4().hex[:4]}"
    log = CACHE / "naive.log"
    argv = [sys.executable, "-m", "bench.naive", b.bootstrap, topic, group, b.sink.url, TOKEN]
    proc = run_child(b, r.name, argv, log)
    deadline = time.monotonic() + 60
    while (t0 := bench_start(log)) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    window = b.cpu_window().open()
    time.sleep(budget_s)
    cpu = window.close()
    st = b.sink.stats()
    r.threads = [procmon.thread_cpu(proc.pid)]
    finish(b, r, st, t0, cpu)
    r.exit_codes = [stop_child(proc)]
    b.sampler.sample()
    r.rss_mb = b.sampler.peak[r.name] / 2**20
    r.note = f"time budget {budget_s:g}s: rate from the {st['unique']:,} events it delivered, not all N"
    return r


def run_latency(b: Bench, rate: float, seconds: float) -> dict[str, Any]:
    """Consumer x1 on an empty topic, then a paced producer at `rate` records/s for `seconds`."""
    from bench.data import PacedProducer

    topic = new_topic(b.bootstrap, "latency", b.tag)
    b.sink.reset()
    group = f"{topic}-lat"
    proc = start_consumer(consumer_env(b.bootstrap, topic, group, b.sink, METRICS_PORT=str(free_port())), "latency")
    assert proc.proc is not None
    b.sampler.watch("latency x1", proc.proc.pid)
    proc.wait_ready(60)
    time.sleep(1.0)  # first fetch requests in flight, so the first records are not timed with the join
    producer = PacedProducer(b.bootstrap, topic, b.tpl, b.tag, 0, PARTITIONS, linger_ms=5)
    window = b.cpu_window().open()
    produced, took = producer.run(rate, seconds)
    st, _ = wait_all(b, produced, 30, [proc.proc])
    cpu = window.close()
    lat = b.sink.latency()
    code = proc.stop(signal.SIGTERM, 60)
    metrics_note = ""
    return {
        "target_rate": rate,
        "produced": produced,
        "produce_seconds": took,
        "achieved_rate": produced / took,
        "delivered_unique": st["unique"],
        "duplicates": st["duplicates"],
        "latency_ms": lat,
        "rss_mb": b.sampler.peak["latency x1"] / 2**20,
        "exit_code": code,
        "cpu": cpu,
        "note": metrics_note,
    }


def sink_capacity(b: Bench, seconds: float = 3.0) -> dict[str, float]:
    out = {}
    for per_request in (1, 500):
        b.sink.reset()
        res = subprocess.run(
            [sys.executable, "-m", "bench.sinkload", str(b.sink.port), str(per_request), str(seconds)],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        data = orjson.loads(res.stdout.strip().splitlines()[-1])
        out[f"req_s_{per_request}"] = data["requests"] / data["seconds"]
        out[f"events_s_{per_request}"] = data["events"] / data["seconds"]
    b.sink.reset()
    return out


# ---------------------------------------------------------------------------------------------- profile


def start_spy(pid: int, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not available (.cache/bench-venv)")
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        str(exe),
        "record",
        "--pid",
        str(pid),
        "--nonblocking",
        "--threads",
        "--function",
        *os.environ.get("PY_SPY_EXTRA", "").split(),
    ]
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(paths: list[Path], top: int = 15) -> dict[str, Any]:
    """Collapsed stacks → top functions by self and by inclusive share, and samples per thread role."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count_s = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_s)
            parts = stack.split(";")
            thread = next((f.split(": ", 1)[-1] for f in parts if f.startswith("thread (")), "?")
            frames = [f for f in parts if not f.startswith(("process ", "thread ("))]
            if not frames:
                continue
            total += count
            self_c[_short(frames[-1])] += count
            for f in {_short(f) for f in frames} - _ENTRY:
                incl[f] += count
            roles[_role(thread, frames)] += count
    pct = (lambda c: 100 * c / total) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "self": [(f, pct(c)) for f, c in self_c.most_common(top)],
        "inclusive": [(f, pct(c)) for f, c in incl.most_common(top)],
        "roles": [(r, pct(c)) for r, c in roles.most_common()],
    }


_ENTRY = {  # frames every sample of a thread goes through: no information in an inclusive ranking
    "_run_module_as_main (<frozen runpy>)",
    "_run_code (<frozen runpy>)",
    "<module> (consumer/__main__.py)",
    "main (consumer/cli.py)",
    "run (consumer/app.py)",
    "App.run (consumer/app.py)",
    "App._step (consumer/app.py)",
    "Thread._bootstrap (threading.py)",
    "Thread._bootstrap_inner (threading.py)",
    "Thread.run (threading.py)",
}


def _short(frame: str) -> str:
    """'_convert (consumer/app.py:180)' → '_convert (consumer/app.py)'; site-packages trimmed."""
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in loc:
            loc = loc.split(marker, 1)[1]
    return f"{name} ({loc})" if loc else name


def _role(thread: str, frames: list[str]) -> str:
    joined = ";".join(frames)
    if thread.startswith("delivery"):
        return "delivery threads: HTTP POST with httpx"
    if thread != "MainThread":
        return f"other threads ({thread.split('_')[0]})"
    if "_convert" in joined:
        return "main thread: decode + map + encode + batch (_convert)"
    if "Source.consume" in joined:
        return "main thread: Consumer.consume() (message objects; waiting releases the GIL)"
    if "_collect" in joined or "_apply" in joined:
        return "main thread: apply outcomes (ack offsets, latency histogram)"
    if "_on_stats" in joined:
        return "main thread: librdkafka statistics callback (lag gauge)"
    return "main thread: other (dispatch, commit, flow control, dead letters)"


# ---------------------------------------------------------------------------------------------- reporting


def fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def print_table(results: list[Result]) -> None:
    say("| contender | events/s | p50 e2e ms | p99 e2e ms | peak RSS MiB | every record arrived | note |")
    say("|---|---:|---:|---:|---:|---|---|")
    for r in results:
        if r.name == "ceiling":
            arrived = f"{r.unique:,}/{r.expected:,} mapped (no I/O)"
        elif r.name == "naive":
            arrived = f"n/a: {r.unique:,} in budget, {r.duplicates} dup"
        else:
            ok = "yes" if r.unique >= r.expected else "NO"
            arrived = f"{ok} ({r.unique:,}/{r.expected:,} unique, {r.duplicates} dup)"
        codes = "" if not r.exit_codes or r.exit_codes == [0] * len(r.exit_codes) else f"; exit {r.exit_codes}"
        say(
            f"| {r.name} | {fmt_rate(r.rate)} | {fmt_ms(r.p50_ms)} | {fmt_ms(r.p99_ms)} |"
            f" {'-' if r.rss_mb is None else f'{r.rss_mb:,.0f}'} | {arrived} | {r.note}{r.note_extra}{codes} |"
        )


def median_of(runs: list[Result]) -> Result:
    """The run with the median events/s; the others' rates go in its note (the machine is shared)."""
    if len(runs) == 1:
        return runs[0]
    ordered = sorted(runs, key=lambda r: r.rate or 0.0)
    mid = ordered[len(ordered) // 2]
    mid.note_extra += f"; median of {len(runs)} runs: {', '.join(fmt_rate(r.rate) for r in runs)}"
    return mid


def print_ratios(results: list[Result]) -> None:
    """The issue's comparisons: x1 against the ceiling (≥ 0.8), the naive script (≥ 20) and Quix; x2 over x1."""
    rate = {r.name: r.rate for r in results if r.rate}
    x1 = rate.get(NAMES["x1"])
    if x1 is None:
        return
    parts = [
        f"{label} {x1 / rate[NAMES[key]]:.2f}x"
        for key, label in (("ceiling", "of the ceiling"), ("naive", "over naive"), ("quix", "over Quix Streams"))
        if NAMES[key] in rate
    ]
    if NAMES["x2"] in rate:
        parts.append(f"x2 over x1 {rate[NAMES['x2']] / x1:.2f}x")
    say("")
    say(f"consumer x1: {', '.join(parts)}")


def print_cpu(results: list[Result], broker: bool) -> None:
    say("")
    say(
        "CPU while each contender delivered (first event at the sink → last; % of one core, machine has "
        f"{procmon.CORES}; 'everything else' is other work on the machine):"
    )
    say("| contender | window | wall s | contender | broker | sink | bench | everything else | machine idle |")
    say("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for label, c in (("first → last event", r.cpu), ("every process has partitions → last", r.cpu_steady)):
            if c:
                say(cpu_row(r.name, label, c, broker))


def cpu_row(name: str, label: str, c: dict[str, float], broker: bool) -> str:
    wall = c["wall"]
    mine = c.get(name, 0.0)
    known = mine + c.get("broker", 0.0) + c.get("sink", 0.0) + c.get("bench", 0.0)
    other = max(c["machine"] - known, 0.0)
    idle = max(procmon.CORES * wall - c["machine"], 0.0)

    def pc(v: float) -> str:
        return f"{100 * v / wall:.0f}%"

    return (
        f"| {name} | {label} | {wall:.1f} | {pc(mine)} | {pc(c.get('broker', 0.0)) if broker else '-'} |"
        f" {pc(c.get('sink', 0.0))} | {pc(c.get('bench', 0.0))} | {pc(other)} | {pc(idle)} |"
    )


def print_threads(results: list[Result]) -> None:
    rows = [r for r in results if r.threads]
    if not rows:
        return
    say("")
    say("CPU seconds per thread kind over each process's life (Python threads: 'python'; librdkafka's: rdk:*):")
    for r in rows:
        for i, th in enumerate(r.threads):
            py = sum(v for k, v in th.items() if not k.startswith("rdk:"))
            rdk = sum(v for k, v in th.items() if k.startswith("rdk:"))
            top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(th.items(), key=lambda kv: -kv[1])[:4])
            say(f"  {r.name}[{i}]: python threads {py:.1f}s, librdkafka threads {rdk:.1f}s ({top})")


def save(kind: str, payload: dict[str, Any]) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{kind}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str))
    return path


# ---------------------------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    n = args.records
    wanted = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(wanted) - set(CONTENDERS)
    if unknown:
        say(f"unknown contenders {sorted(unknown)}; choose from {', '.join(CONTENDERS)}")
        return 2
    say(f"machine    {machine_line()}")
    timeout_s = max(180.0, n / 1000)
    results: list[Result] = []
    payload: dict[str, Any] = {"records": n, "machine": machine_line(), "started": dt.datetime.now().isoformat()}
    with bench_env(args.bootstrap) as b:
        cap = sink_capacity(b)
        payload["sink_capacity"] = cap
        say(
            f"sink       capacity from one pipelining client: {cap['req_s_1']:,.0f} req/s with 1-event bodies,"
            f" {cap['events_s_500']:,.0f} events/s ({cap['req_s_500']:,.0f} req/s) with 500-event bodies"
        )
        if "ceiling" in wanted:
            say("ceiling    decode + map + encode in memory ...")
            results.append(median_of([run_ceiling(b, n) for _ in range(args.repeat)]))
            say(f"           {fmt_rate(results[-1].rate)} events/s{results[-1].note_extra}")
        needs_topic = [c for c in wanted if c != "ceiling"] or (not args.no_latency)
        topic = ""
        if needs_topic:
            topic, took = b.topic_with_backlog("backlog", n)
            payload["produce"] = {"records": n, "seconds": took}
            say(f"produce    {n:,} records to {topic} ({PARTITIONS} partitions) in {took:.1f}s ({n / took:,.0f}/s)")
        for key in wanted:
            if key == "ceiling":
                continue
            say(f"{NAMES[key]:<10} running ...")
            if key == "x1":
                r = median_of(
                    [run_consumer(b, topic, n, 1, timeout_s, extra_env=args.consumer_env) for _ in range(args.repeat)]
                )
            elif key == "x2":
                r = run_consumer(b, topic, n, 2, timeout_s, extra_env=args.consumer_env)
            elif key == "quix":
                r = run_quix(b, topic, n, timeout_s, args.quix_commit_interval)
            else:
                r = run_naive(b, topic, n, args.naive_seconds)
            results.append(r)
            rss = r.rss_mb or 0
            say(f"           {fmt_rate(r.rate)} events/s, {r.unique:,} unique events, peak RSS {rss:,.0f} MiB")
        latency: dict[str, Any] | None = None
        if not args.no_latency:
            x1 = next((r for r in results if r.name == NAMES["x1"] and r.rate), None)
            rate = args.latency_rate or (x1.rate / 2 if x1 and x1.rate else None)
            if rate is None:
                say("latency    skipped: needs the consumer x1 rate (run x1 or pass --latency-rate)")
            else:
                say(f"latency    consumer x1 at {rate:,.0f} records/s for {args.latency_seconds:g}s ...")
                latency = run_latency(b, rate, args.latency_seconds)
        payload["results"] = [asdict(r) for r in results]
        payload["latency"] = latency
        say("")
        say(f"## {n:,} records, raw Avro, {PARTITIONS} partitions ({dt.date.today()})")
        say("")
        print_table(results)
        print_ratios(results)
        print_cpu(results, b.broker_pid is not None)
        print_threads(results)
        if latency:
            lat = latency["latency_ms"]
            target = 200 + 250
            say("")
            say(
                f"latency at 50% of peak: {latency['achieved_rate']:,.0f} records/s"
                f" for {latency['produce_seconds']:.0f}s,"
                f" {latency['delivered_unique']:,}/{latency['produced']:,} delivered;"
                f" p50 {lat.get('p50', 0):,.0f} ms, p90 {lat.get('p90', 0):,.0f} ms, p99 {lat.get('p99', 0):,.0f} ms,"
                f" max {lat.get('max', 0):,.0f} ms (target p99 <= BATCH_LINGER_MS + 250 = {target} ms:"
                f" {'met' if lat.get('p99', 1e9) <= target else 'NOT met'}); peak RSS {latency['rss_mb']:,.0f} MiB"
            )
    path = save("run", payload)
    say(f"\nresults    {path.relative_to(ROOT)}")
    return 0


def cmd_backpressure(args: argparse.Namespace) -> int:
    say(f"machine    {machine_line()}")
    runs = []
    with bench_env(args.bootstrap) as b:
        for n in args.records:
            runs.append(backpressure_once(b, n, args))
    say("")
    say(f"## backpressure: API answers one request at a time, {args.delay_ms} ms each ({dt.date.today()})")
    say("")
    say(
        "| backlog | produce s | peak RSS MiB | paused>0 seen | lag first → last (max) | delivered | "
        "SIGTERM → exit s | exit | committed ⊆ delivered |"
    )
    say("|---:|---:|---:|---|---|---:|---:|---:|---|")
    for r in runs:
        say(
            f"| {r['records']:,} | {r['produce_seconds']:.1f} | {r['peak_rss_mb']:,.0f} | {r['paused_seen']} |"
            f" {r['lag_first']:,.0f} → {r['lag_last']:,.0f} ({r['lag_max']:,.0f}) | {r['delivered']:,} |"
            f" {r['exit_seconds']:.1f} (limit {r['shutdown_timeout_s']:g}) | {r['exit_code']} |"
            f" {'yes' if r['committed_ok'] else 'NO'} ({r['committed_total']:,} committed,"
            f" {r['missing_below_commit']} missing below) |"
        )
    path = save("backpressure", {"machine": machine_line(), "runs": runs})
    say(f"\nresults    {path.relative_to(ROOT)}")
    return 0 if all(r["ok"] for r in runs) else 1


def backpressure_once(b: Bench, n: int, args: argparse.Namespace) -> dict[str, Any]:
    from bench.data import PacedProducer

    say(f"backlog    producing {n:,} records ...")
    topic, took = b.topic_with_backlog(f"bp{n}", n)
    say(f"           {took:.1f}s ({n / took:,.0f} records/s: linger.ms=50, batch.size 1 MB, no compression)")
    b.sink.reset(serialize=True, delay_ms=args.delay_ms)
    group = f"{topic}-bp"
    shutdown_timeout = 25.0
    name = f"backpressure {n}"
    proc = start_consumer(
        # Statistics every 0.5 s: the lag gauge then moves between the timeline's samples.
        consumer_env(
            b.bootstrap, topic, group, b.sink, METRICS_PORT=str(free_port()), KAFKA_CFG_STATISTICS_INTERVAL_MS="500"
        ),
        f"backpressure-{n}",
    )
    assert proc.proc is not None
    b.sampler.watch(name, proc.proc.pid)
    producer = PacedProducer(b.bootstrap, topic, b.tpl, b.tag, n, PARTITIONS, linger_ms=50)
    stop = threading.Event()
    produced: list[int] = [0]

    def feed() -> None:
        if args.produce_rate > 0:
            produced[0] = producer.run(args.produce_rate, args.seconds, stop.is_set)[0]

    feeder = threading.Thread(target=feed, daemon=True)
    started = time.monotonic()
    feeder.start()
    timeline = []
    say("           t s | RSS MiB | buffered | paused | lag sum | delivered (sink)")
    next_print = 0.0
    while (elapsed := time.monotonic() - started) < args.seconds:
        time.sleep(0.5)
        if proc.proc.poll() is not None:
            say(f"           consumer exited early with {proc.proc.returncode}")
            break
        m = scrape(proc)
        if m is None:
            continue
        row = {
            "t": round(elapsed, 1),
            "rss_mb": b.sampler.current.get(name, 0) / 2**20,
            "buffered": m.get("group_enriched_buffered_events", 0),
            "paused": m.get("group_enriched_paused_partitions", 0),
            "lag": sum(v for k, v in m.items() if k.startswith("group_enriched_consumer_lag{")),
            "lag_reported": any(k.startswith("group_enriched_consumer_lag{") for k in m),
            "delivered": b.sink.stats()["events"],
        }
        timeline.append(row)
        if elapsed >= next_print:
            next_print += 5
            say(
                f"           {row['t']:5.1f} | {row['rss_mb']:7.0f} | {row['buffered']:8.0f} | {row['paused']:6.0f} |"
                f" {row['lag']:7.0f} | {row['delivered']:,}"
            )
    stop.set()
    feeder.join(70)
    sent = time.monotonic()
    code = proc.stop(signal.SIGTERM, 120)
    exit_s = time.monotonic() - sent
    b.sampler.sample()
    say(f"           SIGTERM → exit in {exit_s:.1f}s, exit code {code}")
    committed = kafkautil.committed_offsets(b.bootstrap, group, topic, PARTITIONS)
    delivered = {uid_index(u) for u in b.sink.uids() if u.startswith(b.tag.encode())}
    missing = 0
    first_missing = None
    for p, c in committed.items():
        for o in range(max(c, 0)):
            if o * PARTITIONS + p not in delivered:
                missing += 1
                first_missing = first_missing or (p, o)
    committed_total = sum(max(c, 0) for c in committed.values())
    st = b.sink.stats()
    lags = [r["lag"] for r in timeline if r["lag_reported"]]
    paused_seen = any(r["paused"] > 0 for r in timeline)
    result = {
        "records": n,
        "produce_seconds": took,
        "produced_during": produced[0],
        "produce_rate": args.produce_rate,
        "seconds": args.seconds,
        "peak_rss_mb": b.sampler.peak[name] / 2**20,
        "paused_seen": paused_seen,
        "lag_first": lags[0] if lags else float("nan"),
        "lag_last": lags[-1] if lags else float("nan"),
        "lag_max": max(lags) if lags else float("nan"),
        "delivered": st["unique"],
        "duplicates": st["duplicates"],
        "requests": st["requests"],
        "exit_seconds": exit_s,
        "shutdown_timeout_s": shutdown_timeout,
        "exit_code": code,
        "committed": committed,
        "committed_total": committed_total,
        "missing_below_commit": missing,
        "first_missing": first_missing,
        "delivered_not_committed": st["unique"] - committed_total,
        "committed_ok": missing == 0,
        "timeline": timeline,
    }
    result["ok"] = (
        missing == 0 and code == 0 and exit_s <= shutdown_timeout and paused_seen and bool(lags) and lags[-1] > lags[0]
    )
    say(
        f"           committed {committed_total:,}, delivered {st['unique']:,} unique ({st['duplicates']} dup),"
        f" {missing} committed-but-undelivered"
    )
    return result


def scrape(proc: ConsumerProcess) -> dict[str, float] | None:
    try:
        return proc.metrics()
    except (AssertionError, OSError, ValueError):
        return None


def cmd_profile(args: argparse.Namespace) -> int:
    if py_spy() is None:
        say("py-spy is not available")
        return 1
    n = args.records
    say(f"machine    {machine_line()}")
    out: dict[str, Any] = {"records": n, "machine": machine_line()}
    with bench_env(args.bootstrap) as b:
        topic, took = b.topic_with_backlog("profile", n)
        say(f"produce    {n:,} records in {took:.1f}s")
        results = []
        for k in args.processes:
            path = CACHE / "profiles" / f"x{k}.txt"
            for old in path.parent.glob(f"x{k}-*.txt"):
                old.unlink()
            say(f"profile    consumer x{k} under py-spy (--nonblocking, {k} process(es)) ...")
            r = run_consumer(b, topic, n, k, max(180.0, n / 1000), profile=path, extra_env=args.consumer_env)
            results.append(r)
            summary = summarize_profile(sorted(path.parent.glob(f"x{k}-*.txt")))
            out[f"x{k}"] = {"result": asdict(r), "profile": summary}
            say(f"\n### consumer x{k}: {fmt_rate(r.rate)} events/s under py-spy, {summary['samples']:,} samples")
            say("by thread role:")
            for role, pct in summary["roles"]:
                say(f"  {pct:5.1f}%  {role}")
            say("top functions, self time (where the samples were):")
            for f, pct in summary["self"]:
                say(f"  {pct:5.1f}%  {f}")
            say("top functions, inclusive:")
            for f, pct in summary["inclusive"]:
                say(f"  {pct:5.1f}%  {f}")
        say("")
        print_cpu(results, b.broker_pid is not None)
        print_threads(results)
    path = save("profile", out)
    say(f"\nresults    {path.relative_to(ROOT)}; raw stacks in {(CACHE / 'profiles').relative_to(ROOT)}/")
    return 0


def env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--consumer-env",
        action="append",
        type=env_pair,
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for consumer x1/x2 (repeatable), e.g. KAFKA_CFG_HEARTBEAT_INTERVAL_MS=500",
    )
    common.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        help="use this broker (default: $KAFKA_BOOTSTRAP_SERVERS, else start one)",
    )

    run = sub.add_parser("run", parents=[common], help="the contenders table and the latency phase (default)")
    run.add_argument("--records", type=int, default=200_000)
    run.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma list of {', '.join(CONTENDERS)}")
    run.add_argument(
        "--repeat", type=int, default=3, help="runs of the ceiling and of consumer x1; the median is reported"
    )
    run.add_argument("--naive-seconds", type=float, default=20.0, help="time budget of the naive contender")
    run.add_argument(
        "--quix-commit-interval",
        type=float,
        default=0.2,
        help="Quix commit_interval, s (its sink flushes only at commits; ours lingers 200 ms)",
    )
    run.add_argument("--latency-seconds", type=float, default=20.0)
    run.add_argument("--latency-rate", type=float, help="records/s for the latency phase (default: 50%% of x1)")
    run.add_argument("--no-latency", action="store_true", help="skip the latency phase")
    run.set_defaults(func=cmd_run)

    bp = sub.add_parser("backpressure", parents=[common], help="slow serial API: bounded memory, pause, drain")
    bp.add_argument("--records", type=int, nargs="+", default=[1_000_000, 250_000], help="backlog size(s)")
    bp.add_argument("--seconds", type=float, default=60.0)
    bp.add_argument("--delay-ms", type=int, default=100, help="the sink's time per request (one at a time)")
    bp.add_argument(
        "--produce-rate",
        type=float,
        default=8000.0,
        help="records/s produced meanwhile, above the sink's ~5,000/s, so lag grows (0: none)",
    )
    bp.set_defaults(func=cmd_backpressure)

    pr = sub.add_parser("profile", parents=[common], help="py-spy profiles of consumer x1 and x2")
    pr.add_argument("--records", type=int, default=200_000)
    pr.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    pr.set_defaults(func=cmd_profile)

    args = parser.parse_args(argv)
    args.consumer_env = dict(args.consumer_env)
    return int(args.func(args))
