"""A fleet on one machine: N taskiq worker processes and one tracker against the fake.

The README's "Running a fleet" as a user runs it: a ``redis-server`` with AOF
(``appendfsync always``), the SDK's ``FakePrismServer`` in another process (each generation
takes a seeded random number of seconds in a range), ``taskiq worker
benchmarks._fleet_app:broker`` processes (``PrismStreamBroker`` and ``PrismTasks`` with their
production defaults) and one ``prism-async --json track`` process at a steady
``--poll-interval``. This process enqueues one submit task per key (distinct keys and prompts,
a few enqueuers at once, as a web app would), then waits until every video is on disk.

Reported:

* **submissions/s**: keys accepted per second from the first enqueue to the last ``accepted``
  row of the ledger (``updated_at``, written by the worker right after the POST's answer);
* **status requests per generation**: GETs of ``/api/generations/{id}`` counted by the fake,
  divided by the generations; the tracker's share is that minus one per download (a download
  task reads the status once, for the video's URL);
* **detection lag**: the time the tracker printed ``enqueued`` for a generation (its download
  task is on the stream; stamped by this process as the line arrives, by a thread blocked on
  the tracker's unbuffered pipe) minus the time the generation finished on the fake (its
  ``finished_at()`` on the fake's clock, turned into wall-clock time in the fake's process);
  p50/p99, and the same to the video's file on disk (``st_mtime``);
* **tracker memory per pending generation**: the tracker's peak RSS (``VmHWM``) minus its
  RSS once started and idle, divided by the most generations it had pending at once (waits
  started minus waits ended, from its events);
* **duplicate POSTs** (create POSTs per prompt, from the fake's request log: must be 0) and
  downloads (videos on disk, video GETs per generation: exactly one each);
* the **projected capacity of one tracker** against 1M generations a day (see
  :func:`projection`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import IO, Any

import aiohttp
import attrs
from redis.asyncio import Redis

from prism_async import PollPolicy
from prism_async.integrations.taskiq import PrismStreamBroker, PrismTasks
from prism_async.ledger import RedisLedger
from tests.redis_server import RedisServer

from ._server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "prism_sk_bench"
MODEL = "veo-3.1"
SIZES: dict[str, tuple[int, tuple[float, float]]] = {
    "full": (5_000, (20.0, 140.0)),
    "quick": (500, (5.0, 25.0)),
}
"""Generations, and the range of their seeded random durations on the fake (seconds): the
full run's completions spread over about two and a half minutes, the quick one's over 30 s."""
POLL_INTERVAL = 5.0
"""The tracker's steady ``--poll-interval`` (the default policy's first interval)."""
WORKERS = 2
ENQUEUERS = 8
VIDEO_BYTES = 0
"""The fake's bare clip (about 4.5 KB): the downloads are not what is measured."""
PREFIX = "bench:"
QUEUE = "bench"
PER_DAY = 1_000_000
TYPICAL_SECONDS = 180.0
"""A typical generation for the projection: 3 minutes."""
MAX_PENDING = 10_000
"""``prism-async track --max-pending``'s default."""
CORE_BUDGET = 0.5
"""One tracker suffices if the projected load takes at most this share of one core..."""
MEMORY_BUDGET_MB = 512.0
"""... and its pending waits at most this much memory."""
STOP_GRACE = 15.0
"""Seconds the fleet's processes get to exit after SIGTERM (the broker's ``shutdown_timeout``
of 10 s, plus taskiq's process manager's 1 s loop) before the SIGKILL."""
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# -- processes -----------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 is index 0)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of the live processes of a process group (a taskiq manager and its worker)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[2]) == pgid:
                total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def peak_rss(pid: int) -> int:
    """The most a process has ever had resident (``VmHWM``), in bytes."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


@attrs.define
class Processes:
    """The fleet's processes, each in a process group of its own, output to a log file."""

    logs: Path
    env: dict[str, str]
    started: list[subprocess.Popen[bytes]] = attrs.field(factory=list)
    names: dict[int, str] = attrs.field(factory=dict)

    def spawn(
        self, name: str, command: list[str], *, pipe: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start ``command``; with ``pipe``, its stdout is a pipe (stderr still goes to the log)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE if pipe else log,
                stderr=log if pipe else subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.started.append(process)
        self.names[process.pid] = name
        return process

    def check(self) -> None:
        """Fail (with the logs) if a process of the fleet has exited."""
        for process in self.started:
            if process.poll() is not None:
                raise RuntimeError(f"a fleet process exited ({process.args!r}):\n{self.output()}")

    def output(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in self.logs.glob("*.log"))

    def stop(self, grace: float = STOP_GRACE) -> dict[str, Any]:
        """SIGTERM each process group started here, wait up to ``grace`` s for each group to
        be gone, then SIGKILL what is left (our ids only); how long it took, what was killed.

        ``PrismStreamBroker`` workers stop within the broker's ``shutdown_timeout`` (10 s;
        nothing runs by then), and taskiq's process manager exits once its worker has; the
        SIGKILL is a fallback. (taskiq 0.13's workers on a plain Redis stream never stopped:
        the benchmark used to SIGKILL them 3 s after the SIGTERM.)
        """
        begun = time.monotonic()
        for process in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = begun + grace
        killed = []
        for process in self.started:
            while _group_alive(process) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _group_alive(process):
                killed.append(self.names[process.pid])
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
            if process.stdout is not None:
                process.stdout.close()
        return {"seconds": round(time.monotonic() - begun, 2), "killed": killed}


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    """True while the process, or another of its process group, runs (a zombie is reaped)."""
    process.poll()
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return any(
        (fields := _stat(int(entry))) and int(fields[2]) == process.pid and fields[0] != "Z"
        for entry in os.listdir("/proc")
        if entry.isdigit()
    )


class TrackerEvents:
    """The tracker's ``--json`` lines, each stamped with ``time.time()`` as it arrives.

    A thread blocks on the pipe (the tracker flushes every line), so a line is stamped within
    a thread switch of being written, whatever this process's event loop is doing.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.enqueued: dict[str, float] = {}
        self.enqueues = 0
        self.kinds: Counter[str] = Counter()
        self.pending = 0
        self.max_pending = 0
        self.stopped: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            stamp = time.time()
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = str(event.get("event"))
            self.kinds[kind] += 1
            if kind == "tracking":
                self.pending += 1
                self.max_pending = max(self.max_pending, self.pending)
            elif kind in ("enqueued", "failed", "lost"):
                self.pending = max(0, self.pending - 1)
                if kind == "enqueued":
                    self.enqueues += 1
                    self.enqueued.setdefault(str(event["generation_id"]), stamp)
            elif kind == "stopped":
                self.stopped = event

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


async def _until(
    check: Callable[[], Awaitable[bool]],
    processes: Processes,
    *,
    timeout: float,
    what: str,
    every: float = 0.25,
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        processes.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        response.raise_for_status()
        return await response.json()


# -- the run -------------------------------------------------------------------------------


def prompt_of(key: str) -> str:
    """The distinct prompt of one key: duplicate POSTs are counted per prompt."""
    return f"fleet benchmark clip <{key}>: a lighthouse at dusk, waves breaking below"


@attrs.define
class Sample:
    """The tracker's memory while the run goes on (sampled every 100 ms)."""

    rss_at_max_pending: int = 0
    max_pending_seen: int = 0


async def _sample(pid: int, events: TrackerEvents, sample: Sample) -> None:
    while True:
        pending = events.pending
        with contextlib.suppress(OSError):
            if pending >= sample.max_pending_seen:
                sample.max_pending_seen = pending
                sample.rss_at_max_pending = rss(pid)
        await asyncio.sleep(0.1)


async def _enqueue(tasks: PrismTasks, keys: list[str]) -> None:
    """One submit task per key, ``ENQUEUERS`` at once."""
    remaining = iter(keys)

    async def enqueuer() -> None:
        for key in remaining:  # shared by the enqueuers
            await tasks.submit.kiq(key, {"prompt": prompt_of(key), "model_name": MODEL})

    await asyncio.gather(*(enqueuer() for _ in range(ENQUEUERS)))


@attrs.define
class Running:
    """A fleet while it runs, for a disruption (``fleet_outage.py``) run beside it."""

    redis: Redis
    fake: ServerProcess
    processes: Processes
    downloads: Path
    n: int
    worker_groups: list[int]
    tracker: subprocess.Popen[bytes]
    enqueued: asyncio.Event = attrs.field(factory=asyncio.Event)
    downloaded: asyncio.Event = attrs.field(factory=asyncio.Event)


Disruption = Callable[[Running], Coroutine[Any, Any, dict[str, Any]]]
"""Started as the enqueueing starts; awaited once every video is on disk (``downloaded``)."""


async def _fleet(
    redis_url: str,
    fake: ServerProcess,
    folder: Path,
    n: int,
    seconds: tuple[float, float],
    poll: float,
    workers: int,
    *,
    disrupt: Disruption | None = None,
    worker_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start the fleet, run ``n`` submissions through it; what was seen, raw."""
    downloads = folder / "videos"
    env = {
        **os.environ,
        **(worker_env or {}),
        "FLEET_REDIS": redis_url,
        "FLEET_QUEUE": QUEUE,
        "FLEET_PREFIX": PREFIX,
        "FLEET_DOWNLOADS": str(downloads),
        "PRISM_API_KEY": API_KEY,
        "PRISM_BASE_URL": fake.base_url,
        "PYTHONUNBUFFERED": "1",
    }
    processes = Processes(folder / "logs", env)
    redis = Redis.from_url(redis_url, decode_responses=True)
    ledger = RedisLedger(redis_url, prefix=PREFIX)
    broker = PrismStreamBroker(redis_url, queue_name=QUEUE)
    tasks = PrismTasks(broker, ledger_url=redis_url, ledger_prefix=PREFIX)
    python = sys.executable
    disruption: asyncio.Task[dict[str, Any]] | None = None
    try:
        for index in range(workers):
            processes.spawn(f"worker-{index}", [
                python, "-m", "taskiq", "worker", "benchmarks._fleet_app:broker",
                "--workers", "1", "--ack-type", "when_executed", "--log-level", "WARNING",
                "--shutdown-timeout", "2", "--wait-tasks-timeout", "2",
            ])  # fmt: skip
        tracker = processes.spawn("tracker", [
            python, "-m", "prism_async", "--json", "track",
            "--ledger", redis_url, "--ledger-prefix", PREFIX,
            "--broker", redis_url, "--queue", QUEUE, "--poll-interval", f"{poll:g}",
        ], pipe=True)  # fmt: skip
        assert tracker.stdout is not None
        events = TrackerEvents(tracker.stdout)

        async def up() -> bool:
            started = await redis.scard(f"{PREFIX}bench:workers")
            checkpoint = await redis.keys(f"{QUEUE}:tracker:*")  # saved after its first scan
            return int(started) >= workers and bool(checkpoint)

        await _until(up, processes, timeout=60, what="the workers and the tracker to start")
        await asyncio.sleep(1.0)  # the tracker idle, its client made
        redis_pid = int((await redis.info("server"))["process_id"])
        worker_groups = [p.pid for p in processes.started if p is not tracker]
        pids = {"tracker": tracker.pid, "fake": fake.pid or 0, "redis": redis_pid}

        def cpu() -> dict[str, float]:
            found = {name: cpu_seconds(pid) for name, pid in pids.items()}
            found["workers"] = sum(group_cpu_seconds(pgid) for pgid in worker_groups)
            return found

        baseline_rss, cpu_before = rss(tracker.pid), cpu()
        sample = Sample()
        sampler = asyncio.create_task(_sample(tracker.pid, events, sample))
        await broker.startup()
        keys = [f"clip-{index:05d}" for index in range(n)]
        running = Running(redis, fake, processes, downloads, n, worker_groups, tracker)
        if disrupt is not None:
            disruption = asyncio.create_task(disrupt(running))
        started = time.time()
        await _enqueue(tasks, keys)
        enqueued = time.time()
        running.enqueued.set()

        async def created() -> bool:
            progress = await _get_json(f"{fake.stats_root}/progress")
            return int(progress["generations"]) >= n

        await _until(created, processes, timeout=600, what="every submission to reach the fake")
        cpu_submitted = cpu()

        def on_disk() -> int:
            return sum(1 for name in os.listdir(downloads) if name.endswith(".mp4"))

        async def downloaded() -> bool:
            return downloads.is_dir() and await asyncio.to_thread(on_disk) >= n

        await _until(
            downloaded, processes, timeout=seconds[1] + 600, what="every video to be downloaded"
        )
        finished = time.time()
        cpu_after, peak = cpu(), peak_rss(tracker.pid)
        running.downloaded.set()
        disrupted = await disruption if disruption is not None else {}
        tracker_alive = tracker.poll() is None
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        tracker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(tracker.wait, 30)
        events.join(10)
        await asyncio.sleep(0.5)  # the last downloads' ledger records
        report = await _get_json(f"{fake.stats_root}/report")
        rows = await ledger.get_many(keys)
        files = {
            path.name.removesuffix(".mp4"): path.stat().st_mtime for path in downloads.glob("*.mp4")
        }
    except BaseException:
        print(processes.output(), file=sys.stderr)
        raise
    finally:
        if disruption is not None and not disruption.done():
            disruption.cancel()
        stop = processes.stop()
        await broker.shutdown()
        await ledger.aclose()
        await redis.aclose()
    return {
        "keys": keys,
        "started": started,
        "enqueued": enqueued,
        "finished": finished,
        "events": events,
        "baseline_rss": baseline_rss,
        "peak_rss": peak,
        "sample": sample,
        "cpu": {name: cpu_after[name] - cpu_before[name] for name in cpu_after},
        "cpu_submit_phase": {name: cpu_submitted[name] - cpu_before[name] for name in cpu_after},
        "report": report,
        "accepted_at": {key: row.updated_at.timestamp() for key, row in rows.items() if row.done},
        "states": Counter(row.state for row in rows.values()),
        "files": files,
        "disruption": disrupted,
        "tracker_alive": tracker_alive,
        "stop": stop,
    }


def summarize(
    seen: dict[str, Any], n: int, seconds: tuple[float, float], poll: float, workers: int
) -> dict[str, Any]:
    """The figures of one run (``seen`` is what :func:`_fleet` returned)."""
    report: dict[str, Any] = seen["report"]
    events: TrackerEvents = seen["events"]
    keys: list[str] = seen["keys"]
    prompts = {prompt_of(key): key for key in keys}
    posts: dict[str, int] = report["posts_by_prompt"]
    generations = {
        g[0]: {"prompt": g[1], "finished": g[3], "status": g[4]} for g in report["generations"]
    }
    # Submissions.
    accepted: dict[str, float] = seen["accepted_at"]
    last_accepted = max(accepted.values(), default=seen["started"])
    submit_s = last_accepted - seen["started"]
    # Status requests: each download task reads the status once (for the video's URL).
    video_gets: dict[str, int] = report["video_gets_by_generation"]
    downloads = sum(video_gets.values())
    status_gets: int = report["status_gets"]
    tracker_gets = status_gets - downloads
    # Detection lag: the tracker's "enqueued" line minus the finish on the fake.
    lags = [
        events.enqueued[gid] - g["finished"]
        for gid, g in generations.items()
        if gid in events.enqueued
    ]
    files: dict[str, float] = seen["files"]
    disk_lags = [files[gid] - g["finished"] for gid, g in generations.items() if gid in files]
    finishes = [g["finished"] for g in generations.values()]
    # Memory and CPU of the tracker.
    max_pending = max(events.max_pending, 1)
    growth = seen["peak_rss"] - seen["baseline_rss"]
    kb_per_pending = growth / max_pending / 1024
    cpu: dict[str, float] = seen["cpu"]
    tracker_cpu = max(cpu["tracker"], 1e-9)
    requests_per_cpu_s = tracker_gets / tracker_cpu
    cpu_ms_per_generation = tracker_cpu / n * 1000
    duplicates = sum(count - 1 for count in posts.values() if count > 1)
    unknown_posts = sum(count for prompt, count in posts.items() if prompt not in prompts)
    row: dict[str, Any] = {
        "case": "fleet",
        "generations": n,
        "workers": workers,
        "generation_seconds": list(seconds),
        "poll_interval_s": poll,
        "wall_s": round(seen["finished"] - seen["started"], 1),
        "completions_spread_s": round(max(finishes) - min(finishes), 1) if finishes else 0.0,
        "enqueue_s": round(seen["enqueued"] - seen["started"], 2),
        "submit_phase_s": round(submit_s, 2),
        "submissions_per_s": round(len(accepted) / submit_s, 1) if submit_s > 0 else 0.0,
        "accepted": len(accepted),
        "states": dict(seen["states"]),
        "generations_on_fake": len(generations),
        "status_requests_per_generation": round(status_gets / n, 2),
        "tracker_status_requests_per_generation": round(tracker_gets / n, 2),
        "lag_p50_s": round(percentile(lags, 0.50), 3),
        "lag_p99_s": round(percentile(lags, 0.99), 3),
        "lag_max_s": round(max(lags, default=0.0), 3),
        "lag_p99_over_poll_interval": round(percentile(lags, 0.99) / poll, 2),
        "detected": len(lags),
        "on_disk_lag_p50_s": round(percentile(disk_lags, 0.50), 3),
        "on_disk_lag_p99_s": round(percentile(disk_lags, 0.99), 3),
        "tracker_baseline_rss_mb": round(seen["baseline_rss"] / 2**20, 1),
        "tracker_peak_rss_mb": round(seen["peak_rss"] / 2**20, 1),
        "tracker_max_pending": events.max_pending,
        "tracker_kb_per_pending": round(kb_per_pending, 2),
        "tracker_kb_per_pending_sampled": round(
            (seen["sample"].rss_at_max_pending - seen["baseline_rss"]) / max_pending / 1024, 2
        ),
        "tracker_cpu_s": round(cpu["tracker"], 2),
        "tracker_status_requests_per_cpu_s": round(requests_per_cpu_s),
        "tracker_cpu_ms_per_generation": round(cpu_ms_per_generation, 3),
        "cpu_s": {name: round(value, 1) for name, value in cpu.items()},
        "cpu_s_until_submitted": {
            name: round(value, 1) for name, value in seen["cpu_submit_phase"].items()
        },
        "worker_cpu_ms_per_submission": round(seen["cpu_submit_phase"]["workers"] / n * 1000, 2),
        "tracker_events": dict(events.kinds),
        "duplicate_enqueues": events.enqueues - len(events.enqueued),
        "duplicate_posts": duplicates,
        "keys_without_post": sum(1 for prompt in prompts if prompt not in posts),
        "posts_of_unknown_prompts": unknown_posts,
        "downloaded": len(files),
        "duplicate_downloads": sum(count - 1 for count in video_gets.values() if count > 1),
        "other_requests": report["other_requests"],
        "stop_s": seen["stop"]["seconds"],
        "killed_at_stop": seen["stop"]["killed"],
    }
    row["projection"] = projection(row)
    row["target"] = "0 duplicate POSTs, every generation downloaded exactly once"
    row["met"] = (
        duplicates == 0
        and row["keys_without_post"] == 0
        and len(files) == n == len(generations)
        and row["duplicate_downloads"] == 0
    )
    return row


def requests_per_generation(policy: PollPolicy, seconds: float) -> int:
    """Status requests a wait makes on a generation of ``seconds`` (jitter aside)."""
    policy = attrs.evolve(policy, jitter=0.0)
    at, made = policy.initial_delay, 1
    while at < seconds:
        at += policy.delay(made)
        made += 1
    return made


def projection(row: dict[str, Any]) -> dict[str, Any]:
    """One tracker against 1M generations a day, from this run's measured costs.

    The load: ``PER_DAY / 86,400`` generations arriving per second, each taking
    ``TYPICAL_SECONDS``, so ``rate x TYPICAL_SECONDS`` in flight at once; status requests per
    generation under the tracker's default policy (5 s growing by 1.5x to 30 s) and under this
    run's steady cadence. The capacity: the tracker's memory per pending generation (in flight
    it can hold in ``MEMORY_BUDGET_MB``; ``--max-pending`` caps it at 10,000 by default), and
    its status requests per CPU second (everything it does counted: reading the ledger's feed,
    starting waits, enqueueing downloads), so one core makes that many per second. The cores a
    load needs are estimated from the CPU it spent per generation, scaled up when the load
    makes more status requests per generation than this run did (never down): an upper bound.
    """
    rate = PER_DAY / 86_400
    in_flight = rate * TYPICAL_SECONDS
    poll = row["poll_interval_s"]
    steady = PollPolicy(initial_delay=poll, interval=poll, max_interval=poll)
    per_generation = {
        "default policy": requests_per_generation(PollPolicy(), TYPICAL_SECONDS),
        f"steady {poll:g} s": requests_per_generation(steady, TYPICAL_SECONDS),
    }
    measured = max(row["tracker_status_requests_per_generation"], 1e-9)
    cpu_ms = row["tracker_cpu_ms_per_generation"]
    kb = max(row["tracker_kb_per_pending"], 1e-9)
    per_cpu_s = row["tracker_status_requests_per_cpu_s"]
    loads = {}
    for name, requests in per_generation.items():
        cores = rate * cpu_ms / 1000 * max(1.0, requests / measured)
        loads[name] = {
            "status_requests_per_generation": requests,
            "status_requests_per_s": round(rate * requests, 1),
            "tracker_cores": round(cores, 3),
        }
    memory_mb = in_flight * kb / 1024
    default_cores = loads["default policy"]["tracker_cores"]
    return {
        "generations_per_day": PER_DAY,
        "arriving_per_s": round(rate, 2),
        "typical_generation_s": TYPICAL_SECONDS,
        "in_flight": round(in_flight),
        "loads": loads,
        "tracker_memory_mb_in_flight": round(memory_mb, 1),
        "tracker_memory_mb_at_max_pending": round(MAX_PENDING * kb / 1024, 1),
        "in_flight_per_gib": round(2**20 / kb),
        "status_requests_per_s_one_core": per_cpu_s,
        "in_flight_one_core_default_policy": round(per_cpu_s * PollPolicy().max_interval),
        "in_flight_one_core_steady": round(per_cpu_s * poll),
        "one_tracker_suffices": bool(
            in_flight <= MAX_PENDING
            and memory_mb <= MEMORY_BUDGET_MB
            and default_cores <= CORE_BUDGET
        ),
        "rule": (
            f"in flight <= --max-pending ({MAX_PENDING}), memory <= {MEMORY_BUDGET_MB:g} MB, "
            f"<= {CORE_BUDGET:g} of a core (default policy)"
        ),
    }


def run_one(
    n: int, seconds: tuple[float, float], poll: float, workers: int, seed: int
) -> dict[str, Any]:
    """One fleet run in this process (it spawns the others), in a temporary folder."""
    redis_server = RedisServer()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="prism-fleet-bench-") as tmp,
            ServerProcess("fleet", seconds[0], seconds[1], seed, VIDEO_BYTES) as fake,
        ):
            asyncio.run(fake.ready())
            seen = asyncio.run(_fleet(redis_server.url, fake, Path(tmp), n, seconds, poll, workers))
    finally:
        redis_server.stop()
    return summarize(seen, n, seconds, poll, workers)


def run(
    quick: bool = False,
    *,
    size: int | None = None,
    seconds: tuple[float, float] | None = None,
    poll: float = POLL_INTERVAL,
    workers: int = WORKERS,
    seed: int = 1,
) -> list[dict[str, Any]]:
    """The fleet case (one run; its figures are judged at the full size only)."""
    full_n, full_seconds = SIZES["full"]
    default_n, default_seconds = SIZES["quick" if quick else "full"]
    n, seconds = size or default_n, seconds or default_seconds
    row = run_one(n, seconds, poll, workers, seed)
    row["judged"] = n >= full_n and seconds == full_seconds
    return [row]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="500 generations, about 40 s")
    parser.add_argument("--n", type=int, help="generations")
    parser.add_argument("--workers", type=int, default=WORKERS, help="worker processes")
    parser.add_argument("--poll", type=float, default=POLL_INTERVAL, help="tracker cadence (s)")
    args = parser.parse_args(argv)
    for row in run(args.quick, size=args.n, poll=args.poll, workers=args.workers):
        print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
