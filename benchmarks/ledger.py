"""The cost of the ledger: what a ``SQLiteLedger`` adds to submissions and to a whole run.

1. **Submit path.** ``generations.create`` with ``key=`` on a client with a ``SQLiteLedger``
   (a ``sending`` row committed before the POST, ``accepted`` after) against the same create
   on a client without one, at concurrency 1 (milliseconds added per submission) and 8
   (POSTs per second), in alternating rounds; every round has fresh keys and a fresh ledger
   file. Target: the ledger adds <= 2 ms per submission (concurrency 1, median).
2. **A run.** ``prism.run`` of N generations (submit, wait, download, each step recorded)
   against the same work without a ledger (a plain pipeline: at most 8 creates in flight,
   ``wait_for_generations``, download each video), each in a fresh process (peak RSS is its
   own) against a fresh fake. Target: wall time <= 1.10x the plain pipeline, no errors.

The server is the SDK's ``FakePrismServer``, in another process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from prism_async import GenerationRequest, PollPolicy, PrismClient
from prism_async.ledger import SQLiteLedger

from ._server import ServerProcess

API_KEY = "prism_sk_bench"
PROMPT = "A lighthouse at dusk, waves breaking below"
MODEL = "veo-3.1"
SUBMIT = {"full": (300, 5), "quick": (50, 2)}
"""Submissions per round and rounds, per contender and concurrency."""
RUN = {"full": (1_000, 3), "quick": (100, 1)}
"""Generations per run and rounds (one process per contender and round)."""
SECONDS = (3.0, 9.0)
"""Each generation takes a seeded random number of seconds in this range on the fake: the plain
pipeline's 1,000-generation run then takes about 10 s here."""
VIDEO_BYTES = 0
"""The fake's bare clip (its smallest video, about 4.5 KB)."""
POLICY = PollPolicy(initial_delay=0.5, interval=0.5, max_interval=1.0, timeout=600)
CONCURRENCY = 8
ADDED_MS_TARGET = 2.0
RUN_RATIO_TARGET = 1.10


# -- 1. the submit path ------------------------------------------------------------------------


async def _submit(prism: PrismClient, keys: list[str] | None, n: int, concurrency: int) -> float:
    """``n`` creates, ``concurrency`` at a time (with ``keys``, durable ones); wall seconds."""
    indexes: Iterator[int] = iter(range(n))

    async def worker() -> None:
        for index in indexes:  # shared by the workers
            key = None if keys is None else keys[index]
            await prism.generations.create(prompt=PROMPT, model_name=MODEL, key=key)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _submit_round(
    base_url: str, folder: Path, tag: str, ledger: bool, n: int, concurrency: int
) -> float:
    """One contender's round on a fresh client (and a fresh ledger file), warmed up first."""
    store = SQLiteLedger(folder / f"{tag}.db") if ledger else None
    async with PrismClient(API_KEY, base_url=base_url, ledger=store) as prism:
        warm = [f"{tag}/warm/{i}" for i in range(concurrency)] if ledger else None
        await _submit(prism, warm, concurrency, concurrency)  # connections, database, thread
        keys = [f"{tag}/{i}" for i in range(n)] if ledger else None
        return await _submit(prism, keys, n, concurrency)


def _measure_submits(n: int, rounds: int, folder: Path) -> dict[int, dict[str, list[float]]]:
    """Wall seconds per contender and round, at concurrency 1 and 8.

    Every contender's round gets a fresh fake: its webhook sender scans every generation the
    fake holds on each create, so a fake that kept earlier rounds' generations would slow
    later rounds down.
    """
    walls: dict[int, dict[str, list[float]]] = {}
    for concurrency in (1, CONCURRENCY):
        walls[concurrency] = {"ledger": [], "none": []}
        for round_number in range(rounds):
            order = ["ledger", "none"][:: 1 if round_number % 2 == 0 else -1]
            for contender in order:
                tag = f"c{concurrency}-r{round_number}-{contender}"
                with ServerProcess("fake", 3600.0, 3600.0, 1, VIDEO_BYTES) as server:
                    asyncio.run(server.ready())
                    wall = asyncio.run(
                        _submit_round(
                            server.base_url, folder, tag, contender == "ledger", n, concurrency
                        )
                    )
                walls[concurrency][contender].append(wall)
    return walls


def run_submits(quick: bool = False, *, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Submissions with and without a ledger; ``size`` is ``(per round, rounds)``."""
    n, rounds = size or SUBMIT["quick" if quick else "full"]
    with tempfile.TemporaryDirectory(prefix="prism-ledger-bench-") as tmp:
        walls = _measure_submits(n, rounds, Path(tmp))
    row: dict[str, Any] = {
        "case": "ledger submit path",
        "submissions_per_round": n,
        "rounds": rounds,
    }
    for concurrency, data in walls.items():
        pairs = list(zip(data["ledger"], data["none"], strict=True))
        rate = {c: statistics.median(n / wall for wall in v) for c, v in data.items()}
        row[f"c{concurrency}"] = {
            "posts_per_s_median": {c: round(v, 1) for c, v in rate.items()},
            "ms_added_per_submission_median": round(
                statistics.median((w - o) / n * 1000 for w, o in pairs), 3
            ),
            "rate_ratio_median": round(statistics.median(o / w for w, o in pairs), 3),
            "wall_s": {c: [round(w, 4) for w in v] for c, v in data.items()},
        }
    added = row["c1"]["ms_added_per_submission_median"]
    row["target"] = f"the ledger adds <= {ADDED_MS_TARGET} ms per submission (concurrency 1)"
    row["met"] = added <= ADDED_MS_TARGET
    return row


# -- 2. a whole run, in fresh processes ------------------------------------------------------


async def _with_ledger(prism: PrismClient, n: int, videos: Path) -> tuple[int, list[str]]:
    requests = [GenerationRequest(prompt=PROMPT, model_name=MODEL) for _ in range(n)]
    downloaded, errors = 0, []
    async for result in prism.run(
        requests, run_id="bench", download_to=videos, concurrency=CONCURRENCY
    ):
        if result.state == "downloaded":
            downloaded += len(result.paths)
        else:
            errors.append(f"{result.key}: {result.state} {result.error!r}")
    return downloaded, errors


async def _without_ledger(prism: PrismClient, n: int, videos: Path) -> tuple[int, list[str]]:
    """The same work as ``prism.run`` by hand: 8 creates in flight, wait, download each."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> int:
        async with slots:
            batch = await prism.generations.create(prompt=PROMPT, model_name=MODEL)
        finished = await prism.wait_for_generations(batch.ids)
        for generation in finished:
            await prism.generations.download(generation, videos)
        return len(finished)

    outcomes = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    downloaded = sum(o for o in outcomes if isinstance(o, int))
    return downloaded, [repr(o) for o in outcomes if isinstance(o, BaseException)]


async def _run_here(contender: str, base_url: str, n: int, folder: Path) -> dict[str, Any]:
    videos = folder / "videos"
    videos.mkdir()
    store = SQLiteLedger(folder / "ledger.db") if contender == "ledger" else None
    async with PrismClient(API_KEY, base_url=base_url, ledger=store, poll=POLICY) as prism:
        rss_before = _rss()
        cpu = time.process_time()
        started = time.perf_counter()
        if contender == "ledger":
            downloaded, errors = await _with_ledger(prism, n, videos)
        else:
            downloaded, errors = await _without_ledger(prism, n, videos)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
    files = [p for p in videos.iterdir() if p.suffix == ".mp4"]
    return {
        "contender": contender,
        "generations": n,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "downloaded": downloaded,
        "files": len(files),
        "video_bytes": files[0].stat().st_size if files else 0,
        "errors": max(len(errors), n - len(files)),  # every generation must end as a file
        "first_errors": errors[:3],
    }


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


RunHere = Callable[[str, str, int, Path], Coroutine[Any, Any, dict[str, Any]]]
"""One contender's run in this process: ``(contender, base_url, n, folder)`` -> its row."""


def run_in_folder(run_here: RunHere, contender: str, base_url: str, n: int) -> dict[str, Any]:
    """One contender's run in this (fresh) process, in a temporary folder of its own."""
    folder = Path(tempfile.mkdtemp(prefix="prism-bench-run-"))
    try:
        return asyncio.run(run_here(contender, base_url, n, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_one(contender: str, base_url: str, n: int) -> dict[str, Any]:
    """One contender's run in this (fresh) process."""
    return run_in_folder(_run_here, contender, base_url, n)


def spawn(
    module: str, contender: str, n: int, seed: int, seconds: tuple[float, float]
) -> dict[str, Any]:
    """``python -m <module> --one <contender>`` in a fresh process, against a fresh fake (same
    seed: same durations); the JSON row it prints last."""
    with ServerProcess("fake", *seconds, seed, VIDEO_BYTES) as server:
        asyncio.run(server.ready())
        command = [sys.executable, "-m", module, "--one", contender,
                   "--base-url", server.base_url, "--n", str(n)]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def _spawn(contender: str, n: int, seed: int, seconds: tuple[float, float]) -> dict[str, Any]:
    return spawn("benchmarks.ledger", contender, n, seed, seconds)


def run_runs(
    quick: bool = False,
    *,
    size: tuple[int, int] | None = None,
    seconds: tuple[float, float] = SECONDS,
    seed: int = 1,
) -> dict[str, Any]:
    """``prism.run`` against the plain pipeline; ``size`` is ``(generations, rounds)``.

    The target is judged at 1,000 generations only: a smaller run is over before the cost of
    submitting shows the same way (and ``seconds``, for smoke tests, changes the run's length).
    """
    n, rounds = size or RUN["quick" if quick else "full"]
    samples: dict[str, list[dict[str, Any]]] = {"ledger": [], "none": []}
    for round_number in range(rounds):
        order = ["ledger", "none"][:: 1 if round_number % 2 == 0 else -1]
        for contender in order:
            samples[contender].append(_spawn(contender, n, seed + round_number, seconds))
    pairs = list(zip(samples["ledger"], samples["none"], strict=True))
    wall = {c: statistics.median(s["wall_s"] for s in v) for c, v in samples.items()}
    cpu = {c: statistics.median(s["cpu_s"] for s in v) for c, v in samples.items()}
    peak = {c: statistics.median(s["peak_rss_mb"] for s in v) for c, v in samples.items()}
    ratio = statistics.median(w["wall_s"] / o["wall_s"] for w, o in pairs)
    errors = {c: sum(s["errors"] for s in v) for c, v in samples.items()}
    return {
        "case": "ledger run",
        "generations": n,
        "rounds": rounds,
        "generation_seconds": list(seconds),
        "video_bytes": samples["ledger"][0]["video_bytes"],
        "wall_s_median": {c: round(v, 2) for c, v in wall.items()},
        "cpu_s_median": {c: round(v, 2) for c, v in cpu.items()},
        "peak_rss_mb_median": {c: round(v, 1) for c, v in peak.items()},
        "wall_ratio_median": round(ratio, 3),
        "errors": errors,
        "samples": samples,
        "target": f"prism.run wall time <= {RUN_RATIO_TARGET}x the plain pipeline, no errors",
        "met": ratio <= RUN_RATIO_TARGET and not any(errors.values()),
        "judged": n >= RUN["full"][0] and seconds == SECONDS,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Both parts: the submit path, then whole runs."""
    return [run_submits(quick), run_runs(quick)]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--one", choices=["ledger", "none"], help="one run here (internal)")
    parser.add_argument("--base-url", help="the fake's API root (with --one)")
    parser.add_argument("--n", type=int, default=RUN["full"][0], help="generations (with --one)")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.base_url, args.n)))
        return
    for row in run(args.quick):
        print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
